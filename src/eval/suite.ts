import { createReadStream, existsSync, statSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { DataError, LatheError } from '../errors.js';
import type { Engine } from '../engine/engine.js';
import { sampleToken } from '../engine/sample.js';
import { Rng } from '../random.js';
import type { Tokenizer } from '../tokenizer/index.js';
import type { SuiteConfig } from '../recipe/eval-schema.js';
import {
  builtinScorer,
  compilePattern,
  expectedAnswers,
  expectedNumbers,
  loadGraderScorer,
  loadModuleScorer,
  textPerplexity,
  type ScoredExample,
  type Scorer,
  type ScorerErrors,
} from './scorers.js';

/** A loaded suite: its examples (or documents, for perplexity) and its scorer. Call close() when done. */
export interface Suite {
  config: SuiteConfig;
  /** Absolute path of the suite file. */
  file: string;
  kind: 'generation' | 'perplexity';
  /** Generation suites: the examples, in file order (at most `limit`). */
  examples: ScoredExample[];
  /** Perplexity suites: the documents of the text file. */
  docs: string[];
  /** Generation suites: the scorer. */
  scorer?: Scorer;
  /** Frees the scorer (a custom scorer's worker). */
  close(): Promise<void>;
}

/** One example that did not score 1. */
export interface SuiteFailure {
  line: number;
  prompt: string;
  completion: string;
  expected: unknown;
  score: number;
  /** Why the scorer failed, when it did (threw, nan, timeout, invalid: message). */
  error?: string;
}

/** What a suite run measured. */
export interface SuiteResult {
  name: string;
  kind: 'generation' | 'perplexity';
  /** Scorer name (perplexity for perplexity suites). */
  scorer: string;
  file: string;
  /** Examples scored (perplexity: windows). */
  n: number;
  /** Mean score (generation suites). */
  accuracy?: number;
  /** exp(loss) over the text (perplexity suites). */
  perplexity?: number;
  /** Mean next-token loss over the text (perplexity suites). */
  loss?: number;
  /** Per-example scores, in file order (generation suites). */
  scores: number[];
  /** Scorer failures, counted (each scored 0). */
  errors: ScorerErrors;
  /** Prompts cut from the left to fit the context with room for maxTokens. */
  truncated: number;
  /** The first few examples that did not score 1. */
  failures: SuiteFailure[];
  seconds: number;
  /** Keys for metrics.jsonl: eval/<name>/accuracy, or eval/<name>/perplexity and eval/<name>/loss. */
  metrics: Record<string, number>;
}

/** Reads a text file's documents: each line, blank-line separated paragraphs, or the whole file. */
export function splitDocuments(text: string, split: SuiteConfig['split']): string[] {
  const norm = text.replace(/\r\n?/g, '\n');
  const parts = split === 'file' ? [norm] : split === 'line' ? norm.split('\n') : norm.split(/\n[ \t]*\n/);
  return parts.map((p) => p.trim()).filter(Boolean);
}

/**
 * Loads a suite: streams its JSONL (bad JSON, a missing prompt or expected answer, a bad regex or
 * number are DataErrors naming file:line), or reads its text file for perplexity, and loads the
 * scorer. Relative paths resolve against baseDir (the recipe's folder, or the working directory).
 */
export async function loadSuite(config: SuiteConfig, baseDir: string): Promise<Suite> {
  const file = resolve(baseDir, config.path);
  if (!existsSync(file) || !statSync(file).isFile())
    throw new LatheError(`suite "${config.name}": ${config.path} is not a file (resolved to ${file})`);
  if (config.scorer === 'perplexity') {
    const docs = splitDocuments(await readFile(file, 'utf8'), config.split);
    if (!docs.length) throw new LatheError(`suite "${config.name}": ${file} has no text`);
    return { config, file, kind: 'perplexity', examples: [], docs, close: async () => {} };
  }
  const scorerName = typeof config.scorer === 'string' ? config.scorer : 'grader' in config.scorer ? 'model' : 'custom';
  const needsExpected = scorerName !== 'custom' && scorerName !== 'model';
  const examples: ScoredExample[] = [];
  const rl = createInterface({ input: createReadStream(file, 'utf8'), crlfDelay: Infinity });
  let line = 0;
  try {
    for await (const text of rl) {
      line++;
      if (config.limit !== undefined && examples.length >= config.limit) break;
      if (!text.trim()) continue;
      let row: unknown;
      try {
        row = JSON.parse(text);
      } catch (e) {
        throw new DataError(file, line, `invalid JSON: ${(e as Error).message.split('\n')[0]}`);
      }
      if (!row || typeof row !== 'object' || Array.isArray(row))
        throw new DataError(file, line, 'each line must be a JSON object like {"prompt": "...", "expected": "..."}');
      const r = row as Record<string, unknown>;
      if (typeof r.prompt !== 'string')
        throw new DataError(
          file,
          line,
          r.prompt === undefined
            ? 'missing "prompt" (a string)'
            : `"prompt" must be a string, got ${JSON.stringify(r.prompt)}`,
        );
      const expected = r[config.field];
      if (expected === undefined && needsExpected)
        throw new DataError(file, line, `missing "${config.field}" (the expected answer for the ${scorerName} scorer)`);
      const answers =
        expected === undefined ? [] : needsExpected ? expectedAnswers(expected, file, line, config.field) : [];
      const ex: ScoredExample = { line, prompt: r.prompt, expected, answers, row: r };
      if (scorerName === 'regex') ex.patterns = answers.map((a) => compilePattern(a, file, line));
      if (scorerName === 'numeric') ex.numbers = expectedNumbers(answers, file, line, config.field);
      examples.push(ex);
    }
  } finally {
    rl.close();
  }
  if (!examples.length)
    throw new LatheError(
      `suite "${config.name}": ${file} has no examples; each line is {"prompt": "...", "${config.field}": "..."}`,
    );
  const scorer =
    typeof config.scorer === 'string'
      ? builtinScorer(config.scorer as 'exact' | 'contains' | 'regex' | 'numeric', config.tolerance)
      : 'grader' in config.scorer
        ? await loadGraderScorer(config.scorer, { baseDir, suiteFile: file })
        : await loadModuleScorer(config.scorer, { baseDir, suiteFile: file, timeoutMs: config.timeoutMs });
  return { config, file, kind: 'generation', examples, docs: [], scorer, close: () => scorer.close() };
}

/** Options of {@link complete}. */
export interface CompleteOptions {
  maxTokens: number;
  /** 0 is greedy. */
  temperature?: number;
  seed?: number;
  /** Strings that end the completion; it is cut before the first one. */
  stop?: readonly string[];
}

/** A completion and how it ended. */
export interface Completion {
  text: string;
  ids: number[];
  stopped: 'eos' | 'stop' | 'length';
  /** Prompt tokens dropped from the left to leave room for maxTokens in the context. */
  truncated: number;
}

/**
 * Completes a prompt (bos + its tokens) with a KV cache, stopping at eos or `<|end|>`, maxTokens,
 * the context length, or a stop string. A prompt too long to leave room for maxTokens keeps its
 * last tokens (counted in `truncated`). Otherwise token for token the same as model.generate
 * without stop strings; with them it ends as soon as one appears, instead of running to maxTokens.
 */
export async function complete(
  engine: Engine,
  tokenizer: Tokenizer,
  prompt: string,
  o: CompleteOptions,
): Promise<Completion> {
  const ids = [tokenizer.special.bos, ...tokenizer.encode(prompt)];
  const stopIds = new Set([tokenizer.special.eos, tokenizer.special.end]);
  const sample = { temperature: o.temperature ?? 0 };
  const rng = new Rng(o.seed ?? 0);
  const ctx = engine.spec.context;
  const room = Math.max(1, ctx - o.maxTokens);
  const input = ids.length > room ? ids.slice(-room) : ids;
  const truncated = ids.length - input.length;
  const out: number[] = [];
  const stops = o.stop ?? [];
  const cut = (text: string): number => Math.min(...stops.map((s) => text.indexOf(s)).filter((i) => i >= 0));
  const { logits: first, session } = await engine.decode(input, 1);
  try {
    let logits = first;
    let pos = input.length;
    while (out.length < o.maxTokens && pos < ctx) {
      const next = sampleToken(logits, sample, rng);
      if (stopIds.has(next)) return { text: tokenizer.decode(out), ids: out, stopped: 'eos', truncated };
      out.push(next);
      if (stops.length) {
        const text = tokenizer.decode(out);
        const at = cut(text);
        if (Number.isFinite(at)) return { text: text.slice(0, at), ids: out, stopped: 'stop', truncated };
      }
      if (out.length >= o.maxTokens || pos + 1 >= ctx) break;
      logits = await session.step(Int32Array.of(next));
      pos++;
    }
    return { text: tokenizer.decode(out), ids: out, stopped: 'length', truncated };
  } finally {
    session.close();
  }
}

/** The metric keys of a suite: eval/<name>/<what>. */
export function metricKey(suite: string, what: 'accuracy' | 'perplexity' | 'loss'): string {
  return `eval/${suite}/${what}`;
}

/**
 * Runs a suite on a model: greedy (or seeded) completions scored one by one, or perplexity over
 * the suite's text. Scorer failures score 0 and are counted, never thrown.
 */
export async function runSuite(
  engine: Engine,
  tokenizer: Tokenizer,
  suite: Suite,
  opts: { failures?: number; onExample?: (done: number, total: number) => void } = {},
): Promise<SuiteResult> {
  const t0 = performance.now();
  const c = suite.config;
  const errors: ScorerErrors = { threw: 0, nan: 0, timeout: 0, invalid: 0, crashed: 0 };
  if (suite.kind === 'perplexity') {
    const p = await textPerplexity(engine, tokenizer, suite.docs, { limit: c.limit });
    return {
      name: c.name,
      kind: 'perplexity',
      scorer: 'perplexity',
      file: suite.file,
      n: p.windows,
      perplexity: p.perplexity,
      loss: p.loss,
      scores: [],
      errors,
      truncated: 0,
      failures: [],
      seconds: (performance.now() - t0) / 1000,
      metrics: { [metricKey(c.name, 'perplexity')]: p.perplexity, [metricKey(c.name, 'loss')]: p.loss },
    };
  }
  const scorer = suite.scorer!;
  const maxFailures = opts.failures ?? 5;
  const scores: number[] = [];
  const failures: SuiteFailure[] = [];
  let truncated = 0;
  for (const [i, ex] of suite.examples.entries()) {
    const { text, truncated: cut } = await complete(engine, tokenizer, ex.prompt, {
      maxTokens: c.maxTokens,
      temperature: c.temperature,
      seed: c.seed + i,
      stop: c.stop,
    });
    if (cut) truncated++;
    const out = await scorer.score(text, ex);
    if (out.error) errors[out.error]++;
    scores.push(out.score);
    if (out.score < 1 && failures.length < maxFailures) {
      failures.push({
        line: ex.line,
        prompt: ex.prompt,
        completion: text,
        expected: ex.expected,
        score: out.score,
        ...(out.error ? { error: `${out.error}: ${out.message ?? ''}`.trim() } : {}),
      });
    }
    opts.onExample?.(i + 1, suite.examples.length);
  }
  const accuracy = scores.reduce((a, b) => a + b, 0) / scores.length;
  return {
    name: c.name,
    kind: 'generation',
    scorer: scorer.name,
    file: suite.file,
    n: scores.length,
    accuracy,
    scores,
    errors,
    truncated,
    failures,
    seconds: (performance.now() - t0) / 1000,
    metrics: { [metricKey(c.name, 'accuracy')]: accuracy },
  };
}

/** Total scorer failures of a result. */
export function errorCount(r: Pick<SuiteResult, 'errors'>): number {
  return r.errors.threw + r.errors.nan + r.errors.timeout + r.errors.invalid + (r.errors.crashed ?? 0);
}

/** One line about a result: `tasks: accuracy 0.42 (n=50)` or `corpus: perplexity 7.31`. */
export function describeResult(r: SuiteResult): string {
  const errs = errorCount(r);
  const main =
    r.kind === 'perplexity' ? `perplexity ${r.perplexity!.toFixed(3)}` : `accuracy ${r.accuracy!.toFixed(3)}`;
  return `${r.name}: ${main} (n=${r.n}${errs ? `, ${errs} scorer errors` : ''})`;
}
