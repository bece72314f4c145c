import { Rng } from '../random.js';
import type { Engine } from './engine.js';

// Sampling, the same on every engine: the engine decodes with its KV cache, and the token choice
// (temperature, top-k, top-p, from a seeded Rng) happens here, so equal logits give equal tokens.

/** Sampling settings for generation. */
export interface SampleOptions {
  /** Tokens to generate at most (default 64). */
  maxTokens?: number;
  /** Softmax temperature; 0 means greedy (default 1). */
  temperature?: number;
  /** Keep only the k most likely tokens (0: off). */
  topK?: number;
  /** Keep the smallest set of tokens whose probability reaches p (1: off). */
  topP?: number;
  /** Token ids that end generation (not included in the output). */
  stop?: number[];
  /** Seed for sampling; the same seed gives the same completion. */
  seed?: number;
}

/** Picks the next token from logits with temperature, top-k and top-p. */
export function sampleToken(logits: Float32Array, o: SampleOptions, rng: Rng): number {
  const temp = o.temperature ?? 1;
  if (temp <= 0) {
    let best = 0;
    for (let i = 1; i < logits.length; i++) if (logits[i]! > logits[best]!) best = i;
    return best;
  }
  const order = Array.from(logits.keys()).sort((a, b) => logits[b]! - logits[a]! || a - b);
  const k = o.topK && o.topK > 0 ? Math.min(o.topK, order.length) : order.length;
  const max = logits[order[0]!]!;
  const probs: number[] = [];
  let total = 0;
  for (let i = 0; i < k; i++) {
    const pr = Math.exp((logits[order[i]!]! - max) / temp);
    probs.push(pr);
    total += pr;
  }
  const topP = o.topP ?? 1;
  let keep = probs.length;
  if (topP < 1) {
    let acc = 0;
    for (let i = 0; i < probs.length; i++) {
      acc += probs[i]! / total;
      if (acc >= topP) {
        keep = i + 1;
        break;
      }
    }
  }
  let mass = 0;
  for (let i = 0; i < keep; i++) mass += probs[i]!;
  let r = rng.next() * mass;
  for (let i = 0; i < keep; i++) {
    r -= probs[i]!;
    if (r < 0) return order[i]!;
  }
  return order[keep - 1]!;
}

/**
 * Generates a continuation of `prompt` (token ids): one prefill, then one token at a time from the
 * engine's KV cache. Stops at a stop token, maxTokens, or the model's context length.
 */
export async function generate(engine: Engine, prompt: number[], o: SampleOptions = {}): Promise<number[]> {
  if (!prompt.length) throw new Error('generate needs at least one prompt token (e.g. bos)');
  const rng = new Rng(o.seed ?? 0);
  const maxTokens = o.maxTokens ?? 64;
  const stop = new Set(o.stop ?? []);
  const ctx = engine.spec.context;
  const input = prompt.slice(-ctx);
  const out: number[] = [];
  const { logits: first, session } = await engine.decode(input, 1);
  try {
    let logits = first;
    let pos = input.length;
    while (out.length < maxTokens && pos < ctx) {
      const next = sampleToken(logits, o, rng);
      if (stop.has(next)) break;
      out.push(next);
      pos++;
      if (out.length >= maxTokens || pos >= ctx) break;
      logits = await session.step(Int32Array.of(next));
    }
    return out;
  } finally {
    session.close();
  }
}

/**
 * Generates continuations of many prompts at once through the engine's batch decoder: up to `batch`
 * rows decode together, and a finished row's place goes to the next prompt. Prompt i samples with
 * Rng(seeds[i] ?? seed + i); each result is token for token what {@link generate} gives that prompt
 * alone with that seed (up to the float rounding of batched products).
 */
export async function generateBatch(
  engine: Engine,
  prompts: readonly number[][],
  o: Omit<SampleOptions, 'seed'> & { seed?: number; seeds?: readonly number[]; batch?: number } = {},
): Promise<number[][]> {
  const maxTokens = o.maxTokens ?? 64;
  const stop = new Set(o.stop ?? []);
  const ctx = engine.spec.context;
  const width = Math.max(1, o.batch ?? 16);
  const out: number[][] = prompts.map(() => []);
  const d = engine.batchDecoder();
  type Live = { i: number; row: number; rng: Rng; pos: number; next: number };
  let live: Live[] = [];
  let queued = 0;
  /** Samples a row's next token; false when the row is done. */
  const take = (r: Live, logits: Float32Array): boolean => {
    const next = sampleToken(logits, o, r.rng);
    if (stop.has(next)) return false;
    out[r.i]!.push(next);
    r.pos++;
    r.next = next;
    return out[r.i]!.length < maxTokens && r.pos < ctx;
  };
  try {
    while (queued < prompts.length || live.length) {
      while (queued < prompts.length && live.length < width) {
        const i = queued++;
        const p = prompts[i]!;
        if (!p.length) throw new Error(`generateBatch: prompt ${i} is empty (start it with bos)`);
        const input = p.slice(-ctx);
        const { rows, logits } = await d.add(input);
        const r: Live = {
          i,
          row: rows[0]!,
          rng: new Rng(o.seeds?.[i] ?? (o.seed ?? 0) + i),
          pos: input.length,
          next: 0,
        };
        if (maxTokens > 0 && input.length < ctx && take(r, logits)) live.push(r);
        else d.drop(r.row);
      }
      if (!live.length) continue;
      const logits = await d.step(
        live.map((r) => r.row),
        Int32Array.from(live.map((r) => r.next)),
      );
      const V = logits.length / live.length;
      live = live.filter((r, k) => {
        if (take(r, logits.subarray(k * V, (k + 1) * V))) return true;
        d.drop(r.row);
        return false;
      });
    }
    return out;
  } finally {
    d.close();
  }
}
