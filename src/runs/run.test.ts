import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { scratch, tallySlice, tinyRecipe } from '../../test/helpers.js';
import { Recipe } from './recipe.js';
import { open, resume } from './index.js';
import { TIMING_KEYS, type Metric } from './rundir.js';

// Timing fields differ between runs; everything else must match to the bit.
const strip = (ms: Metric[]) =>
  ms.map((m) => Object.fromEntries(Object.entries(m).filter(([k]) => !TIMING_KEYS.has(k))));

describe('Run.resume()', () => {
  it('after an interrupt, continues from the checkpoint to the planned step count, as if never stopped', async () => {
    const dir = await scratch();
    const data = await tallySlice(dir, 300);
    const r = new Recipe(
      tinyRecipe(data, {
        train: { steps: 12, batchSize: 2, lr: 0.01, warmupSteps: 2, checkpointEvery: 100 },
        eval: { every: 6, batches: 1 },
      }),
      { baseDir: dir },
    );
    const straight = await r.run({ out: join(dir, 'straight') });

    const run = await r.start({ out: join(dir, 'split') });
    // A real interrupt (as the kernel's stop button sends), asked for while step 4 is reported.
    await new Promise<void>((asked) =>
      run.onMetric((m) => {
        if (m.step !== 4) return;
        run.interrupt();
        asked();
      }),
    );
    // The run has not stopped yet: resume() waits for its step boundary first, then trains to the end.
    expect(run.status).toBe('running');
    const resumed = await run.resume();
    expect(run.summary).toMatchObject({ status: 'interrupted', step: 4 });
    expect(resumed).not.toBe(run);
    expect(resumed.dir.path).toBe(run.dir.path);
    expect(resumed.summary).toMatchObject({ status: 'completed', step: 12, steps: 12 });

    const events = (await resumed.dir.readEvents()).map((e) => e.message);
    expect(events).toContain('interrupted at step 4');
    expect(events).toContain('resumed from step 4');
    // The new Run replays the metrics written before the interrupt, so its chart starts at step 1.
    expect(resumed.metricsSoFar.map((m) => m.step)).toEqual(Array.from({ length: 12 }, (_, i) => i + 1));
    const a = await straight.dir.readMetrics();
    const b = await resumed.dir.readMetrics();
    expect(strip(b)).toEqual(strip(a));
    expect(b.at(-1)!.loss).toBe(straight.summary!.loss);
  });

  it('refuses a run that is still training, and a completed one; works on a run opened from disk', async () => {
    const dir = await scratch();
    const data = await tallySlice(dir, 200);
    const r = new Recipe(
      tinyRecipe(data, {
        train: { steps: 6, batchSize: 2, warmupSteps: 1, checkpointEvery: 100 },
        eval: { every: 0, batches: 1 },
      }),
      { baseDir: dir },
    );
    const run = await r.start({ out: join(dir, 'run'), stopAfter: 3 });
    await expect(run.resume()).rejects.toThrow(/still running: interrupt\(\) it first/);
    await run.done;
    expect(run.summary).toMatchObject({ status: 'interrupted', step: 3 });

    // Opened from disk (a new kernel, say): resume continues it all the same.
    const reopened = await open(run.dir.path);
    const resumed = await reopened.resume({ stopAfter: 5 });
    expect(resumed.summary).toMatchObject({ status: 'interrupted', step: 5 });
    // runs.resume(dir) still works, and finishes the plan.
    const last = await resume(run.dir.path);
    expect(await last.done).toMatchObject({ status: 'completed', step: 6 });
    expect((await last.dir.readMetrics()).map((m) => m.step)).toEqual([1, 2, 3, 4, 5, 6]);
    await expect(last.resume()).rejects.toThrow(/already completed 6 steps; nothing to resume/);
  });
});
