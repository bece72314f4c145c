import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { scratch, tallySlice, tinyRecipe } from '../../test/helpers.js';
import { tf } from '../engine/tfjs/tf.js';
import { Recipe } from '../runs/recipe.js';
import { firstDivergence, reproduce, resume } from '../runs/index.js';
import type { Metric } from '../runs/rundir.js';

// Timing fields (TIMING_KEYS) differ between runs; everything else must match to the bit.
const strip = (ms: Metric[]) => ms.map(({ tokens_per_s: _a, gflops: _b, step_ms: _c, ...rest }) => rest);

describe('pre-training', () => {
  it('20 steps + resume + 20 steps is bit-identical to 40 steps (cpu), and reproduce agrees', async () => {
    const dir = await scratch();
    const data = await tallySlice(dir, 600);
    const r = new Recipe(tinyRecipe(data), { baseDir: dir });
    const straight = await r.run({ out: join(dir, 'straight') });
    expect(straight.summary!.status).toBe('completed');

    const split = await r.run({ out: join(dir, 'split'), stopAfter: 20 });
    expect(split.summary!.status).toBe('interrupted');
    expect(split.summary!.step).toBe(20);
    const events = await split.dir.readEvents();
    expect(events.at(-1)!.message).toBe('interrupted at step 20');
    const resumed = await resume(split.dir.path);
    await resumed.done;
    expect(resumed.summary!.status).toBe('completed');

    const a = await straight.dir.readMetrics();
    const b = await resumed.dir.readMetrics();
    expect(a.length).toBe(40);
    expect(a.map((m) => m.step)).toEqual(Array.from({ length: 40 }, (_, i) => i + 1));
    expect(strip(b)).toEqual(strip(a));
    expect(firstDivergence(a, b)).toBeUndefined();
    // Final weights equal to the byte.
    const wa = await readFile(join(straight.dir.checkpointPath(40), 'model.safetensors'));
    const wb = await readFile(join(resumed.dir.checkpointPath(40), 'model.safetensors'));
    expect(wa.equals(wb)).toBe(true);
    // Loss fell and eval ran every 10 steps.
    expect(a.at(-1)!.loss!).toBeLessThan(a[0]!.loss! - 1);
    expect(a.filter((m) => m.eval_loss !== undefined).map((m) => m.step)).toEqual([10, 20, 30, 40]);

    const rep = await reproduce(straight.dir.path, { out: join(dir, 'again') });
    expect(rep.identical).toBe(true);
    // A tampered metric is found, at its step.
    const tampered = a.map((m) => (m.step === 17 ? { ...m, loss: m.loss! + 1e-7 } : m));
    expect(firstDivergence(tampered, a)).toMatchObject({ step: 17, key: 'loss' });
  });

  it('leaks no tensors: the count after step 10 equals the count after step 500', async () => {
    const dir = await scratch();
    const data = await tallySlice(dir, 300);
    const r = new Recipe(
      tinyRecipe(data, {
        model: { dim: 16, layers: 1, heads: 2, context: 16 },
        train: { steps: 500, batchSize: 2, warmupSteps: 5, checkpointEvery: 250 },
        eval: { every: 100, batches: 1 },
      }),
      { baseDir: dir },
    );
    const counts = new Map<number, number>();
    const run = await r.start({ out: join(dir, 'run') });
    run.onMetric((m) => {
      if (m.step === 10 || m.step === 500) counts.set(m.step, tf.memory().numTensors);
    });
    await run.done;
    expect(counts.get(10)).toBeGreaterThan(0);
    expect(counts.get(500)).toBe(counts.get(10));
  });

  it('MoE trains, reports per-expert utilization and aux losses', async () => {
    const dir = await scratch();
    const data = await tallySlice(dir, 300);
    const r = new Recipe(
      tinyRecipe(data, {
        model: { arch: 'moe', dim: 32, layers: 1, heads: 2, context: 32, experts: 4, topK: 2 },
        train: { steps: 15, batchSize: 4, warmupSteps: 2 },
        eval: { every: 0, batches: 1 },
      }),
      { baseDir: dir },
    );
    const run = await r.run({ out: join(dir, 'moe') });
    const ms = await run.dir.readMetrics();
    const last = ms.at(-1)!;
    expect(last.expert_util).toHaveLength(4);
    expect((last.expert_util as number[]).reduce((a, b) => a + b, 0)).toBeCloseTo(1, 3);
    expect(last.aux_loss).toBeGreaterThan(0.9); // E·Σ f·P is 1 when balanced, larger when not
    expect(last.z_loss).toBeGreaterThan(0);
    expect(last.loss!).toBeLessThan(ms[0]!.loss!);
  });

  it('MoE with gradient accumulation handles experts that no token chose in a micro-batch', async () => {
    const dir = await scratch();
    const data = await tallySlice(dir, 200);
    const r = new Recipe(
      tinyRecipe(data, {
        model: { arch: 'moe', dim: 16, layers: 1, heads: 2, context: 8, experts: 8, topK: 1 },
        train: { steps: 3, batchSize: 1, gradAccum: 3, warmupSteps: 1 },
        eval: { every: 0, batches: 1 },
      }),
      { baseDir: dir },
    );
    const run = await r.run({ out: join(dir, 'moe-accum') });
    expect(run.summary!.status).toBe('completed');
    const ms = await run.dir.readMetrics();
    expect(ms.map((m) => m.step)).toEqual([1, 2, 3]);
    // Top-1 over 8 experts with 8 tokens per micro-batch: some experts sit idle in a micro-batch.
    expect((ms[0]!.expert_util as number[]).some((u) => u === 0 || u < 1 / 8)).toBe(true);
    for (const m of ms) expect(Number.isFinite(m.loss)).toBe(true);
  });

  it('streams metrics live through run.metrics()', async () => {
    const dir = await scratch();
    const data = await tallySlice(dir, 200);
    const r = new Recipe(tinyRecipe(data, { train: { steps: 6, batchSize: 2, warmupSteps: 1 } }), { baseDir: dir });
    const run = await r.start({ out: join(dir, 'live') });
    const seen: number[] = [];
    let finishedBeforeFirst: boolean | undefined;
    for await (const m of run.metrics()) {
      finishedBeforeFirst ??= run.summary !== undefined;
      seen.push(m.step);
    }
    expect(finishedBeforeFirst).toBe(false);
    expect(seen).toEqual([1, 2, 3, 4, 5, 6]);
  });
});
