import { existsSync, readFileSync } from 'node:fs';
import { type RecipeLock } from '../recipe/lock.js';
import { canonicalJson } from '../hash.js';
import type { PostRecipe, SourceConfig } from '../recipe/schema.js';
import { DataError } from '../errors.js';
import { fitExample, sftExample } from './chat.js';
import { pairExample } from './pairs.js';
import { isHeldOut } from './prepare.js';
import { promptExample } from './prompts.js';
import { pythonJson, renderToolCalls, Tokenizer } from '../tokenizer/index.js';
import { validateMessages, validateTools } from './messages.js';
import { readSource, type Doc, type Rejection } from './sources.js';

// Rows for the post-training stages (SFT chats, DPO pairs, RL prompts): read from the locked files,
// converted by a stage-specific function, deduplicated, and split into train / held-out by content hash.
// A malformed row stops the run with file:line (onError: fail) or is skipped and counted (skip).

/** A converted row, located by file and line. */
export interface Located<T> {
  value: T;
  file: string;
  line: number;
  row: Record<string, unknown>;
}

/** What reading a stage's rows gave. */
export interface PostRows<T> {
  train: Located<T>[];
  val: Located<T>[];
  rejected: number;
  /** The first rejections (file, line, reason). */
  rejections: Rejection[];
  duplicates: number;
}

const MAX_KEPT_REJECTIONS = 1000;

/** The reader settings a post-training source implies (rows, not text). */
function sourceConfig(src: PostRecipe['data']['sources'][number]): SourceConfig {
  return { name: src.name, path: src.path, format: src.format, field: 'text', split: 'line', weight: 1 };
}

/**
 * Reads every row of a post-training lock's data. `convert` returns the stage's value, or a
 * reason string for a malformed row (it may throw a DataError itself).
 */
export async function readPostRows<T>(
  lock: RecipeLock,
  convert: (doc: Doc) => T | string,
  opts: { onReject?: (r: Rejection) => void } = {},
): Promise<PostRows<T>> {
  const r = lock.recipe;
  if (r.stage === 'pretrain') throw new Error('readPostRows reads post-training rows');
  const out: PostRows<T> = { train: [], val: [], rejected: 0, rejections: [], duplicates: 0 };
  const reject = (rej: Rejection) => {
    out.rejected++;
    if (out.rejections.length < MAX_KEPT_REJECTIONS) out.rejections.push(rej);
    opts.onReject?.(rej);
  };
  const seen = new Set<string>();
  for (const [i, src] of r.data.sources.entries()) {
    const name = lock.data[i]!.source;
    const files = lock.data[i]!.files.map((f) => f.path);
    for await (const doc of readSource(sourceConfig(src), files, {
      source: name,
      onError: r.data.onError,
      onReject: reject,
      requireText: false,
    })) {
      const row = doc.row ?? { text: doc.text };
      const value = convert(doc);
      if (typeof value === 'string') {
        if (r.data.onError === 'fail') throw new DataError(doc.file, doc.line, value);
        reject({ source: name, file: doc.file, line: doc.line, reason: value });
        continue;
      }
      const key = canonicalJson(row);
      if (r.data.dedupe) {
        if (seen.has(key)) {
          out.duplicates++;
          continue;
        }
        seen.add(key);
      }
      const item = { value, file: doc.file, line: doc.line, row };
      (isHeldOut(key, r.data.valFraction, r.seed) ? out.val : out.train).push(item);
    }
  }
  return out;
}

/** The manifest a post-training stage writes to data/rows.json (pre-training's data/prepared.json is a PreparedData). */
export interface PostManifest {
  stage: string;
  lock: string;
  examples: { train: number; val: number };
  rejected: number;
  rejections: Rejection[];
  duplicates: number;
  /** Examples cut to fit the context. */
  truncated: number;
  tokens: { train: number; val: number };
  vocabSize: number;
  /** Source files made by `lathe data synth` (a synthetic lock beside them). */
  synthetic?: SyntheticSource[];
}

/** A synthetic source file, as its lock (`<file>.lock.json`, written by `lathe data synth`) describes it. */
export interface SyntheticSource {
  file: string;
  teacher: string;
  generated: number;
  kept: number;
  grader?: string;
}

/** The source files of a lock that `lathe data synth` made: those with a synthetic lock beside them. */
export function syntheticSources(lock: RecipeLock): SyntheticSource[] {
  const out: SyntheticSource[] = [];
  for (const d of lock.data)
    for (const f of d.files) {
      const side = `${f.path}.lock.json`;
      if (!existsSync(side)) continue;
      try {
        const l = JSON.parse(readFileSync(side, 'utf8')) as {
          kind?: string;
          teacher?: { path?: string };
          counts?: { generated?: number; kept?: number };
          grader?: { path?: string };
        };
        if (l.kind !== 'synthetic') continue;
        out.push({
          file: f.path,
          teacher: l.teacher?.path ?? '?',
          generated: l.counts?.generated ?? 0,
          kept: l.counts?.kept ?? 0,
          ...(l.grader?.path ? { grader: l.grader.path } : {}),
        });
      } catch {
        // An unreadable side file is not a synthetic lock; the source is reported as plain data.
      }
    }
  return out;
}

