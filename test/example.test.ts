import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parses } from '../examples/tally/reward.js';
import type { Engine } from '../src/engine/engine.js';
import { createEngine } from '../src/engine/index.js';
import { generate } from '../src/engine/sample.js';
import { initWeights } from '../src/model/weights.js';
import { Recipe } from '../src/runs/recipe.js';
import { loadModel } from '../src/runs/index.js';
import { ROOT, scratch } from './helpers.js';

// The bound was measured, not guessed: see the issue note. Fixed seed, fixed steps, wasm backend.
const HELD_OUT_BOUND = Number(process.env.LATHE_EXAMPLE_BOUND ?? 1.75);
const SAMPLES = 24;

async function parseRate(model: Engine, bos: number, eos: number, decode: (ids: number[]) => string): Promise<number> {
  let ok = 0;
  for (let seed = 1; seed <= SAMPLES; seed++) {
    const ids = await generate(model, [bos], { maxTokens: 100, temperature: 0.7, seed, stop: [eos] });
    if (parses(decode(ids))) ok++;
  }
  return ok / SAMPLES;
}

describe('the Tally example', () => {
  it('a tiny model trained with a fixed seed reaches the stated held-out loss and writes programs that parse', async () => {
    const dir = await scratch();
    const r = new Recipe(
      {
        stage: 'pretrain',
        seed: 1337,
        backend: 'wasm',
        data: { sources: [{ path: join(ROOT, 'examples/data/tally/train.jsonl') }], valFraction: 0.05 },
        tokenizer: { vocabSize: 512 },
        model: { dim: 64, layers: 2, heads: 2, context: 128 },
        train: { steps: 200, batchSize: 8, lr: 0.005, minLr: 0.0005, warmupSteps: 20, checkpointEvery: 0 },
        eval: { every: 100, batches: 8 },
      },
      { baseDir: dir },
    );
    const run = await r.run({ out: join(dir, 'run') });
    const s = run.summary!;
    expect(s.status).toBe('completed');
    console.log(
      `example: held-out loss ${s.eval_loss!.toFixed(4)} after ${s.step} steps at ${s.tokens_per_s} tokens/s (wasm)`,
    );
    expect(s.eval_loss!).toBeLessThan(HELD_OUT_BOUND);

    const { model, tokenizer } = await loadModel(run.dir.path);
    const untrained = await createEngine({ backend: 'wasm', spec: model.spec, weights: initWeights(model.spec, 99) });
    const { bos, eos } = tokenizer.special;
    const decode = (ids: number[]) => tokenizer.decode(ids);
    const trainedRate = await parseRate(model, bos, eos, decode);
    const untrainedRate = await parseRate(untrained, bos, eos, decode);
    console.log(`example: samples that parse: trained ${trainedRate}, untrained ${untrainedRate}`);
    expect(trainedRate).toBeGreaterThan(untrainedRate);
    expect(trainedRate).toBeGreaterThanOrEqual(0.2); // measured: 6 of 24
    await model.dispose();
    await untrained.dispose();
  }, 600_000);
});
