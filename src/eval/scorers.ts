import { existsSync } from 'node:fs';
import { dirname, extname, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { Worker } from 'node:worker_threads';
import { DataError, LatheError } from '../errors.js';
import type { LanguageModel } from '../engine/tfjs/model.js';
import type { Tokenizer } from '../tokenizer/index.js';
import type { TokenBatch } from '../data/batches.js';
import { evaluateLoss } from './loss.js';
import type { ModuleScorerConfig, Tolerance } from '../recipe/eval-schema.js';

// Scorers turn a completion into a number (1 = right, 0 = wrong; custom scorers may give partial
// credit). Built-ins are pure functions; custom modules run in a worker thread so that one that
// throws, returns NaN or hangs costs that example its score (counted), never the run.

/** How scoring one example went: the score, and why it is 0 when the scorer failed. */
export interface ScoreOutcome {
  score: number;
  /** Set when the scorer failed on this example (the score is then 0). */
  error?: 'threw' | 'nan' | 'timeout' | 'invalid';
  message?: string;
}

/** Counts of scorer failures in one suite run. */
export interface ScorerErrors {
  threw: number;
  nan: number;
  timeout: number;
  invalid: number;
}

/** Scores completions of one suite's examples. */
export interface Scorer {
  /** Display name: exact, contains, regex, numeric, or the module path (#export). */
  readonly name: string;
  score(completion: string, example: ScoredExample): Promise<ScoreOutcome>;
  /** Frees the worker of a custom scorer (idempotent); the scorer cannot be used after. */
  close(): Promise<void>;
  /** Stops a custom scorer's worker until the next call, which restarts it (between training evals). */
  release?(): void;
}

/** What a scorer sees of an example: the prompt row and its expected answers, parsed once at load. */
export interface ScoredExample {
  /** 1-based line in the suite file. */
  line: number;
  prompt: string;
  /** The expected value as written (field `expected`, or the suite's `field`). */
  expected?: unknown;
  /** Expected answers as strings (a list means: any of them). */
  answers: string[];
  /** regex: the compiled patterns. */
  patterns?: RegExp[];
  /** numeric: the expected numbers. */
  numbers?: number[];
  /** The whole row, passed to custom scorers. */
  row: Record<string, unknown>;
}

/** exact: 1 when the trimmed completion equals a trimmed expected answer. */
export function exactScore(completion: string, answers: readonly string[]): number {
  const c = completion.trim();
  return answers.some((a) => a.trim() === c) ? 1 : 0;
}

/** contains: 1 when the completion contains an expected answer. */
export function containsScore(completion: string, answers: readonly string[]): number {
  return answers.some((a) => completion.includes(a)) ? 1 : 0;
}

/** regex: 1 when a pattern matches somewhere in the completion (anchor with ^ and $ to match all of it). */
export function regexScore(completion: string, patterns: readonly RegExp[]): number {
  return patterns.some((p) => {
    p.lastIndex = 0;
    return p.test(completion);
  })
    ? 1
    : 0;
}

const NUMBER_RE = /[-+]?(?:\d[\d,]*\.?\d*|\.\d+)(?:[eE][-+]?\d+)?/;

/** The first number written in a text (thousands commas allowed), or undefined. */
export function firstNumber(text: string): number | undefined {
  const m = NUMBER_RE.exec(text);
  if (!m) return undefined;
  const n = Number(m[0].replace(/,/g, ''));
  return Number.isFinite(n) ? n : undefined;
}

/** True when got is within tolerance of want: a number is absolute; {abs, rel} allows max(abs, rel·|want|). */
export function withinTolerance(got: number, want: number, tol: Tolerance): boolean {
  const allowed = typeof tol === 'number' ? tol : Math.max(tol.abs, tol.rel * Math.abs(want));
  return Math.abs(got - want) <= allowed + Number.EPSILON * Math.max(1, Math.abs(want));
}

/** numeric: 1 when the first number in the completion is within tolerance of an expected number. */
export function numericScore(completion: string, numbers: readonly number[], tol: Tolerance): number {
  const got = firstNumber(completion);
  if (got === undefined) return 0;
  return numbers.some((n) => withinTolerance(got, n, tol)) ? 1 : 0;
}

/** Expected answers as strings: a string, a number, or a list of them (any may match). */
export function expectedAnswers(value: unknown, file: string, line: number, field: string): string[] {
  const list = Array.isArray(value) ? value : [value];
  if (!list.length) throw new DataError(file, line, `"${field}" is an empty list; give at least one expected answer`);
  return list.map((v) => {
    if (typeof v === 'string') return v;
    if (typeof v === 'number' || typeof v === 'boolean') return String(v);
    throw new DataError(
      file,
      line,
      `"${field}" must be a string, a number or a list of them, got ${JSON.stringify(v)}`,
    );
  });
}

/** Compiles a regex answer: `pattern` or `/pattern/flags`; an invalid one is a DataError naming file:line. */
export function compilePattern(source: string, file: string, line: number): RegExp {
  const lit = /^\/([\s\S]*)\/([dgimsuvy]*)$/.exec(source);
  try {
    return lit ? new RegExp(lit[1]!, lit[2]!.replace(/[gy]/g, '')) : new RegExp(source);
  } catch (e) {
    throw new DataError(
      file,
      line,
      `invalid regex ${JSON.stringify(source)}: ${(e as Error).message.replace(/^Invalid regular expression: /, '')}`,
    );
  }
}

/** Parses numeric answers; a non-number is a DataError naming file:line. */
export function expectedNumbers(answers: readonly string[], file: string, line: number, field: string): number[] {
  return answers.map((a) => {
    const n = a.trim() === '' ? NaN : Number(a.trim().replace(/,/g, ''));
    if (!Number.isFinite(n))
      throw new DataError(file, line, `"${field}" must be a number for the numeric scorer, got ${JSON.stringify(a)}`);
    return n;
  });
}

/** A built-in scorer by name (perplexity suites score no completions). */
export function builtinScorer(name: 'exact' | 'contains' | 'regex' | 'numeric', tolerance: Tolerance = 1e-6): Scorer {
  const fn: (c: string, ex: ScoredExample) => number =
    name === 'exact'
      ? (c, ex) => exactScore(c, ex.answers)
      : name === 'contains'
        ? (c, ex) => containsScore(c, ex.answers)
        : name === 'regex'
          ? (c, ex) => regexScore(c, ex.patterns ?? [])
          : (c, ex) => numericScore(c, ex.numbers ?? [], tolerance);
  return { name, score: async (c, ex) => ({ score: fn(c, ex) }), close: async () => {} };
}

/** Turns what a custom scorer returned into an outcome: booleans are 1/0; NaN, ±Infinity and non-numbers score 0, counted. */
export function outcomeOf(v: unknown): ScoreOutcome {
  if (typeof v === 'boolean') return { score: v ? 1 : 0 };
  if (typeof v === 'number')
    return Number.isFinite(v) ? { score: v } : { score: 0, error: 'nan', message: `returned ${v}` };
  return {
    score: 0,
    error: 'invalid',
    message: `returned ${v === null ? 'null' : typeof v}; return a number or a boolean`,
  };
}

/** Resolves a scorer module path: relative to baseDir (the recipe's folder), else to the suite file's folder. */
export function resolveModulePath(module: string, baseDir: string, suiteFile?: string): string {
  const candidates = [resolve(baseDir, module), ...(suiteFile ? [resolve(dirname(suiteFile), module)] : [])];
  const found = candidates.find((p) => existsSync(p));
  if (!found)
    throw new LatheError(`scorer module ${module}: not found (looked at ${[...new Set(candidates)].join(', ')})`);
  return found;
}

const TS_EXT = new Set(['.ts', '.mts', '.cts', '.tsx']);

// Runs in a worker: imports the module once, then answers {id, completion, example}. Only dynamic
// import, so it runs whether Node evaluates it as CommonJS or (under --input-type=module) as ESM.
const WORKER_SOURCE = `
const describe = (e) => (e && typeof e === 'object' && 'message' in e ? String(e.message) : String(e));
(async () => {
  const { parentPort, workerData } = await import('node:worker_threads');
  let fn;
  try {
    const mod = await import(workerData.url);
    fn = mod[workerData.exportName];
    if (typeof fn !== 'function') {
      parentPort.postMessage({ type: 'ready', error: 'has no function export "' + workerData.exportName + '" (exports: ' + (Object.keys(mod).join(', ') || 'none') + ')' });
      return;
    }
  } catch (e) {
    parentPort.postMessage({ type: 'ready', error: 'cannot be imported: ' + describe(e), code: e && e.code });
    return;
  }
  parentPort.postMessage({ type: 'ready' });
  parentPort.on('message', async (m) => {
    try {
      const v = await fn(m.completion, m.example);
      parentPort.postMessage(typeof v === 'number' || typeof v === 'boolean' ? { id: m.id, value: v } : { id: m.id, kind: v === null ? 'null' : typeof v });
    } catch (e) {
      parentPort.postMessage({ id: m.id, error: describe(e) });
    }
  });
})();
`;

interface WorkerReply {
  id?: number;
  type?: 'ready';
  value?: number | boolean;
  kind?: string;
  error?: string;
  code?: string;
}

/**
 * A custom scorer in a worker thread: a call past `timeoutMs` (even a synchronous infinite loop)
 * is cut off by terminating the worker, which restarts for the next example.
 */
class WorkerScorer implements Scorer {
  readonly name: string;
  private worker?: Worker;
  private ready?: Promise<void>;
  private pending?: { id: number; done: (r: WorkerReply) => void };
  private nextId = 0;
  private closed = false;

  constructor(
    private readonly path: string,
    private readonly exportName: string,
    private readonly timeoutMs: number,
    label: string,
  ) {
    this.name = label;
  }

  /** Starts the worker and waits for the module to load; a module that cannot load is a LatheError. */
  start(): Promise<void> {
    if (this.ready) return this.ready;
    const w = new Worker(WORKER_SOURCE, {
      eval: true,
      workerData: { url: pathToFileURL(this.path).href, exportName: this.exportName },
    });
    w.unref();
    this.worker = w;
    this.ready = new Promise<void>((res, rej) => {
      let loaded = false;
      w.on('message', (r: WorkerReply) => {
        if (r.type === 'ready') {
          loaded = true;
          if (r.error) {
            this.stop();
            rej(
              new LatheError(
                `scorer module ${this.name}: ${r.error}${r.code === 'ERR_UNKNOWN_FILE_EXTENSION' ? '; use a .js/.mjs module' : ''}`,
              ),
            );
          } else res();
          return;
        }
        if (this.pending && r.id === this.pending.id) this.pending.done(r);
      });
      w.on('error', (e) => {
        // An uncaught error inside the worker (e.g. a stray rejected promise) ends it.
        if (!loaded) rej(new LatheError(`scorer module ${this.name}: failed to load: ${e.message}`));
        this.pending?.done({ id: this.pending.id, error: `worker crashed: ${e.message}` });
        this.stop();
      });
      w.on('exit', () => {
        if (!loaded) rej(new LatheError(`scorer module ${this.name}: worker exited while loading`));
        this.pending?.done({ id: this.pending.id, error: 'worker exited' });
        if (this.worker === w) this.stop();
      });
    });
    return this.ready;
  }

  private stop(): void {
    const w = this.worker;
    this.worker = undefined;
    this.ready = undefined;
    void w?.terminate();
  }

  async score(completion: string, example: ScoredExample): Promise<ScoreOutcome> {
    if (this.closed) throw new Error(`scorer ${this.name} is closed`);
    await this.start();
    const id = this.nextId++;
    const worker = this.worker!;
    const reply = await new Promise<WorkerReply | 'timeout'>((res) => {
      const timer = setTimeout(() => {
        this.pending = undefined;
        this.stop();
        res('timeout');
      }, this.timeoutMs);
      this.pending = {
        id,
        done: (r) => {
          clearTimeout(timer);
          this.pending = undefined;
          res(r);
        },
      };
      worker.postMessage({ id, completion, example: example.row });
    });
    if (reply === 'timeout') return { score: 0, error: 'timeout', message: `no answer within ${this.timeoutMs} ms` };
    if (reply.error !== undefined) return { score: 0, error: 'threw', message: reply.error };
    if (reply.value === undefined)
      return { score: 0, error: 'invalid', message: `returned ${reply.kind}; return a number or a boolean` };
    return outcomeOf(reply.value);
  }

  release(): void {
    this.stop();
  }

  async close(): Promise<void> {
    this.closed = true;
    this.stop();
  }
}

/**
 * A custom scorer imported into this process (TypeScript modules, which a worker cannot load
 * without a loader). A hung promise is cut off at the timeout; a synchronous infinite loop is not.
 */
class InlineScorer implements Scorer {
  constructor(
    readonly name: string,
    private readonly fn: (completion: string, example: Record<string, unknown>) => unknown,
    private readonly timeoutMs: number,
  ) {}

  async score(completion: string, example: ScoredExample): Promise<ScoreOutcome> {
    let timer: NodeJS.Timeout | undefined;
    try {
      const timeout = new Promise<'timeout'>((res) => (timer = setTimeout(() => res('timeout'), this.timeoutMs)));
      const v = await Promise.race([
        Promise.resolve().then(() => this.fn(completion, structuredClone(example.row))),
        timeout,
      ]);
      if (v === 'timeout') return { score: 0, error: 'timeout', message: `no answer within ${this.timeoutMs} ms` };
      return outcomeOf(v);
    } catch (e) {
      return { score: 0, error: 'threw', message: e instanceof Error ? e.message : String(e) };
    } finally {
      clearTimeout(timer);
    }
  }

  async close(): Promise<void> {}
}

async function importTypeScript(path: string): Promise<Record<string, unknown>> {
  // tsx is optional: a project that adds it can load .ts scorers from the built CLI too.
  const tsxApi = 'tsx/esm/api';
  const tsx = (await import(tsxApi).catch(() => undefined)) as
    { tsImport?: (spec: string, parent: string) => Promise<Record<string, unknown>> } | undefined;
  if (tsx?.tsImport) return tsx.tsImport(pathToFileURL(path).href, import.meta.url);
  try {
    // Works where a TS loader is active (vitest, node --import tsx, or a Node that strips types).
    return (await import(pathToFileURL(path).href)) as Record<string, unknown>;
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ERR_UNKNOWN_FILE_EXTENSION')
      throw new LatheError(
        `scorer module ${path}: Node ${process.version} cannot import TypeScript; compile it to .js/.mjs, or install tsx`,
      );
    throw new LatheError(`scorer module ${path}: cannot be imported: ${(e as Error).message}`);
  }
}

/**
 * Loads a custom scorer `{ module, export }`: JS modules run in a worker thread (true timeouts);
 * TS modules run in this process through tsx or an active TS loader.
 */
export async function loadModuleScorer(
  spec: ModuleScorerConfig,
  opts: { baseDir: string; suiteFile?: string; timeoutMs?: number },
): Promise<Scorer> {
  const path = resolveModulePath(spec.module, opts.baseDir, opts.suiteFile);
  const exportName = spec.export ?? 'default';
  const label = `${spec.module}${exportName === 'default' ? '' : `#${exportName}`}`;
  const timeoutMs = opts.timeoutMs ?? 5000;
  if (TS_EXT.has(extname(path).toLowerCase())) {
    const mod = await importTypeScript(path);
    const fn = mod[exportName];
    if (typeof fn !== 'function')
      throw new LatheError(
        `scorer module ${label}: has no function export "${exportName}" (exports: ${Object.keys(mod).join(', ') || 'none'})`,
      );
    return new InlineScorer(label, fn as (c: string, e: Record<string, unknown>) => unknown, timeoutMs);
  }
  const s = new WorkerScorer(path, exportName, timeoutMs, label);
  await s.start();
  return s;
}

/** Result of {@link textPerplexity}. */
export interface PerplexityResult {
  /** Mean next-token cross-entropy (nats per token). */
  loss: number;
  perplexity: number;
  /** Tokens predicted. */
  tokens: number;
  windows: number;
}

/**
 * Perplexity of a model on documents: each is wrapped in bos…eos as in training, the stream is cut
 * into windows of the model's context (the tail window shorter), and losses are weighted by tokens.
 */
export async function textPerplexity(
  model: LanguageModel,
  tokenizer: Tokenizer,
  docs: readonly string[],
  opts: { limit?: number; batch?: number } = {},
): Promise<PerplexityResult> {
  const seq = model.spec.context;
  const stream: number[] = [];
  for (const d of docs) stream.push(tokenizer.special.bos, ...tokenizer.encode(d), tokenizer.special.eos);
  const windows: number[][] = [];
  for (let start = 0; start + 1 < stream.length; start += seq) {
    if (opts.limit !== undefined && windows.length >= opts.limit) break;
    windows.push(stream.slice(start, start + seq + 1));
  }
  if (!windows.length) throw new LatheError('perplexity: the text has no tokens to predict');
  const batchSize = opts.batch ?? 8;
  const full = windows.filter((w) => w.length === seq + 1);
  const tail = windows.filter((w) => w.length !== seq + 1);
  const batches: TokenBatch[] = [];
  const pack = (ws: number[][], len: number): TokenBatch => {
    const inputs = new Int32Array(ws.length * len);
    const targets = new Int32Array(ws.length * len);
    ws.forEach((w, r) => {
      for (let t = 0; t < len; t++) {
        inputs[r * len + t] = w[t]!;
        targets[r * len + t] = w[t + 1]!;
      }
    });
    return { inputs, targets, batch: ws.length, seq: len };
  };
  for (let i = 0; i < full.length; i += batchSize) batches.push(pack(full.slice(i, i + batchSize), seq));
  for (const w of tail) batches.push(pack([w], w.length - 1));
  let nll = 0;
  let tokens = 0;
  for (const b of batches) {
    const loss = (await evaluateLoss(model, [b]))!;
    nll += loss * b.batch * b.seq;
    tokens += b.batch * b.seq;
  }
  const loss = nll / tokens;
  return { loss, perplexity: Math.exp(loss), tokens, windows: windows.length };
}