/**
 * Every string a post-training row carries (message contents, prompt, chosen, rejected, completion, text), and tool
 * calls, tool results and tool definitions as the chat template writes them.
 */
function* rowStrings(v: unknown): Generator<string> {
  if (typeof v === 'string') yield v;
  else if (Array.isArray(v)) for (const x of v) yield* rowStrings(x);
  else if (v && typeof v === 'object') {
    const o = v as Record<string, unknown>;
    if (typeof o.content === 'string') yield o.role === 'tool' ? `<|tool|><tool_result>${o.content}` : o.content;
    if (o.tool_calls !== undefined) {
      const calls = validateMessages([{ role: 'assistant', content: '', tool_calls: o.tool_calls }]);
      if (typeof calls !== 'string') yield renderToolCalls(calls[0]!.tool_calls);
    }
    const tools = validateTools(o.tools);
    if (tools && typeof tools !== 'string') yield pythonJson(tools);
    for (const k of ['messages', 'prompt', 'chosen', 'rejected', 'completion', 'text'])
      if (o[k] !== undefined) yield* rowStrings(o[k]);
  }
}

/** Trains a tokenizer on a post-training lock's rows (a stage that starts from a fresh model). */
export async function trainPostTokenizer(lock: RecipeLock): Promise<Tokenizer> {
  const r = lock.recipe;
  if (r.stage === 'pretrain') throw new Error('trainPostTokenizer reads post-training rows');
  async function* texts(): AsyncGenerator<string> {
    let used = 0;
    for (const [i, src] of (r as PostRecipe).data.sources.entries()) {
      const files = lock.data[i]!.files.map((f) => f.path);
      for await (const doc of readSource(sourceConfig(src), files, {
        source: lock.data[i]!.source,
        onError: 'skip',
        requireText: false,
      })) {
        for (const s of rowStrings(doc.row ?? doc.text)) {
          if (used >= r.tokenizer.maxBytes) return;
          used += s.length;
          yield s;
        }
      }
    }
  }
  return Tokenizer.train(texts(), { vocabSize: r.tokenizer.vocabSize, minFrequency: r.tokenizer.minFrequency });
}

/** `lathe data inspect` for a post-training stage: rows kept, held out, rejected (file:line), duplicates, cut. */
export async function inspectPost(lock: RecipeLock, tokenizer: Tokenizer): Promise<Omit<PostManifest, 'lock'>> {
  const r = lock.recipe as PostRecipe;
  const ctxLen = r.model.context;
  const convert = (doc: Doc): { tokens: number; truncated: boolean } | string => {
    if (r.stage === 'sft') {
      const ex = sftExample(doc, tokenizer, r.train.assistantOnly);
      if (typeof ex === 'string') return ex;
      const f = fitExample(ex, ctxLen + 1);
      return { tokens: f.ex.ids.length, truncated: f.truncated };
    }
    if (r.stage === 'dpo') {
      const p = pairExample(doc, tokenizer, ctxLen);
      return typeof p === 'string'
        ? p
        : { tokens: 2 * p.prompt.length + p.chosen.length + p.rejected.length, truncated: p.truncated };
    }
    const p = promptExample(doc, tokenizer, { context: ctxLen, maxNewTokens: r.train.maxNewTokens });
    return typeof p === 'string' ? p : { tokens: p.ids.length, truncated: false };
  };
  const rows = await readPostRows({ ...lock, recipe: { ...r, data: { ...r.data, onError: 'skip' } } }, convert);
  const sum = (xs: Located<{ tokens: number }>[]) => xs.reduce((a, x) => a + x.value.tokens, 0);
  const synthetic = syntheticSources(lock);
  return {
    stage: r.stage,
    examples: { train: rows.train.length, val: rows.val.length },
    rejected: rows.rejected,
    rejections: rows.rejections,
    duplicates: rows.duplicates,
    truncated: [...rows.train, ...rows.val].filter((x) => x.value.truncated).length,
    tokens: { train: sum(rows.train), val: sum(rows.val) },
    vocabSize: tokenizer.vocabSize,
    ...(synthetic.length ? { synthetic } : {}),
  };
}

/** The post-training report as text. */
export function formatPostInspect(rep: Omit<PostManifest, 'lock'>): string {
  const lines = [
    `${rep.stage}: ${rep.examples.train} training rows (${rep.tokens.train} tokens), ${rep.examples.val} held out (${rep.tokens.val} tokens); tokenizer ${rep.vocabSize} tokens`,
    `duplicates removed: ${rep.duplicates}; cut to fit the context: ${rep.truncated}`,
    `rejected rows: ${rep.rejected}`,
    ...rep.rejections.map((x) => `  ${x.file}:${x.line}: ${x.reason}`),
  ];
  if (rep.rejected > rep.rejections.length) lines.push(`  … and ${rep.rejected - rep.rejections.length} more`);
  for (const x of rep.synthetic ?? [])
    lines.push(
      `synthetic source: ${x.file} (teacher ${x.teacher}${x.grader ? `, grader ${x.grader}` : ''}; ${x.kept} of ${x.generated} generated kept)`,
    );
  return lines.join('\n');
}
