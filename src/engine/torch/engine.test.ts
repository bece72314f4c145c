// The torch engine as a user meets it: choosing it (and the errors when it cannot run), a Python
// error or a dead engine process, interrupt and resume to the bit, and reproduce.
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { lathe, scratch, tallySlice, tinyRecipe } from '../../../test/helpers.js';
import { untimed } from '../../../test/post-helpers.js';
import { LatheError } from '../../errors.js';
import { modelSpec } from '../../model/spec.js';
import { initWeights } from '../../model/weights.js';
import { ModelSchema } from '../../recipe/schema.js';
import { reproduce, resume } from '../../runs/index.js';
import { Recipe } from '../../runs/recipe.js';
import { RunDir } from '../../runs/rundir.js';
import { executeStage, type Sink } from '../../train/execute.js';
import type { EngineOptions } from '../index.js';
import { TorchEngine } from './engine.js';

let dir: string;
let data: string;
beforeAll(async () => {
  dir = await scratch('lathe-torch-');
  data = await tallySlice(dir, 400);
});

const train = { steps: 12, batchSize: 4, warmupSteps: 2, checkpointEvery: 4 };
const recipe = () => new Recipe(tinyRecipe(data, { train }), { baseDir: dir });

describe('the torch engine', () => {
  it('a Python error comes back as a LatheError with the Python message; the engine goes on', async () => {
    const spec = modelSpec(ModelSchema.parse({ dim: 16, layers: 1, heads: 2, context: 16 }), 64);
    const weights = initWeights(spec, 1);
    const bad = new Map(weights);
    bad.set('model.norm.weight', { shape: [3], data: new Float32Array(3) });
    await expect(TorchEngine.create({ device: 'cpu', dtype: 'fp32', spec, weights: bad })).rejects.toThrow(
      /^torch engine: init: EngineError: model\.norm\.weight: shape \[3\] does not match the model's \[16\]$/,
    );
    const e = await TorchEngine.create({
      device: 'cpu',
      dtype: 'fp32',
      spec,
      weights,
      optimizer: { beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0, gradClip: 1 },
    });
    const err = await e.optimStep(0.1).catch((x: unknown) => x);
    expect(err).toBeInstanceOf(LatheError);
    expect((err as Error).message).toBe(
      'torch engine: optim_step: EngineError: optimStep without gradients: call forwardBackward first',
    );
    const b = { inputs: new Int32Array(16).fill(3), targets: new Int32Array(16).fill(4), batch: 1, seq: 16 };
    expect((await e.forwardBackward(b, { name: 'cross_entropy' })).loss).toBeCloseTo(Math.log(64), 1);
    expect((await e.optimStep(0.1)).skipped).toBe(false);
    await e.dispose();
  });

  it('an engine process that dies fails the run with a clear message; resume continues from the last checkpoint, to the bit', async () => {
    const straight = await recipe().run({ out: join(dir, 'straight'), engine: 'torch' });
    expect(straight.summary!.status).toBe('completed');

    const lock = await recipe().lock({ engine: 'torch' });
    const rd = await RunDir.create(lock, join(dir, 'killed'));
    // The engine's process is killed once the run has written step 6.
    let engine: TorchEngine | undefined;
    const sink: Sink = {
      emit: (m) => {
        rd.appendMetric(m);
        if (m.step === 6) process.kill(engine!.pid!, 'SIGKILL');
      },
      event: (e) => rd.appendEvent(e),
      replay: () => {},
    };
    const killAt6 = async (o: EngineOptions) =>
      (engine = await TorchEngine.create({
        device: 'cpu',
        dtype: 'fp32',
        spec: o.spec,
        weights: o.weights,
        optimizer: o.optimizer,
      }));
    const failed = await executeStage(rd, lock, 'killed', sink, {}, { resume: false, createEngine: killAt6 }).catch(
      (x: unknown) => x,
    );
    expect((failed as Error).message).toMatch(
      /^torch engine: forward_backward: the torch engine process exited \(SIGKILL\)/,
    );
    const summary = await rd.readSummary();
    expect(summary).toMatchObject({ status: 'failed', step: 6 });
    expect(await rd.checkpointSteps()).toEqual([4]);
    const again = await resume(rd.path);
    await again.done;
    expect(again.summary!.status).toBe('completed');
    expect(untimed(await again.dir.readMetrics())).toEqual(untimed(await straight.dir.readMetrics()));
  }, 120_000);

  it('interrupt stops at a step boundary with a checkpoint; reproduce is bit-exact on the same engine, device and dtype', async () => {
    const run = await recipe().start({ out: join(dir, 'interrupted'), engine: 'torch' });
    const off = run.onMetric((m) => m.step === 5 && run.interrupt());
    await run.done;
    off();
    expect(run.summary).toMatchObject({ status: 'interrupted', step: 5 });
    expect(await run.dir.checkpointSteps()).toEqual([4, 5]);
    const again = await run.resume();
    expect(again.summary!.status).toBe('completed');
    const r = await reproduce(run.dir.path, { out: join(dir, 'interrupted-again') });
    expect(r.identical, JSON.stringify(r.divergence)).toBe(true);
    expect(r.run.lock.engine).toEqual(run.lock.engine);
  }, 120_000);

  it('naming torch where it cannot run is a clear error (exit 2) with the reason and the fix; auto says what it picked and skipped', async () => {
    const file = join(dir, 'r.json');
    await writeFile(file, JSON.stringify(tinyRecipe(data, { train: { ...train, steps: 2 } })));
    const cuda = lathe(['train', file, '--engine', 'torch', '--device', 'cuda', '--out', join(dir, 'cuda')]);
    expect(cuda.status).toBe(2);
    expect(cuda.stderr).toMatch(
      /device cuda: torch 2\.\d+\.\d+\S* \(.*\) sees no CUDA device .*use --device cpu, or install a CUDA build of torch/,
    );
    const none = lathe(['train', file, '--engine', 'torch', '--out', join(dir, 'none')], {
      env: { LATHE_PYTHON: '/usr/bin/python3' },
    });
    expect(none.status).toBe(2);
    expect(none.stderr).toMatch(/engine torch: torch is not installed for \/usr\/bin\/python3; install it in the venv/);
    const bf16 = lathe(['train', file, '--dtype', 'bf16', '--out', join(dir, 'bf16')]);
    expect(bf16.status).toBe(2);
    expect(bf16.stderr).toMatch(/dtype bf16: the tfjs engine computes in fp32; use --engine torch/);
    const auto = lathe(['train', file, '--engine', 'auto', '--out', join(dir, 'auto')]);
    expect(auto.status, auto.stderr).toBe(0);
    expect(auto.stderr).toMatch(/engine auto: torch 2\.\S+ on cpu \(no CUDA device\); skipping tfjs/);
    const fallback = lathe(['train', file, '--engine', 'auto', '--out', join(dir, 'auto-tfjs')], {
      env: { LATHE_PYTHON: '/usr/bin/python3' },
    });
    expect(fallback.status, fallback.stderr).toBe(0);
    expect(fallback.stderr).toMatch(/engine auto: skipping torch: torch is not installed for \/usr\/bin\/python3/);
    expect(fallback.stderr).toMatch(/engine auto: tfjs on cpu/);
  }, 120_000);
});
