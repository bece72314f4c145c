import { tf } from './tf.js';
import { Rng } from '../../random.js';
import { disposeCache, type LanguageModel } from './model.js';

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
 * Generates a continuation of `prompt` (token ids) with a KV cache: one prefill pass, then one
 * token at a time. Stops at a stop token, maxTokens, or the model's context length.
 */
export async function generate(model: LanguageModel, prompt: number[], o: SampleOptions = {}): Promise<number[]> {
  if (!prompt.length) throw new Error('generate needs at least one prompt token (e.g. bos)');
  const rng = new Rng(o.seed ?? 0);
  const maxTokens = o.maxTokens ?? 64;
  const stop = new Set(o.stop ?? []);
  const ctx = model.spec.context;
  const input = prompt.slice(-ctx);
  const cache = model.newCache();
  const out: number[] = [];
  try {
    let logits = await lastLogits(model, input, 0, cache);
    let pos = input.length;
    while (out.length < maxTokens && pos < ctx) {
      const next = sampleToken(logits, o, rng);
      if (stop.has(next)) break;
      out.push(next);
      logits = await lastLogits(model, [next], pos, cache);
      pos++;
    }
    return out;
  } finally {
    disposeCache(cache);
  }
}

/** Runs ids through the model at pos0 with a KV cache and returns the last position's logits. */
export async function lastLogits(
  model: LanguageModel,
  ids: number[],
  pos0: number,
  cache: ReturnType<LanguageModel['newCache']>,
): Promise<Float32Array> {
  const t = tf.tidy(() => {
    const { logits } = model.forward(tf.tensor2d([ids], [1, ids.length], 'int32'), { cache, pos0 });
    return tf.slice(logits, [ids.length - 1, 0], [1, -1]);
  });
  const data = (await t.data()) as Float32Array;
  t.dispose();
  return data;
}
