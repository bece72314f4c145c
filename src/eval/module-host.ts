import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { extname, isAbsolute, join, relative, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { LatheError } from '../errors.js';

// One host for user modules: rewards, scorers and graders. A module runs in its own Node process,
// never in the trainer: loading, every call and its memory have limits, and a module that throws,
// returns something unusable, hangs, loops forever or kills its process costs that call (counted
// by kind), never the run. A worker confines the modules of its jobs (confineModules): their process
// runs under Node's permission model, reads only the module, the data root and the job folder,
// starts no child process or worker thread, and has no network unless the recipe and the worker
// both allow it.

/** Why a call gave no usable value. */
export type CallErrorKind = 'threw' | 'timeout' | 'crashed';

/** What one call returned, or why it failed (the value is checked by the caller). */
export type CallOutcome = { value: unknown } | { error: CallErrorKind; message: string };

/** Options of {@link ModuleHost.open}. */
export interface ModuleHostOptions {
  /** The module file, absolute (.js, .mjs, .cjs, or TypeScript .ts/.mts/.cts, compiled on load). */
  path: string;
  /** The export to call. */
  export: string;
  /** Starts every error about the module: the recipe field and path (`reward.module: /p/r.mjs`), or `scorer module r.mjs:`. */
  label: string;
  /** Limit of each call, in ms. */
  callTimeoutMs: number;
  /** Limit of loading the module (its top level), in ms. Default 30 s. */
  loadTimeoutMs?: number;
  /** Memory limit of the module's process (V8 heap and resident set), in MB. Default 1024. */
  memoryMb?: number;
  /** Folders the module may read when confined (the job folder); the module itself is always readable. */
  readable?: string[];
  /** The recipe allows network access (granted only where the worker allows it too). */
  network?: boolean;
}

/** How a worker confines user modules (LATHE_MODULE_CONFINE may hold this as JSON for a whole process). */
export interface ModuleConfinement {
  /** Folders every module may read (the data root). */
  read: string[];
  /** The worker allows network access to modules whose recipe asks for it. */
  network: boolean;
}

const confined: { root: string; c: ModuleConfinement }[] = [];

/**
 * Confines every module whose file or readable folders lie under `root` (a worker's state folder);
 * returns a function that lifts it.
 */
export function confineModules(root: string, c: ModuleConfinement): () => void {
  const entry = { root: resolve(root), c };
  confined.push(entry);
  return () => {
    const i = confined.indexOf(entry);
    if (i >= 0) confined.splice(i, 1);
  };
}

/** The confinement of a module at these paths: the process-wide LATHE_MODULE_CONFINE, or a worker's. */
export function moduleConfinement(paths: readonly string[] = []): ModuleConfinement | undefined {
  const raw = process.env.LATHE_MODULE_CONFINE;
  if (raw) {
    try {
      const c = JSON.parse(raw) as Partial<ModuleConfinement>;
      return { read: Array.isArray(c.read) ? c.read.map(String) : [], network: c.network === true };
    } catch {
      throw new LatheError(`LATHE_MODULE_CONFINE: not JSON: ${raw.slice(0, 80)}`);
    }
  }
  const under = (p: string, root: string) => {
    const r = relative(root, resolve(p));
    return r === '' || (!r.startsWith('..') && !isAbsolute(r));
  };
  return confined.find(({ root }) => paths.some((p) => under(p, root)))?.c;
}

const TS_EXT = new Set(['.ts', '.mts', '.cts', '.tsx']);

// The host process: imports the module, answers {id, args} with {id, value} or {id, error}. Run
// with --input-type=module --eval, so no host file has to be readable under the permission model.
const HOST_SOURCE = `
const { url, exportName, file } = JSON.parse(process.env.LATHE_HOST);
delete process.env.LATHE_HOST;
const describe = (e) => {
  if (e instanceof Error) {
    const at = (e.stack || '').split('\\n').find((l) => /^\\s*at /.test(l) && l.includes(file));
    const loc = at ? at.trim().replace(/^at\\s+/, '').replace(/^.*\\((.*)\\)$/, '$1').replace(/^file:\\/\\//, '') : undefined;
    return e.name + ': ' + e.message + (loc ? ' (at ' + loc + ')' : '');
  }
  return typeof e === 'string' ? JSON.stringify(e) : String(e);
};
let fn;
let failed;
try {
  const mod = await import(url);
  const keys = Object.keys(mod).filter((k) => k !== '__esModule');
  fn = mod[exportName];
  if (fn === undefined && exportName === 'default' && keys.length === 1) fn = mod[keys[0]];
  if (typeof fn !== 'function' && fn && typeof fn.default === 'function') fn = fn.default;
  if (typeof fn !== 'function')
    failed = fn === undefined ? 'has no function export "' + exportName + '" (exports: ' + (keys.join(', ') || 'none') + ')' : 'export "' + exportName + '" is a ' + typeof fn + ', not a function';
} catch (e) {
  failed = 'cannot be imported: ' + describe(e);
}
if (!failed) process.on('message', async (m) => {
  try {
    process.send({ id: m.id, value: await fn(...m.args) });
  } catch (e) {
    process.send({ id: m.id, error: describe(e) });
  }
});
// On failure the parent reads the reason and kills this process.
process.send({ type: 'loaded', error: failed });
`;

interface Reply {
  type?: 'loaded';
  id?: number;
  value?: unknown;
  error?: string;
}

/** A user module in its own process: open it, call it (one call at a time), close it. */
export class ModuleHost {
  private child?: ChildProcess;
  private starting?: Promise<void>;
  private pending?: { id: number; done: (o: CallOutcome) => void };
  private nextId = 1;
  private queue: Promise<unknown> = Promise.resolve();
  private closed = false;
  private scratch?: string;
  private url?: string;
  /** Calls that failed since the host opened, by kind. */
  readonly errors: Record<CallErrorKind, number> = { threw: 0, timeout: 0, crashed: 0 };

  private constructor(private readonly o: ModuleHostOptions) {}

  /** Starts the module's process and waits for it to load; a module that cannot load is a LatheError naming `label`. */
  static async open(o: ModuleHostOptions): Promise<ModuleHost> {
    const host = new ModuleHost(o);
    try {
      await host.start();
    } catch (e) {
      await host.close();
      throw e;
    }
    return host;
  }

  /** The module's label and path, for messages. */
  get label(): string {
    return this.o.label;
  }

  private async compile(): Promise<string> {
    if (this.url) return this.url;
    if (!TS_EXT.has(extname(this.o.path).toLowerCase())) return (this.url = pathToFileURL(this.o.path).href);
    // TypeScript is bundled (with its relative imports) into one ES module, with a source map so
    // errors still name the .ts file and line.
    const { build } = await import('esbuild');
    this.scratch = mkdtempSync(join(tmpdir(), 'lathe-module-'));
    const out = join(this.scratch, 'module.mjs');
    try {
      await build({
        entryPoints: [this.o.path],
        bundle: true,
        platform: 'node',
        format: 'esm',
        target: 'node20',
        sourcemap: 'inline',
        outfile: out,
        logLevel: 'silent',
        // Packages a module bundles may use require(); give them one.
        banner: {
          js: "import { createRequire as __latheRequire } from 'node:module'; const require = __latheRequire(import.meta.url);",
        },
      });
    } catch (e) {
      const first = (e as { errors?: { text: string; location?: { file: string; line: number } }[] }).errors?.[0];
      const where = first?.location ? ` (at ${first.location.file}:${first.location.line})` : '';
      throw new LatheError(`${this.o.label} cannot be compiled: ${first?.text ?? (e as Error).message}${where}`);
    }
    return (this.url = pathToFileURL(out).href);
  }

  private start(): Promise<void> {
    if (this.starting) return this.starting;
    this.starting = this.spawnHost().catch((e) => {
      this.starting = undefined;
      throw e;
    });
    return this.starting;
  }

  private async spawnHost(): Promise<void> {
    const url = await this.compile();
    const memoryMb = this.o.memoryMb ?? 1024;
    const args = [`--max-old-space-size=${memoryMb}`, '--enable-source-maps'];
    const confine = moduleConfinement([this.o.path, ...(this.o.readable ?? [])]);
    let cmd = process.execPath;
    let pre: string[] = [];
    if (confine) {
      const read = [this.o.path, ...(this.scratch ? [this.scratch] : []), ...confine.read, ...(this.o.readable ?? [])];
      args.push('--experimental-permission', '--no-warnings', ...read.map((p) => `--allow-fs-read=${p}`));
      // Node 20's permission model does not cover the network: a fresh network namespace does.
      if (!(confine.network && this.o.network) && canUnshareNetwork()) {
        cmd = 'unshare';
        pre = ['--map-root-user', '--net', process.execPath];
      }
    }
    const child = spawn(cmd, [...pre, ...args, '--input-type=module', '--eval', HOST_SOURCE], {
      stdio: ['ignore', 'ignore', 'pipe', 'ipc'],
      serialization: 'advanced',
      env: { ...process.env, LATHE_HOST: JSON.stringify({ url, exportName: this.o.export, file: this.o.path }) },
    });
    this.child = child;
    let stderr = '';
    child.stderr!.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-2000)));
    const loadMs = this.o.loadTimeoutMs ?? 30_000;
    const loaded = await new Promise<string | undefined>((resolve) => {
      const timer = setTimeout(
        () => resolve(`did not load within ${loadMs} ms (an endless loop at its top level?)`),
        loadMs,
      );
      child.once('message', (m: Reply) => {
        clearTimeout(timer);
        resolve(m.error);
      });
      child.once('exit', (code, signal) => {
        clearTimeout(timer);
        resolve(`exited while loading (${signal ?? `code ${code}`})${stderr ? `: ${lastLine(stderr)}` : ''}`);
      });
      child.once('error', (e) => {
        clearTimeout(timer);
        resolve(`cannot start its process: ${e.message}`);
      });
    });
    if (loaded !== undefined) {
      this.kill();
      throw new LatheError(`${this.o.label} ${loaded}`);
    }
    child.on('message', (m: Reply) => {
      if (!this.pending || m.id !== this.pending.id) return;
      if (m.error !== undefined) this.pending.done({ error: 'threw', message: m.error });
      else this.pending.done({ value: m.value });
    });
    child.on('exit', (code, signal) => {
      if (this.child !== child) return;
      this.child = undefined;
      this.starting = undefined;
      this.pending?.done({
        error: 'crashed',
        message: `its process died (${signal ?? `exit code ${code}`})${stderr ? `: ${lastLine(stderr)}` : ''}`,
      });
    });
    this.watchMemory(child, memoryMb);
  }

  /** Kills the process when its resident set passes the limit (buffers live outside V8's heap). */
  private watchMemory(child: ChildProcess, memoryMb: number): void {
    const timer = setInterval(() => {
      const rss = residentMb(child.pid);
      if (rss !== undefined && rss > memoryMb * 1.5 + 64) child.kill('SIGKILL');
    }, 250);
    timer.unref();
    child.once('exit', () => clearInterval(timer));
  }

  /** Calls the export with these arguments (structured-cloned); never throws for faults in user code. */
  call(...args: unknown[]): Promise<CallOutcome> {
    if (this.closed) return Promise.reject(new Error(`${this.o.label} is closed`));
    const run = this.queue.then(() => this.callNow(args));
    this.queue = run.catch(() => {});
    return run;
  }

  private async callNow(args: unknown[]): Promise<CallOutcome> {
    try {
      await this.start();
    } catch (e) {
      // A module that loaded once but cannot load again (changed on disk, or a crash while loading).
      this.errors.crashed++;
      return { error: 'crashed', message: (e as Error).message };
    }
    const child = this.child!;
    const id = this.nextId++;
    const outcome = await new Promise<CallOutcome>((resolve) => {
      const timer = setTimeout(() => {
        this.pending = undefined;
        this.kill();
        resolve({ error: 'timeout', message: `timed out after ${this.o.callTimeoutMs} ms` });
      }, this.o.callTimeoutMs);
      this.pending = {
        id,
        done: (o) => {
          clearTimeout(timer);
          this.pending = undefined;
          resolve(o);
        },
      };
      try {
        child.send({ id, args });
      } catch (e) {
        this.pending.done({ error: 'threw', message: `cannot pass the arguments: ${(e as Error).message}` });
      }
    });
    if ('error' in outcome) this.errors[outcome.error]++;
    return outcome;
  }

  /** Stops the process until the next call, which starts it again (between training evals). */
  release(): void {
    this.kill();
  }

  private kill(): void {
    const c = this.child;
    this.child = undefined;
    this.starting = undefined;
    c?.kill('SIGKILL');
  }

  /** Stops the process and removes its compiled module. */
  async close(): Promise<void> {
    this.closed = true;
    this.kill();
    if (this.scratch) rmSync(this.scratch, { recursive: true, force: true });
  }
}

function lastLine(text: string): string {
  return text.trim().split('\n').at(-1) ?? '';
}

function residentMb(pid: number | undefined): number | undefined {
  if (!pid) return undefined;
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) / 1024 : undefined;
  } catch {
    return undefined;
  }
}

let unshareWorks: boolean | undefined;
/** Whether `unshare --map-root-user --net` can start a process here (Linux user namespaces): confined modules get no network. */
export function canUnshareNetwork(): boolean {
  unshareWorks ??= spawnSync('unshare', ['--map-root-user', '--net', 'true'], { stdio: 'ignore' }).status === 0;
  return unshareWorks;
}
