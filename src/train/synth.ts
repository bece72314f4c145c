import { createHash } from 'node:crypto';
import { createReadStream, existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { NearDuplicateIndex } from '../data/minhash.js';
import { openModel } from '../engine/open.js';
import { generateBatch } from '../engine/sample.js';
import { ModelGrader } from '../eval/grader.js';
import { LatheError } from '../errors.js';
import { canonicalJson, sha256File } from '../hash.js';
import type { BaseModelRef } from '../recipe/base.js';
import { CleanSchema } from '../recipe/schema.js';
import { writeFileAtomic } from '../runs/atomic.js';

// Synthetic chat data from a teacher: each prompt row becomes a user turn, the teacher answers (seeded
// sampling, batched), a grader may filter the answers by score, and exact repeats and near-duplicates
// of the training data (MinHash with the cleaning defaults, the same code as `clean.dedupe: near`) are
// dropped. A lock beside the output records what made it; the same inputs and seed give the same bytes.

/** Options of {@link synthesize}. */
export interface SynthOptions {
  /** The teacher: a Lathe run directory or an HF folder. */
  teacher: string;
  /** JSONL of prompt rows: {"prompt": "..."} (other fields go to the grader's rubric). */
  prompts: string;
  /** Examples to generate (prompts are used in order, cycling). */
  n: number;
  /** Where to write the chat JSONL; the lock goes to `<out>.lock.json`. */
  out: string;
  /** A grader file; answers scoring below `min` are dropped. */
  grader?: string;
  /** Lowest grader score kept (default 0.5). */
  min?: number;
  /** Training data (JSONL with text or messages) whose near-duplicates are dropped. */
  dedupeAgainst?: string[];
  seed?: number;
  maxTokens?: number;
  temperature?: number;
  topP?: number;
  /** Rows the teacher decodes at once (default 16). */
  batch?: number;
}

/** What {@link synthesize} kept and dropped. */
export interface SynthCounts {
  generated: number;
  kept: number;
  /** Graded below `min`. */
  belowMin: number;
  /** The grader gave no score. */
  ungraded: number;
  /** The same prompt and answer as an earlier example. */
  exactRepeats: number;
  /** A near-duplicate of the training data. */
  nearDuplicates: number;
  /** The teacher answered nothing. */
  empty: number;
}

/** The lock written beside a synthetic file. */
export interface SynthLock {
  kind: 'synthetic';
  out: { path: string; sha256: string };
  teacher: BaseModelRef;
  prompts: { path: string; sha256: string };
  grader?: { path: string; sha256: string; judge: BaseModelRef; min: number };
  dedupeAgainst: { path: string; sha256: string }[];
  seed: number;
  n: number;
  sampling: { maxTokens: number; temperature: number; topP: number };
  counts: SynthCounts;
}

/** Reads prompt rows; errors name file:line and the field. */
async function readPrompts(path: string): Promise<Record<string, unknown>[]> {
  const rows: Record<string, unknown>[] = [];
  const rl = createInterface({ input: createReadStream(path, 'utf8'), crlfDelay: Infinity });
  let line = 0;
  for await (const text of rl) {
    line++;
    if (!text.trim()) continue;
    let row: unknown;
    try {
      row = JSON.parse(text);
    } catch (e) {
      throw new LatheError(`${path}:${line}: not JSON (${(e as Error).message})`);
    }
    if (typeof row !== 'object' || row === null || typeof (row as { prompt?: unknown }).prompt !== 'string')
      throw new LatheError(`${path}:${line}: prompt: expected a string field "prompt"`);
    rows.push(row as Record<string, unknown>);
  }
  if (!rows.length) throw new LatheError(`${path}: no prompt rows`);
  return rows;
}

/** The text of a training row for near-duplicate checks: `text`, or its messages joined. */
function rowText(row: unknown): string | undefined {
  if (typeof row !== 'object' || row === null) return undefined;
  const r = row as { text?: unknown; messages?: { content?: unknown }[] };
  if (typeof r.text === 'string') return r.text;
  if (Array.isArray(r.messages))
    return r.messages.map((m) => (typeof m.content === 'string' ? m.content : '')).join('\n');
  return undefined;
}

/** Text of a synthetic example, the form it is compared in. */
const exampleText = (prompt: string, answer: string) => `${prompt}\n${answer}`;

/**
 * Generates chat examples from a teacher, filters them (grader score, exact repeats, near-duplicates of
 * the training data) and writes them with a lock beside; returns the lock.
 */
export async function synthesize(o: SynthOptions): Promise<SynthLock> {
  if (!Number.isInteger(o.n) || o.n < 1) throw new LatheError(`--n: expected a positive integer, got ${o.n}`);
  const promptsPath = resolve(o.prompts);
  if (!existsSync(promptsPath)) throw new LatheError(`--prompts: no such file: ${promptsPath}`);
  const rows = await readPrompts(promptsPath);
  const seed = o.seed ?? 0;
  const sampling = { maxTokens: o.maxTokens ?? 64, temperature: o.temperature ?? 0.8, topP: o.topP ?? 1 };
  const min = o.min ?? 0.5;
  const clean = CleanSchema.parse({});
  const near = new NearDuplicateIndex({
    perms: clean.minhashPerms,
    shingle: clean.shingle,
    threshold: clean.nearThreshold,
    seed,
  });
  const against: { path: string; sha256: string }[] = [];
  for (const f of o.dedupeAgainst ?? []) {
    const p = resolve(f);
    if (!existsSync(p)) throw new LatheError(`--dedupe-against: no such file: ${p}`);
    const lines = (await readFile(p, 'utf8')).split('\n');
    lines.forEach((l, i) => {
      if (!l.trim()) return;
      let text: string | undefined;
      try {
        text = rowText(JSON.parse(l));
      } catch {
        throw new LatheError(`${p}:${i + 1}: not JSON`);
      }
      if (text === undefined) throw new LatheError(`${p}:${i + 1}: expected a "text" or "messages" field`);
      near.check(text);
    });
    against.push({ path: p, sha256: (await sha256File(p)).sha256 });
  }

  const grader = o.grader ? await ModelGrader.open(o.grader) : undefined;
  const teacher = await openModel(o.teacher, { where: '--teacher' }).catch(async (e: unknown) => {
    await grader?.close();
    throw e;
  });
  const counts: SynthCounts = {
    generated: 0,
    kept: 0,
    belowMin: 0,
    ungraded: 0,
    exactRepeats: 0,
    nearDuplicates: 0,
    empty: 0,
  };
  const lines: string[] = [];
  try {
    const t = teacher.tokenizer;
    const picks = Array.from({ length: o.n }, (_, i) => rows[i % rows.length]!);
    const answers = await generateBatch(
      teacher.model,
      picks.map(
        (r) => t.renderChat([{ role: 'user', content: r.prompt as string }], { addGenerationPrompt: true }).ids,
      ),
      {
        maxTokens: sampling.maxTokens,
        temperature: sampling.temperature,
        topP: sampling.topP,
        stop: [t.special.end, t.special.eos],
        seed,
        batch: o.batch,
      },
    );
    const texts = answers.map((ids) => t.decode(ids, { skipSpecial: true }).trim());
    counts.generated = texts.length;
    const grades = grader
      ? await grader.grade(texts.map((completion, i) => ({ completion, row: picks[i]! })))
      : undefined;
    const seen = new Set<string>();
    texts.forEach((answer, i) => {
      const prompt = picks[i]!.prompt as string;
      if (!answer) return void counts.empty++;
      const g = grades?.[i];
      if (g && 'error' in g) return void counts.ungraded++;
      if (g && g.score < min) return void counts.belowMin++;
      const key = canonicalJson([prompt, answer]);
      if (seen.has(key)) return void counts.exactRepeats++;
      seen.add(key);
      if (near.check(exampleText(prompt, answer), false)) return void counts.nearDuplicates++;
      counts.kept++;
      lines.push(
        JSON.stringify({
          messages: [
            { role: 'user', content: prompt },
            { role: 'assistant', content: answer },
          ],
          source: 'synthetic',
        }),
      );
    });
  } finally {
    await teacher.model.dispose();
    await grader?.close();
  }
  const out = resolve(o.out);
  const body = lines.length ? lines.join('\n') + '\n' : '';
  await writeFileAtomic(out, body);
  const lock: SynthLock = {
    kind: 'synthetic',
    out: { path: out, sha256: createHash('sha256').update(body).digest('hex') },
    teacher: teacher.ref,
    prompts: { path: promptsPath, sha256: (await sha256File(promptsPath)).sha256 },
    ...(grader ? { grader: { path: grader.path, sha256: grader.sha256, judge: grader.judge, min } } : {}),
    dedupeAgainst: against,
    seed,
    n: o.n,
    sampling,
    counts,
  };
  await writeFileAtomic(`${out}.lock.json`, JSON.stringify(lock, null, 2) + '\n');
  return lock;
}
