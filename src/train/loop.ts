import type { PreparedData } from '../data/prepare.js';
import type { Engine, LossReport } from '../engine/engine.js';
import { describeResult } from '../eval/suite.js';
import { TrainingEvals } from '../eval/training.js';
import type { Weights } from '../model/weights.js';
import type { RecipeLock } from '../recipe/lock.js';
import type { ResolvedRecipe } from '../recipe/schema.js';
import { pruneCheckpoints, saveCheckpoint, type CheckpointState } from '../runs/checkpoint.js';
import type { Metric, RunDir, RunEvent, RunStatus } from '../runs/rundir.js';
import type { SamplerState } from '../data/batches.js';
import type { Tokenizer } from '../tokenizer/index.js';
import { RankMonitor } from './ranks.js';
import { learningRate } from './schedule.js';

// Optimizer steps' per-rank work, until the step loop reads it into the step's metric line.
const rankWork = new WeakMap<Engine, RankMonitor>();

// The one step loop under every stage (pretrain, SFT, DPO, online DPO, GRPO): it runs a stage's
// step body, writes metrics (always with step and stage), evaluates and checkpoints on schedule, and
// stops cleanly on an interrupt, a cancel, a non-finite loss or a StageFailure, with a checkpoint at
// the last finished step. Stages own the algorithm; the engine owns the tensors.

/** Why a run stops early; set from outside (interrupt button, cancel, signal handler). */
export interface StopSignal {
  reason?: 'interrupt' | 'cancel';
}

/** How a stage ended. */
export interface StageResult {
  status: Exclude<RunStatus, 'running'>;
  step: number;
  loss?: number;
  evalLoss?: number;
  tokens: number;
  seconds: number;
  error?: string;
}

/** What a stage gets from its executor. */
export interface StageContext<R extends ResolvedRecipe = ResolvedRecipe> {
  lock: RecipeLock & { recipe: R };
  rd: RunDir;
  /** The engine holding the trained model (the starting model, or the checkpoint being resumed). */
  engine: Engine;
  tokenizer: Tokenizer;
  /**
   * The frozen reference for `engine.setReference`: the starting model's weights, loaded on demand;
   * with LoRA `'base'`, the frozen base with the adapters switched off.
   */
  referenceWeights(): Promise<Weights | 'base'>;
  /** Pretrain: the prepared token data. */
  prepared?: PreparedData;
  resume?: { state: CheckpointState };
  /** True on a fresh start (not a resume): the stage announces its data. */
  fresh: boolean;
  stop: StopSignal;
  /** Stop as if interrupted once this step is done (tests, and `--stop-after`). */
  stopAfter?: number;
  emit(m: Metric): void;
  event(e: Omit<RunEvent, 'time'>): void;
}

/** A stage that cannot go on (a reward that keeps failing, say): the loop stops cleanly with a checkpoint and this message. */
export class StageFailure extends Error {}

/** Optimizer, schedule and cadence fields every stage's `train` section has. */
export interface StepConfig {
  steps: number;
  gradAccum: number;
  lr: number;
  minLr: number;
  warmupSteps: number;
  weightDecay: number;
  beta1: number;
  beta2: number;
  eps: number;
  gradClip: number;
  logEvery: number;
  checkpointEvery: number;
}

/** What one step of a stage returns: its metrics (step, stage and lr are added) and the tokens it trained on. */
export interface StepOutput {
  metrics: Record<string, number | number[] | string | undefined>;
  tokens: number;
}

/** A stage as the loop runs it. */
export interface StageHooks {
  stage: string;
  /** The checkpointed data position and stage state (RNG states) after the last finished step. */
  state(): { sampler: SamplerState; extra?: Record<string, unknown> };
  /** One optimizer step's work: batches, forward/backward, optimize (see {@link optimize}). */
  body(step: number, lr: number): Promise<StepOutput>;
  /** Held-out metrics (`eval_loss` among them when the stage has one). */
  evaluate?(step: number): Promise<Record<string, number>>;
  /** Model FLOPs per trained token: adds `gflops` to each step's metrics. */
  flopsPerToken?: number;
}

/**
 * One optimizer step on the engine's accumulated gradients. A non-finite gradient norm skips the
 * update (the engine leaves weights and moments as they were) and is recorded as a `skipped` event.
 */
