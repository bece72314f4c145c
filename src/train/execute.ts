import { existsSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { trainPostTokenizer } from '../data/post.js';
import { prepareData, type PreparedData } from '../data/prepare.js';
import { EngineLost, type Engine, type OptimizerState } from '../engine/engine.js';
import { worldSize } from '../engine/select.js';
import { pickLauncher, type TorchLaunch } from '../engine/torch/launch.js';
import { createEngine, engineLabel, type EngineOptions } from '../engine/index.js';
import type { EngineBackend } from '../engine/tfjs/backend.js';
import { LatheError } from '../errors.js';
import { summarizeGates } from '../eval/gates.js';
import { checkLoraTargets, initAdapters, loraParamCount } from '../model/lora.js';
import { modelSpec, numParamsOf, type ModelSpec } from '../model/spec.js';
import { initWeights, type Weights } from '../model/weights.js';
import { resizeVocab } from '../model/vocab.js';
import type { RecipeLock } from '../recipe/lock.js';
import type { LoraRecipeConfig, PostRecipe } from '../recipe/schema.js';
import {
  latestGoodCheckpoint,
  loadCheckpoint,
  readCheckpointState,
  removeOrphanCheckpoints,
  type CheckpointState,
} from '../runs/checkpoint.js';
import type { Metric, RunDir, RunEvent, RunSummary } from '../runs/rundir.js';
import { Tokenizer } from '../tokenizer/index.js';
import { loadBase } from '../engine/open.js';
import type { StageContext, StageResult, StopSignal } from './loop.js';
import { STAGE_RUNNERS } from './stages.js';

// Running a stage in this process: where its model starts (fresh, from a base, or from the
// checkpoint it resumes), the engine it trains on, and the run directory's summary when it ends.

/** How {@link executeStage} runs: fresh or resumed, and where to stop early. */
export interface ExecuteOptions {
  /** Continue from the last checkpoint (else a fresh start). */
  resume: boolean;
  /** Stop as if interrupted after this step (a checkpoint is written). */
  stopAfter?: number;
  /** Starts the stage's engine (default {@link createEngine}); a wrapper can observe or inject faults. */
  createEngine?: (o: EngineOptions) => Promise<Engine>;
  /** The tfjs backend to continue on, when a resume moves a run to another one (default: the lock's). */
  backend?: EngineBackend;
}

/** Where a stage's metrics and events go: its own run directory, plus a live Run (or a pipeline's mirror). */
export interface Sink {
  emit(m: Metric): void;
  event(e: Omit<RunEvent, 'time'>): void;
  /** Metrics already in the run directory, replayed on resume. */
  replay(ms: Metric[]): void;
  /** Metrics after this step are dropped (a resume redoes them). */
  truncate?(step: number): Promise<void>;
}

/**
 * Runs one stage in this process, writing its run directory as it goes. When the engine is lost
 * (a rank killed, a hung rank timed out) and `resources.restarts` allows, the stage resumes from
 * its last checkpoint in place, with a new engine.
 */
export async function executeStage(
  rd: RunDir,
  lock: RecipeLock,
  runId: string,
  sink: Sink,
  stop: StopSignal,
  opts: ExecuteOptions,
): Promise<RunSummary> {
  const t0 = performance.now();
  let restarts = lock.recipe.resources?.restarts ?? 0;
  let resume = opts.resume;
  for (;;) {
    try {
      return await executeOnce(rd, lock, runId, sink, stop, { ...opts, resume }, t0);
    } catch (e) {
      const message = e instanceof Error ? e.message : String(e);
      if (e instanceof EngineLost && restarts > 0 && !stop.reason && (await rd.checkpointSteps()).length) {
        restarts--;
        sink.event({
          type: 'notice',
          message: `${message}; restarting from the last checkpoint (resources.restarts: ${restarts} left)`,
        });
        resume = true;
        continue;
      }
      sink.event({ type: 'failed', message });
      const metrics = await rd.readMetrics();
      await rd.writeSummary({
        id: runId,
        lockId: lock.id,
        stage: lock.recipe.stage,
        status: 'failed',
        step: metrics.at(-1)?.step ?? 0,
        steps: lock.recipe.train.steps,
        tokens: Number(metrics.at(-1)?.tokens ?? 0),
        seconds: 0,
        backend: lock.backend,
        lathe: lock.lathe,
        error: message,
      });
      throw e;
    }
  }
}

/** The torch launch of a run over several ranks (undefined for one process). */
function launchOf(lock: RecipeLock): TorchLaunch | undefined {
  const res = lock.recipe.resources;
  if (!lock.engine || worldSize(res) <= 1) return undefined;
  return {
    perNode: res!.gpus,
    nodes: res!.nodes,
    parallel: res!.parallel,
    launcher: pickLauncher(res!.nodes),
    timeoutMs: res!.timeoutSeconds * 1000,
  };
}

async function executeOnce(
  rd: RunDir,
  lock: RecipeLock,
  runId: string,
  sink: Sink,
  stop: StopSignal,
  opts: ExecuteOptions,
  t0: number,
): Promise<RunSummary> {
  const { emit, event } = sink;
  let engine: Engine | undefined;
  try {
    const r = lock.recipe;
    const start = await (r.stage === 'pretrain' ? startPretrain : startPost)(rd, lock, sink, opts.resume);
    const backend = !lock.engine && opts.backend ? opts.backend : lock.backend;
    if (backend !== lock.backend)
      event({ type: 'notice', message: `continuing on the ${backend} backend (the run started on ${lock.backend})` });
    const launch = launchOf(lock);
    const lora = r.train.lora;
    if (lora) checkLoraRun(lock, start.spec, lora);
    engine = await (opts.createEngine ?? createEngine)({
      backend,
      engine: lock.engine,
      launch,
      checkpointActivations: r.train.checkpointActivations,
      spec: start.spec,
      weights: start.weights,
      optimizer: {
        beta1: r.train.beta1,
        beta2: r.train.beta2,
        eps: r.train.eps,
        weightDecay: r.train.weightDecay,
        gradClip: r.train.gradClip,
        state: start.optimizer,
      },
      lora: lora && { ...lora, seed: r.seed, adapters: start.adapters ?? initAdapters(start.spec, lora, r.seed) },
      halfStorage: r.dtype !== 'fp32',
    });
    if (engine.storage) event({ type: 'notice', message: `${backend}: ${engine.storage}; dtype fp32 keeps fp32` });
    if (launch && engine.ranks) {
      event({
        type: 'notice',
        message: `torch.distributed: ${engine.ranks.length} ranks (${launch.parallel}, ${launch.nodes} node${launch.nodes > 1 ? 's' : ''} × ${launch.perNode}): ${engine.ranks.map((x) => `rank ${x.rank} pid ${x.pid} on ${x.host}`).join(', ')}`,
      });
    }
    const ctx: StageContext = {
      lock,
      rd,
      engine,
      tokenizer: start.tokenizer,
      // With LoRA the reference is the frozen base with the adapters switched off.
      referenceWeights: lora ? () => Promise.resolve('base' as const) : start.referenceWeights,
      prepared: start.prepared,
      resume: start.resume,
      fresh: !opts.resume,
      stop,
      stopAfter: opts.stopAfter,
      emit,
      event,
    };
    const run = STAGE_RUNNERS[r.stage] as (ctx: StageContext) => Promise<StageResult>;
    const result = await run(ctx);
    if (result.status === 'completed')
      event({ type: 'completed', step: result.step, message: `completed ${result.step} steps` });
    const summary: RunSummary = {
      id: runId,
      lockId: lock.id,
      stage: r.stage,
      status: result.status,
      step: result.step,
      steps: r.train.steps,
      loss: result.loss,
      eval_loss: result.evalLoss,
      tokens: result.tokens,
      seconds: Math.round(result.seconds * 1000) / 1000,
      tokens_per_s: result.seconds > 0 ? Math.round(result.tokens / result.seconds) : undefined,
      params: engine.numParams,
      backend: lock.backend,
      engine: lock.engine,
      lathe: lock.lathe,
      wall_seconds: Math.round(performance.now() - t0) / 1000,
      error: result.error,
    };
    const gates = summarizeGates(r.eval.gates, await rd.readMetrics());
    if (gates) summary.gates = gates;
    await rd.writeSummary(summary);
    return summary;
  } finally {
    await engine?.dispose();
  }
}

/** Refuses a LoRA run the engine cannot serve, naming the recipe field, before anything loads on it. */
function checkLoraRun(lock: RecipeLock, spec: ModelSpec, lora: LoraRecipeConfig): void {
  checkLoraTargets(spec, lora);
  if (worldSize(lock.recipe.resources) > 1)
    throw new LatheError(
      'train.lora: LoRA adapters train in one process; remove resources.gpus/nodes above 1, or drop train.lora to train all weights on several ranks',
    );
  if (lora.quantize === 'nf4' && lock.engine?.device !== 'cuda')
    throw new LatheError(
      `train.lora.quantize: nf4 runs on the torch engine on CUDA (bitsandbytes); this run is on ${engineLabel(lock)}. Use --engine torch --device cuda, or quantize int8`,
    );
}

/** The LoRA part of a stage's "started" message: what trains, of how much. */
function loraNote(spec: ModelSpec, lora: LoraRecipeConfig | undefined): string {
  if (!lora) return '';
  const n = loraParamCount(spec, lora);
  const pct = (100 * n) / numParamsOf(spec);
  const base = lora.quantize === 'none' ? 'frozen' : `frozen, held ${lora.quantize}`;
  return `; LoRA rank ${lora.rank} on ${lora.targets.join(', ')} trains ${n.toLocaleString('en-US')} (${pct.toFixed(2)}%), the base ${base}`;
}

/** Where a stage starts: its model and tokenizer, fresh or from the checkpoint it resumes. */
interface StageStart {
  spec: ModelSpec;
  /** The weights: the model to train, or with LoRA the frozen base. */
  weights: Weights;
  /** LoRA: the adapters of the checkpoint being resumed (absent: fresh ones under the seed). */
  adapters?: Weights;
  /** The optimizer state of the checkpoint being resumed. */
  optimizer?: OptimizerState;
  tokenizer: Tokenizer;
  prepared?: PreparedData;
  resume?: { state: CheckpointState };
  /** The frozen reference: the starting model's weights. */
  referenceWeights(): Promise<Weights>;
}

/**
 * The checkpoint a resume continues from (the newest that verifies; corrupt ones are skipped and
 * said), with metrics.jsonl repaired up to it: lines past it dropped, lines it lost restored from
 * the checkpoints, unreadable lines kept aside. Undefined for a fresh start, or a resume with no
 * checkpoint yet (metrics cleared).
 */
async function resumePoint(rd: RunDir, lock: RecipeLock, sink: Sink, resuming: boolean, usable = true) {
  if (!resuming) return undefined;
  const orphans = await removeOrphanCheckpoints(rd);
  if (orphans.length)
    sink.event({
      type: 'notice',
      message: `removed ${orphans.length} unfinished checkpoint folder(s) a kill left: ${orphans.join(', ')}`,
    });
  const { step: last, skipped } = usable ? await latestGoodCheckpoint(rd) : { step: undefined, skipped: [] };
  for (const s of skipped)
    sink.event({
      type: 'notice',
      step: s.step,
      message: `checkpoint ${s.step} is corrupt (${s.reason}); falling back to an earlier one`,
    });
  const at = last ?? 0;
  const ck = last !== undefined ? await loadCheckpoint(rd.checkpointPath(last)) : undefined;
  if (ck && ck.state.lockId !== lock.id)
    throw new LatheError(`${rd.checkpointPath(at)}: checkpoint belongs to lock ${ck.state.lockId}, not ${lock.id}`);
  const restore: Metric[] = [];
  for (const s of await rd.checkpointSteps())
    if (s <= at)
      restore.push(...((await readCheckpointState(rd.checkpointPath(s)).catch(() => undefined))?.metrics ?? []));
  const fixed = await rd.truncateMetricsAfter(at, restore);
  if (fixed.corrupt.length)
    sink.event({
      type: 'notice',
      message: `metrics.jsonl: line${fixed.corrupt.length > 1 ? 's' : ''} ${fixed.corrupt.join(', ')} did not parse; kept in ${rd.corruptMetricsPath}`,
      lines: fixed.corrupt,
    });
  if (fixed.restored.length)
    sink.event({
      type: 'notice',
      message: `metrics.jsonl: restored the lines of step${fixed.restored.length > 1 ? 's' : ''} ${fixed.restored.join(', ')} from the checkpoints`,
      steps: fixed.restored,
    });
  const logEvery = lock.recipe.train.logEvery;
  const have = new Set((await rd.readMetrics()).map((m) => m.step));
  const lost = Array.from({ length: Math.floor(at / logEvery) }, (_, i) => (i + 1) * logEvery).filter(
    (s) => !have.has(s),
  );
  if (lost.length)
    sink.event({
      type: 'notice',
      message: `metrics.jsonl: the lines of step${lost.length > 1 ? 's' : ''} ${lost.join(', ')} are lost and could not be restored (their checkpoints are gone)`,
      steps: lost,
    });
  await sink.truncate?.(at);
  if (ck) {
    sink.replay(await rd.readMetrics());
    sink.event({ type: 'resumed', step: at, message: `resumed from step ${at}` });
    return ck;
  }
  sink.event({ type: 'resumed', step: 0, message: 'no checkpoint yet; starting from step 0' });
  return undefined;
}

/** A resumed checkpoint's adapters; a checkpoint that does not match the recipe's LoRA setting is refused. */
function checkpointModel(ck: { adapters?: Weights }, lora: boolean, where: string): { adapters?: Weights } {
  if (lora !== (ck.adapters !== undefined))
    throw new LatheError(
      `${where}: holds ${ck.adapters ? 'LoRA adapters' : 'a whole model'}, but the recipe ${lora ? 'trains LoRA adapters' : 'has no train.lora'}`,
    );
  return { adapters: ck.adapters };
}

/** The checkpoint's optimizer state, in the engine's terms. */
function optimizerOf(ck: { moments?: { m: Weights; v: Weights }; state: CheckpointState }): OptimizerState | undefined {
  return ck.moments && { ...ck.moments, step: ck.state.optimizerStep };
}

/** Pre-training starts from the prepared data's tokenizer and a fresh model under the seed. */
async function startPretrain(rd: RunDir, lock: RecipeLock, sink: Sink, resuming: boolean): Promise<StageStart> {
  const prepared = await prepareData(lock, rd.dataDir, {
    onNotice: (m) => sink.event({ type: 'notice', message: m }),
  });
  if (!resuming) {
    const c = prepared.clean;
    sink.event({
      type: 'prepared',
      message: `data ready: ${prepared.sources.map((s) => `${s.name} ${s.tokens.train} train / ${s.tokens.val} held-out tokens`).join(', ')}; ${c.exactDuplicates + c.nearDuplicates} duplicates removed, ${prepared.rejected} lines rejected`,
      seconds: prepared.seconds,
    });
  }
  const tokenizer = await Tokenizer.load(prepared.tokenizerPath);
  const spec = modelSpec(lock.recipe.model, tokenizer.vocabSize);
  const base = lock.base;
  // Continued pre-training starts from the base's weights, with rows for any added tokens.
  const fresh = base
    ? async () => {
        const b = await loadBase(base);
        resizeVocab(
          b.spec,
          b.weights,
          spec.vocabSize,
          (prepared.addedTokens ?? []).map((a) => a.id),
        );
        return b.weights;
      }
    : () => Promise.resolve(initWeights(spec, lock.recipe.seed));
  const ck = await resumePoint(rd, lock, sink, resuming);
  if (ck)
    return {
      spec,
      ...checkpointModel(ck, lock.recipe.train.lora !== undefined, rd.checkpointPath(ck.state.step)),
      weights: ck.weights ?? (await fresh()),
      optimizer: optimizerOf(ck),
      tokenizer,
      prepared,
      resume: { state: ck.state },
      referenceWeights: fresh,
    };
  const params = numParamsOf(spec);
  const added = prepared.addedTokens?.length
    ? `; added ${prepared.addedTokens.length} token(s) (${prepared.addedTokens.map((a) => `${JSON.stringify(a.content)}=${a.id}`).join(', ')}), their embedding rows at the mean of the base's`
    : '';
  if (!resuming)
    sink.event({
      type: 'started',
      step: 0,
      message: base
        ? `continued pre-training from ${base.kind === 'run' ? base.checkpoint : `the Hugging Face model ${base.path}`}: ${params.toLocaleString('en-US')} parameters on ${engineLabel(lock)}${added}${loraNote(spec, lock.recipe.train.lora)}`
        : `training ${params.toLocaleString('en-US')} parameters on ${engineLabel(lock)}${loraNote(spec, lock.recipe.train.lora)}`,
      params,
    });
  return { spec, weights: await fresh(), tokenizer, prepared, referenceWeights: fresh };
}

/** A post-training stage starts from its base (or a fresh model), or the checkpoint being resumed. */
async function startPost(rd: RunDir, lock: RecipeLock, sink: Sink, resuming: boolean): Promise<StageStart> {
  const r = lock.recipe as PostRecipe;
  await mkdir(rd.dataDir, { recursive: true });
  const tokPath = join(rd.dataDir, 'tokenizer.json');
  const referenceWeights = async () => {
    if (lock.base) return (await loadBase(lock.base)).weights;
    const tok = await Tokenizer.load(tokPath);
    return initWeights(modelSpec(r.model, tok.vocabSize), r.seed);
  };
  const ck = await resumePoint(rd, lock, sink, resuming, existsSync(tokPath));
  if (ck) {
    const tokenizer = await Tokenizer.load(tokPath);
    const spec = modelSpec(r.model, tokenizer.vocabSize);
    return {
      spec,
      ...checkpointModel(ck, r.train.lora !== undefined, rd.checkpointPath(ck.state.step)),
      weights: ck.weights ?? (await referenceWeights()),
      optimizer: optimizerOf(ck),
      tokenizer,
      resume: { state: ck.state },
      referenceWeights,
    };
  }
  let spec: ModelSpec;
  let weights: Weights;
  let tokenizer: Tokenizer;
  let from: string;
  if (lock.base) {
    ({ spec, weights, tokenizer } = await loadBase(lock.base));
    from = `from ${lock.base.kind === 'run' ? `${lock.base.checkpoint}` : `the Hugging Face model ${lock.base.path}`}`;
  } else {
    tokenizer = lock.tokenizer ? await Tokenizer.load(lock.tokenizer.path) : await trainPostTokenizer(lock);
    spec = modelSpec(r.model, tokenizer.vocabSize);
    weights = initWeights(spec, r.seed);
    from = 'from a fresh model (no `from`)';
  }
  await tokenizer.save(tokPath);
  const params = numParamsOf(spec);
  sink.event({
    type: 'started',
    step: 0,
    message: `${r.stage} ${from}: ${params.toLocaleString('en-US')} parameters on ${engineLabel(lock)}${loraNote(spec, r.train.lora)}`,
    params,
  });
  return { spec, weights, tokenizer, referenceWeights };
}
