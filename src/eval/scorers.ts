import { existsSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { DataError, LatheError } from '../errors.js';
import type { Engine } from '../engine/engine.js';
import type { Tokenizer } from '../tokenizer/index.js';
import type { TokenBatch } from '../data/batches.js';
import { evaluateLoss } from './loss.js';
import { ModuleHost, type ModuleHostOptions } from './module-host.js';
import type { GraderScorerConfig, ModuleScorerConfig, Tolerance } from '../recipe/eval-schema.js';
import { ModelGrader } from './grader.js';

// Scorers turn a completion into a number (1 = right, 0 = wrong; custom scorers may give partial
// credit). Built-ins are pure functions; custom modules run in the module host (their own process) so
// that one that throws, returns NaN, hangs or dies costs that example its score (counted), never the run.

/** How scoring one example went: the score, and why it is 0 when the scorer failed. */
export interface ScoreOutcome {
  score: number;
  /** Set when the scorer failed on this example (the score is then 0). */
  error?: 'threw' | 'nan' | 'timeout' | 'invalid' | 'crashed';
  message?: string;
}

/** Counts of scorer failures in one suite run. */
export interface ScorerErrors {
  threw: number;
  nan: number;
  timeout: number;
  invalid: number;
  /** The scorer's process died (it exited, or passed its memory limit). */
  crashed: number;
}

/** Scores completions of one suite's examples. */
export interface Scorer {
  /** Display name: exact, contains, regex, numeric, or the module path (#export). */
  readonly name: string;
  score(completion: string, example: ScoredExample): Promise<ScoreOutcome>;
  /** Frees the process of a custom scorer (idempotent); the scorer cannot be used after. */
  close(): Promise<void>;
  /** Stops a custom scorer's process until the next call, which restarts it (between training evals). */
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

/** A custom scorer in the module host: its own process, a timeout per example, counted failures. */
class ModuleScorer implements Scorer {
  private constructor(
    readonly name: string,
    private readonly host: ModuleHost,
  ) {}

  static async open(name: string, o: Omit<ModuleHostOptions, 'label'>): Promise<ModuleScorer> {
    return new ModuleScorer(name, await ModuleHost.open({ ...o, label: `scorer module ${name}:` }));
  }

  async score(completion: string, example: ScoredExample): Promise<ScoreOutcome> {
    const out = await this.host.call(completion, example.row);
    if ('error' in out) return { score: 0, error: out.error, message: out.message };
    return outcomeOf(out.value);
  }

  release(): void {
    this.host.release();
  }

  close(): Promise<void> {
    return this.host.close();
  }
}

/** Loads a custom scorer `{ module, export }` (JS, or TypeScript compiled on load) in the module host. */
export async function loadModuleScorer(
  spec: ModuleScorerConfig,
  opts: { baseDir: string; suiteFile?: string; timeoutMs?: number },
): Promise<Scorer> {
  const path = resolveModulePath(spec.module, opts.baseDir, opts.suiteFile);
  const exportName = spec.export ?? 'default';
  const label = `${spec.module}${exportName === 'default' ? '' : `#${exportName}`}`;
  return ModuleScorer.open(label, {
    path,
    export: exportName,
    callTimeoutMs: opts.timeoutMs ?? 5000,
    readable: [opts.baseDir, ...(opts.suiteFile ? [dirname(opts.suiteFile)] : [])],
  });
}

/**
 * A model grader as a suite's scorer (`scorer: {grader}`): the judge scores each completion in [0, 1];
 * an answer with no score counts as an `invalid` scorer error and scores 0. The grader file resolves
 * against baseDir (the recipe's folder), else the suite file's folder.
 */
export async function loadGraderScorer(
  spec: GraderScorerConfig,
  opts: { baseDir: string; suiteFile?: string },
): Promise<Scorer & { grader: ModelGrader }> {
  const candidates = [
    resolve(opts.baseDir, spec.grader),
    ...(opts.suiteFile ? [resolve(dirname(opts.suiteFile), spec.grader)] : []),
  ];
  const path = candidates.find((p) => existsSync(p)) ?? candidates[0]!;
  const grader = await ModelGrader.open(path);
  return {
    name: `model ${spec.grader}`,
    grader,
    score: async (completion, example) => {
      const [g] = await grader.grade([{ completion, row: example.row }]);
      return 'error' in g! ? { score: 0, error: 'invalid', message: `${g.error}: ${g.message}` } : { score: g!.score };
    },
    close: () => grader.close(),
  };
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
  engine: Engine,
  tokenizer: Tokenizer,
  docs: readonly string[],
  opts: { limit?: number; batch?: number } = {},
): Promise<PerplexityResult> {
  const seq = engine.spec.context;
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
    const loss = (await evaluateLoss(engine, [b]))!;
    nll += loss * b.batch * b.seq;
    tokens += b.batch * b.seq;
  }
  const loss = nll / tokens;
  return { loss, perplexity: Math.exp(loss), tokens, windows: windows.length };
}
