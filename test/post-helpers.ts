import { join } from 'node:path';
import { Recipe } from '../src/runs/recipe.js';
import type { Metric } from '../src/runs/rundir.js';
import { ROOT, tallySlice } from './helpers.js';
import { writeMini } from './tally-mini.js';

/** The bundled post-training datasets (examples/data/tally-post). */
export const POST = join(ROOT, 'examples', 'data', 'tally-post');
/** The Tally reward module. */
export const TALLY_REWARD = join(ROOT, 'examples', 'tally', 'reward.ts');

/**
 * A briefly pre-trained Tally base on wasm (dim 64, 2 layers, context 128, 512 tokens): 100 steps of
 * 8 × 128 tokens, about 25 s. Returns its run directory.
 */
export async function tallyBase(dir: string, o: { steps?: number; docs?: number } = {}): Promise<string> {
  const data = await tallySlice(dir, o.docs ?? 3000);
  const r = new Recipe(
    {
      stage: 'pretrain',
      seed: 1,
      backend: 'wasm',
      data: { sources: [{ path: data }], valFraction: 0.02 },
      tokenizer: { vocabSize: 512 },
      model: { dim: 64, layers: 2, heads: 4, context: 128 },
      train: { steps: o.steps ?? 100, batchSize: 8, lr: 0.01, minLr: 0.001, warmupSteps: 5, checkpointEvery: 0 },
      eval: { every: 0, batches: 1 },
    },
    { baseDir: dir },
  );
  const run = await r.run({ out: join(dir, 'base') });
  if (run.summary?.status !== 'completed')
    throw new Error(`base pre-training ${run.summary?.status}: ${run.summary?.error}`);
  return run.dir.path;
}

/** Mini Tally (test/tally-mini.ts) and a base pre-trained on it: dim 48, context 48, 40 steps, a few seconds on wasm. */
export async function miniBase(
  dir: string,
  o: { steps?: number; backend?: 'cpu' | 'wasm'; dim?: number } = {},
): Promise<{ base: string; prompts: string }> {
  const mini = await writeMini(dir, { programs: 3000, prompts: 400, seed: 5 });
  const r = new Recipe(
    {
      stage: 'pretrain',
      seed: 1,
      backend: o.backend ?? 'wasm',
      data: { sources: [{ path: mini.train }], valFraction: 0.02 },
      tokenizer: { vocabSize: 320 },
      model: { dim: o.dim ?? 48, layers: 2, heads: 4, context: 48 },
      train: { steps: o.steps ?? 40, batchSize: 16, lr: 0.01, minLr: 0.001, warmupSteps: 5, checkpointEvery: 0 },
      eval: { every: 0, batches: 1 },
    },
    { baseDir: dir },
  );
  const run = await r.run({ out: join(dir, 'mini-base') });
  if (run.summary?.status !== 'completed') throw new Error(`mini base ${run.summary?.status}: ${run.summary?.error}`);
  return { base: run.dir.path, prompts: mini.prompts };
}

/** Mean of a metric over the lines whose step is in [from, to]. */
export function meanMetric(ms: Metric[], key: string, from: number, to: number): number {
  const xs = ms
    .filter((m) => m.step >= from && m.step <= to && typeof m[key] === 'number')
    .map((m) => m[key] as number);
  return xs.reduce((a, b) => a + b, 0) / xs.length;
}

/** Metrics without timing fields (for bit-exact comparisons). */
export function untimed(ms: Metric[]): Metric[] {
  return ms.map(
    ({ tokens_per_s: _a, gflops: _b, step_ms: _c, rank_tokens_per_s: _d, slowest_rank: _e, ...rest }) => rest as Metric,
  );
}
