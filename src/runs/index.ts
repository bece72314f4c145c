import type { ResourceRequest } from '../recipe/resources.js';
import { join } from 'node:path';
import { localExecutor } from './local.js';
import { LatheError } from '../errors.js';
import type { Engine } from '../engine/engine.js';
import { createEngine } from '../engine/index.js';
import type { EngineBackend } from '../engine/tfjs/backend.js';
import { generate as generateTokens, type SampleOptions } from '../engine/sample.js';
import { modelSpec } from '../model/spec.js';
import { Tokenizer } from '../tokenizer/index.js';
import type { AnyLock } from '../recipe/lock.js';
import { modelRunDir } from '../recipe/base.js';
import { latestGoodCheckpoint, loadCheckpoint } from './checkpoint.js';
import { loraBaseWeights } from '../engine/open.js';
import { firstDivergence, missingSteps, verifyLockData, type Divergence } from './reproduce.js';
import { Run } from './run.js';
import { RunDir } from './rundir.js';

export { Run } from './run.js';
export { RunDir, TIMING_KEYS, type Metric, type RunEvent, type RunSummary } from './rundir.js';
export { liveRuns as live, onRunStart } from './live.js';
export { saveCheckpoint, loadCheckpoint, type CheckpointState } from './checkpoint.js';
export { encodeSafetensors, decodeSafetensors, readSafetensors, type StoredTensor } from '../model/safetensors.js';
export { firstDivergence, type Divergence } from './reproduce.js';

/** Opens a run directory as a (finished or stopped) Run with its metrics. */
export async function open(dir: string): Promise<Run> {
  const rd = RunDir.open(dir);
  return new Run(
    rd,
    rd.readLock(),
    undefined,
    { interrupt() {}, cancel() {}, resumeOn: localExecutor },
    await rd.readMetrics(),
  );
}

/**
 * Continues a run from its last checkpoint, in this process; `backend` continues a tfjs run on
 * another backend (a run started on webgpu, say, resumed on wasm), `resources` on other ranks.
 */
export async function resume(
  dir: string,
  opts: { stopAfter?: number; resources?: ResourceRequest; backend?: EngineBackend } = {},
): Promise<Run> {
  return localExecutor.resume(dir, opts);
}

/** Re-runs a run's lock into `out` and compares metrics to the bit (timing fields aside). */
export async function reproduce(
  dir: string,
  opts: { out?: string } = {},
): Promise<{ run: Run; identical: boolean; divergence?: Divergence; missing?: number[]; corruptLines?: number[] }> {
  const rd = RunDir.open(dir);
  const lock = rd.readLock() as AnyLock;
  await verifyLockData(lock);
  const { metrics: original, bad } = await rd.readMetricsChecked();
  if (!original.length) throw new LatheError(`${dir}: has no metrics to compare`);
  const run = await localExecutor.start(lock, {
    out: opts.out ?? `${rd.path}.reproduce-${Date.now()}`,
    stopAfter: original.at(-1)!.step,
  });
  await run.done;
  const rerun = await run.dir.readMetrics();
  // Lines the original lost are not a divergence of the computation: say which.
  const missing = missingSteps(original, rerun);
  if (missing.length) return { run, identical: false, missing, corruptLines: bad.map((b) => b.line) };
  const divergence = firstDivergence(original, rerun);
  return { run, identical: !divergence, divergence };
}

/**
 * Loads a run's latest checkpoint that verifies (or `step`) into an engine for inference, with its
 * tokenizer (a LoRA run: its base with the adapters on). `checkpoint` names the folder used; `skipped` the newer ones that failed their checksums.
 */
export async function loadModel(
  dir: string,
  opts: { step?: number } = {},
): Promise<{
  model: Engine;
  tokenizer: Tokenizer;
  step: number;
  checkpoint: string;
  skipped: { step: number; reason: string }[];
}> {
  RunDir.open(dir);
  // A pipeline's model is its last stage's (stages/<i>-<stage>/ run directories).
  if (opts.step === undefined) dir = modelRunDir(dir);
  const rd = RunDir.open(dir);
  const lock = rd.readLock();
  let step = opts.step;
  let skipped: { step: number; reason: string }[] = [];
  if (step === undefined) ({ step, skipped } = await latestGoodCheckpoint(rd));
  else if (!(await rd.checkpointSteps()).includes(step)) step = undefined;
  if (step === undefined) {
    const why = skipped.length ? `; every checkpoint failed its checksum (${skipped[0]!.reason})` : ' yet';
    throw new LatheError(`${dir}: no checkpoint${opts.step !== undefined ? ` at step ${opts.step}` : ''}${why}`);
  }
  const tokenizer = await Tokenizer.load(join(rd.dataDir, 'tokenizer.json'));
  const checkpoint = rd.checkpointPath(step);
  const ck = await loadCheckpoint(checkpoint);
  const spec = modelSpec(lock.recipe.model, tokenizer.vocabSize);
  const lora = lock.recipe.train.lora;
  if (ck.adapters && !lora) throw new LatheError(`${checkpoint}: holds LoRA adapters, but the run has no train.lora`);
  // A LoRA run's model is its pinned base (held as it trained: quantized with QLoRA) with the adapters on.
  const model = ck.adapters
    ? await createEngine({
        backend: lock.backend,
        engine: lock.engine,
        spec,
        weights: await loraBaseWeights(lock, spec),
        lora: { ...lora!, seed: lock.recipe.seed, adapters: ck.adapters },
      })
    : await createEngine({ backend: lock.backend, engine: lock.engine, spec, weights: ck.weights! });
  return {
    model,
    tokenizer,
    step,
    checkpoint,
    skipped,
  };
}

/** Samples a completion of `prompt` from a run's latest checkpoint; `onCheckpoint` hears which one (and any skipped as corrupt). */
export async function generate(
  dir: string,
  prompt: string,
  opts: SampleOptions & { onCheckpoint?: (path: string, skipped: { step: number; reason: string }[]) => void } = {},
): Promise<string> {
  const { model, tokenizer, checkpoint, skipped } = await loadModel(dir);
  opts.onCheckpoint?.(checkpoint, skipped);
  try {
    const ids = [tokenizer.special.bos, ...tokenizer.encode(prompt)];
    const out = await generateTokens(model, ids, { ...opts, stop: opts.stop ?? [tokenizer.special.eos] });
    return tokenizer.decode(out);
  } finally {
    await model.dispose();
  }
}