export async function optimize(ctx: Pick<StageContext, 'engine' | 'event'>, step: number, lr: number): Promise<number> {
  const r = await ctx.engine.optimStep(lr);
  if (r.ranks) {
    let mon = rankWork.get(ctx.engine);
    if (!mon) rankWork.set(ctx.engine, (mon = new RankMonitor()));
    mon.record(r.ranks);
  }
  if (r.skipped) {
    ctx.event({
      type: 'skipped',
      step,
      message: `gradient norm is ${r.gradNorm} at step ${step}: the optimizer step was skipped (weights and optimizer state unchanged)`,
    });
  }
  return r.gradNorm;
}

/**
 * One step's micro-batches (`calls`, each starting one forwardBackward), then {@link optimize}. On an
 * engine that queues steps the optimizer step is called before the reports are read, so the step's
 * numbers come back in one read after its last kernel is queued; a failed micro-batch fails the step
 * with its own error, and the engine makes no update.
 */
export async function stepOn(
  ctx: Pick<StageContext, 'engine' | 'event'>,
  step: number,
  lr: number,
  calls: (() => Promise<LossReport>)[],
): Promise<{ reports: LossReport[]; gradNorm: number }> {
  const pending = calls.map((c) => c());
  if (!ctx.engine.queuesSteps) {
    const reports = await Promise.all(pending);
    return { reports, gradNorm: await optimize(ctx, step, lr) };
  }
  const [reports, stepped] = await Promise.allSettled([Promise.all(pending), optimize(ctx, step, lr)]);
  if (reports.status === 'rejected') throw reports.reason;
  if (stepped.status === 'rejected') throw stepped.reason;
  return { reports: reports.value, gradNorm: stepped.value };
}

