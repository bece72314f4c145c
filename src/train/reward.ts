import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { Worker } from 'node:worker_threads';
import { LatheError } from '../errors.js';

// Reward functions are user modules (JS or TS) named by the recipe: `reward: { module, export }`,
// called as (completion, example) => number | Promise<number>. They run in a worker thread, so a
// call that hangs (even a synchronous infinite loop) is cut off at `timeoutMs` by terminating the
// worker, and a crash in user code cannot take the run down. TypeScript modules load through tsx.

/** The outcome of one reward call: a finite number, or why there is none. */
export type RewardOutcome = { value: number } | { error: string };

/** Options of {@link RewardHost.open}. */
export interface RewardHostOptions {
  /** The module file, absolute. */
  path: string;
  /** The export to call. */
  export: string;
  timeoutMs: number;
  /** The recipe field that names the module, for messages (e.g. `reward.module`). */
  where: string;
}

// The worker: loads the module once, then answers {id, completion, example} with {id, value} or {id, error}.
const WORKER_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads');
const { url, exportName, tsx } = workerData;
let fn;
const describe = (e) => {
  if (e instanceof Error) {
    const file = url.replace(/^file:\\/\\//, '');
    const at = (e.stack || '').split('\\n').find((l) => /^\\s*at /.test(l) && l.includes(file));
    const loc = at ? at.trim().replace(/^at\\s+/, '').replace(/^.*\\((.*)\\)$/, '$1').replace(/^file:\\/\\//, '') : undefined;
    return e.name + ': ' + e.message + (loc ? ' (at ' + loc + ')' : '');
  }
  return 'threw ' + (typeof e === 'string' ? JSON.stringify(e) : String(e));
};
(async () => {
  try {
    let mod;
    if (tsx) {
      const api = await import(tsx);
      mod = await api.tsImport(url, url);
    } else mod = await import(url);
    const keys = Object.keys(mod).filter((k) => k !== '__esModule');
    fn = mod[exportName];
    if (fn === undefined && exportName === 'default' && mod.default === undefined && keys.length === 1) fn = mod[keys[0]];
    if (typeof fn !== 'function' && fn && typeof fn.default === 'function') fn = fn.default;
    if (typeof fn !== 'function') {
      parentPort.postMessage({ type: 'loaded', error: fn === undefined ? 'has no export "' + exportName + '" (exports: ' + (keys.join(', ') || 'none') + ')' : 'export "' + exportName + '" is a ' + typeof fn + ', not a function' });
      return;
    }
    parentPort.postMessage({ type: 'loaded' });
  } catch (e) {
    parentPort.postMessage({ type: 'loaded', error: 'cannot be loaded: ' + describe(e) });
    return;
  }
  parentPort.on('message', async (m) => {
    try {
      const v = await fn(m.completion, m.example);
      parentPort.postMessage({ id: m.id, value: v });
    } catch (e) {
      parentPort.postMessage({ id: m.id, error: 'threw ' + describe(e) });
    }
  });
})();
`;

/** tsx's ESM API (its `import` export), which loads TypeScript modules at run time. */
function tsxApi(): string {
  const pkgPath = createRequire(import.meta.url).resolve('tsx/package.json');
  const pkg = JSON.parse(readFileSync(pkgPath, 'utf8')) as { exports: Record<string, { import: { default: string } }> };
  return pathToFileURL(join(dirname(pkgPath), pkg.exports['./esm/api']!.import.default)).href;
}

/** Runs a reward module's function in a worker thread, with a timeout per call. */
export class RewardHost {
  private worker?: Worker;
  private pending = new Map<number, (o: RewardOutcome) => void>();
  private nextId = 1;
  /** Calls that failed (threw, timed out, returned a non-number) since the host opened. */
  errors = 0;
  readonly label: string;

  private constructor(private readonly o: RewardHostOptions) {
    this.label = `${o.where} ${o.path}#${o.export}`;
  }

  /** Loads the module in a worker; throws a LatheError naming the recipe field when it cannot be used. */
  static async open(o: RewardHostOptions): Promise<RewardHost> {
    const host = new RewardHost(o);
    await host.start();
    return host;
  }

  private async start(): Promise<void> {
    const ts = /\.(ts|mts|cts)$/i.test(this.o.path);
    const worker = new Worker(WORKER_SOURCE, {
      eval: true,
      workerData: { url: pathToFileURL(this.o.path).href, exportName: this.o.export, tsx: ts ? tsxApi() : undefined },
      stdout: false,
      stderr: false,
    });
    worker.unref();
    this.worker = worker;
    const loaded = await new Promise<string | undefined>((resolve) => {
      const onExit = (code: number) => resolve(`exited with code ${code} while loading`);
      worker.once('error', (e) => resolve(`cannot be loaded: ${e.message}`));
      worker.once('exit', onExit);
      worker.once('message', (m: { type?: string; error?: string }) => {
        worker.off('exit', onExit);
        resolve(m.error);
      });
    });
    if (loaded !== undefined) {
      await worker.terminate();
      this.worker = undefined;
      throw new LatheError(`${this.o.where}: ${this.o.path} ${loaded}`);
    }
    worker.on('message', (m: { id: number; value?: unknown; error?: string }) => {
      const done = this.pending.get(m.id);
      if (!done) return;
      this.pending.delete(m.id);
      if (m.error !== undefined) done({ error: m.error });
      else if (typeof m.value === 'number' && Number.isFinite(m.value)) done({ value: m.value });
      else
        done({
          error: `returned ${typeof m.value === 'number' ? String(m.value) : m.value === undefined ? 'undefined' : `a ${typeof m.value} (${JSON.stringify(m.value)?.slice(0, 40)})`}, not a finite number`,
        });
    });
    const fail = (why: string) => {
      for (const done of this.pending.values()) done({ error: why });
      this.pending.clear();
      if (this.worker === worker) this.worker = undefined;
    };
    worker.on('error', (e) => fail(`crashed: ${e.message}`));
    worker.on('exit', (code) => fail(`exited with code ${code}`));
  }

  /** Scores one completion; never throws for user-code faults (they come back as `error`). */
  async score(completion: string, example: Record<string, unknown>): Promise<RewardOutcome> {
    if (!this.worker) await this.start();
    const worker = this.worker!;
    const id = this.nextId++;
    let timer: NodeJS.Timeout | undefined;
    const outcome = await new Promise<RewardOutcome>((resolve) => {
      this.pending.set(id, resolve);
      timer = setTimeout(() => {
        this.pending.delete(id);
        resolve({ error: `timed out after ${this.o.timeoutMs} ms (reward.timeoutMs)` });
      }, this.o.timeoutMs);
      try {
        worker.postMessage({ id, completion, example });
      } catch (e) {
        this.pending.delete(id);
        resolve({ error: `cannot pass the example to the reward worker: ${(e as Error).message}` });
      }
    });
    clearTimeout(timer);
    if ('error' in outcome) {
      this.errors++;
      if (
        outcome.error.startsWith('timed out') ||
        outcome.error.startsWith('crashed') ||
        outcome.error.startsWith('exited')
      ) {
        // The worker may be stuck in user code: replace it before the next call.
        if (this.worker === worker) this.worker = undefined;
        await worker.terminate().catch(() => undefined);
      }
    }
    return outcome;
  }

  /** Stops the worker. */
  async close(): Promise<void> {
    const w = this.worker;
    this.worker = undefined;
    await w?.terminate().catch(() => undefined);
  }
}