/** Runs a stage's steps from the checkpoint it resumes (or step 0) to `cfg.steps`, or until it stops. */
export async function stepLoop(
  ctx: StageContext,
  cfg: StepConfig & { evalEvery: number; evalOnStart?: boolean },
  hooks: StageHooks,
): Promise<StageResult> {
  const { rd, lock, engine } = ctx;
  const suites = await TrainingEvals.load(lock.recipe.eval, lock.baseDir);
  try {
    let step = ctx.resume?.state.step ?? 0;
    let tokens = ctx.resume?.state.tokens ?? 0;
    let seconds = ctx.resume?.state.seconds ?? 0;
    let lastLoss: number | undefined;
    let lastEval: number | undefined;
    // State as of the end of the last finished step: what a checkpoint written after a failure holds.
    let snapshot = hooks.state();
    // Metric lines since the last checkpoint ride in the next one, so a resume can restore them.
    let recent: Metric[] = [];
    const emit = (m: Metric) => {
      recent.push(m);
      ctx.emit(m);
    };
    const retention = { keep: 3, keepEvery: 0, keepBest: true, ...lock.recipe.checkpoints };
    const checkpoint = async (at: number, evalLoss?: number) => {
      const state: CheckpointState = {
        step: at,
        stage: hooks.stage,
        lockId: lock.id,
        optimizerStep: engine.optimizerSteps,
        sampler: snapshot.sampler,
        tokens,
        seconds,
        extra: snapshot.extra,
        evalLoss,
        metrics: recent,
        // A LoRA checkpoint names the base its adapters belong to.
        lora: lock.recipe.train.lora && { base: lock.base?.sha256 ?? 'init' },
      };
      const path = await saveCheckpoint(rd, state, (dir) => engine.saveTensors(dir));
      recent = [];
      ctx.event({ type: 'checkpoint', step: at, message: `checkpoint at step ${at}`, path });
      const pruned = await pruneCheckpoints(rd, retention);
      if (pruned.length)
        ctx.event({
          type: 'notice',
          step: at,
          message: `deleted checkpoint${pruned.length > 1 ? 's' : ''} ${pruned.join(', ')} (checkpoints.keep ${retention.keep}${retention.keepEvery ? `, keepEvery ${retention.keepEvery}` : ''}${retention.keepBest ? ', and the best by eval loss' : ''})`,
        });
    };
    const saveIfMissing = async () => {
      if (!(await rd.checkpointSteps()).includes(step)) await checkpoint(step);
    };
    if (cfg.evalOnStart && hooks.evaluate && step === 0)
      emit({ step: 0, stage: hooks.stage, ...(await hooks.evaluate(0)) });
    while (step < cfg.steps) {
      // cpu/wasm reads settle without a macrotask turn; yield one per step so signals, comms and timers run.
      await new Promise<void>((r) => setImmediate(r));
      if (ctx.stop.reason) break;
      const lr = learningRate(step + 1, cfg);
      const t0 = performance.now();
      let out: StepOutput;
      try {
        out = await hooks.body(step + 1, lr);
      } catch (e) {
        if (!(e instanceof StageFailure)) throw e;
        // The failing step changed no weights: the state at the last finished step is intact.
        await saveIfMissing();
        const message = `${e.message}; stopped with a checkpoint at step ${step}`;
        ctx.event({ type: 'failed', step, message });
        return { status: 'failed', step, tokens, seconds, loss: lastLoss, evalLoss: lastEval, error: message };
      }
      step++;
      snapshot = hooks.state();
      const dt = (performance.now() - t0) / 1000;
      seconds += dt;
      tokens += out.tokens;
      const m: Metric = {
        step,
        stage: hooks.stage,
        ...out.metrics,
        lr,
        tokens,
        tokens_per_s: out.tokens / dt,
        step_ms: Math.round(dt * 1000),
      };
      if (hooks.flopsPerToken) m.gflops = (hooks.flopsPerToken * out.tokens) / dt / 1e9;
      const ranks = rankWork.get(engine)?.take(step);
      if (ranks) {
        Object.assign(m, ranks.metrics);
        if (ranks.straggler) ctx.event({ type: 'notice', step, message: ranks.straggler });
      }
      const loss = typeof m.loss === 'number' ? m.loss : undefined;
      lastLoss = loss;
      if (loss !== undefined && !Number.isFinite(loss)) {
        emit(m);
        const message = `loss is ${loss} at step ${step}; stopping. The last checkpoint is intact; lower train.lr or raise warmup`;
        ctx.event({ type: 'failed', step, message });
        return { status: 'failed', step, tokens, seconds, loss, error: `loss diverged at step ${step}` };
      }
      const evalDue = hooks.evaluate && ((cfg.evalEvery > 0 && step % cfg.evalEvery === 0) || step === cfg.steps);
      let evalLoss: number | undefined;
      if (evalDue) {
        const ev = await hooks.evaluate!(step);
        Object.assign(m, ev);
        if (typeof ev.eval_loss === 'number') lastEval = evalLoss = ev.eval_loss;
      }
      const suitesDue = suites.due(step, step === cfg.steps);
      if (suitesDue) {
        const { metrics, results } = await suites.run(engine, ctx.tokenizer, step, step === cfg.steps);
        Object.assign(m, metrics);
        ctx.event({ type: 'eval', step, message: results.map(describeResult).join('; ') });
      }
      if (step % cfg.logEvery === 0 || step === cfg.steps || evalDue || suitesDue) emit(m);
      if ((cfg.checkpointEvery > 0 && step % cfg.checkpointEvery === 0) || step === cfg.steps)
        await checkpoint(step, evalLoss);
      if (ctx.stopAfter !== undefined && step >= ctx.stopAfter && step < cfg.steps) ctx.stop.reason ??= 'interrupt';
    }
    if (ctx.stop.reason) {
      await saveIfMissing();
      const status = ctx.stop.reason === 'cancel' ? 'cancelled' : 'interrupted';
      ctx.event({ type: status, step, message: `${status} at step ${step}` });
      return { status, step, loss: lastLoss, evalLoss: lastEval, tokens, seconds };
    }
    return { status: 'completed', step, loss: lastLoss, evalLoss: lastEval, tokens, seconds };
  } finally {
    await suites.close();
  }
}

/** Mean of a value over micro-batch reports, summed in order. */
export function meanOf<T>(reports: readonly T[], pick: (r: T) => number): number {
  return reports.reduce((a, r) => a + pick(r), 0) / reports.length;
}

/** Rounds for metrics (4 significant decimals are plenty for rates and means). */
export function round4(x: number): number {
  return Math.round(x * 1e4) / 1e4;
}
