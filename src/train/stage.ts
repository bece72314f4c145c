import { tf } from '../engine/tfjs/tf.js';
import { describeResult } from '../eval/suite.js';
import { TrainingEvals } from '../eval/training.js';
import type { SamplerState } from '../data/batches.js';
import type { LanguageModel } from '../engine/tfjs/model.js';
import type { RecipeLock } from '../recipe/lock.js';
import type { PostRecipe } from '../recipe/schema.js';
import { saveCheckpoint, type CheckpointState, type Weights } from '../runs/checkpoint.js';
import { restoreOptimizer } from '../engine/tfjs/optimizer.js';
import type { Metric, RunDir, RunEvent } from '../runs/rundir.js';
import { Rng } from '../random.js';
import type { Tokenizer } from '../tokenizer/index.js';
import { AdamW } from '../engine/tfjs/optimizer.js';
import type { StageResult, StopSignal } from './pretrain.js';
import { learningRate } from './schedule.js';

// The step machinery shared by the post-training stages (SFT, DPO, online DPO, GRPO): AdamW with
// accumulation and global-norm clipping, the step loop (logging, eval, checkpoints, interrupt,
// clean failure), per-token log-probabilities, and a restorable example order.

/** What a post-training stage gets from the executor. */
export interface PostStageContext<R extends PostRecipe = PostRecipe> {
  lock: RecipeLock & { recipe: R };
  rd: RunDir;
  /** The policy: the starting model (or the checkpoint being resumed). */
  model: LanguageModel;
  /** The frozen reference: the starting model's weights, loaded on demand; the stage disposes it. */
  reference(): Promise<LanguageModel>;
  tokenizer: Tokenizer;
  resume?: { state: CheckpointState; moments?: { m: Weights; v: Weights } };
  /** True on a fresh start (not a resume): the stage announces its data. */
  fresh: boolean;
  stop: StopSignal;
  /** Stop as if interrupted once this step is done. */
  stopAfter?: number;
  emit(m: Metric): void;
  event(e: Omit<RunEvent, 'time'>): void;
}

/** A stage that cannot go on (a reward that keeps failing, say): the loop stops cleanly with a checkpoint and this message. */
export class StageFailure extends Error {}

/** Optimizer and schedule fields every post-training stage has. */
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

/** AdamW over a model's parameters, with accumulation and clipping. */
export class Updater {
  readonly opt: AdamW;
  private readonly vars: tf.Variable[];
  private readonly varNames: Map<string, string>;

  constructor(
    model: LanguageModel,
    private readonly cfg: StepConfig,
    resume?: PostStageContext['resume'],
  ) {
    const decay = new Set(model.paramSpecs.filter((p) => p.decay).map((p) => p.name));
    this.opt = new AdamW(model.params, decay, cfg);
    if (resume?.moments) restoreOptimizer(this.opt, resume.moments, resume.state.optimizerStep);
    this.varNames = new Map([...model.params].map(([name, v]) => [v.name, name]));
    this.vars = [...model.params.values()];
  }

  /**
   * One optimizer update over `micro` micro-batches: `loss(i)` builds micro-batch i's loss (inside a
   * gradient scope) and may return scalars to report; their values come back per micro-batch.
   */
  async update(
    micro: number,
    lr: number,
    loss: (i: number) => { loss: tf.Scalar; report?: tf.Scalar[] },
  ): Promise<{ gradNorm: number; reports: number[][] }> {
    let acc: Map<string, tf.Tensor> | undefined;
    const kept: tf.Tensor[][] = [];
    for (let i = 0; i < micro; i++) {
      let report: tf.Tensor[] = [];
      const { value, grads } = tf.variableGrads(() => {
        const l = loss(i);
        report = (l.report ?? []).map((t) => tf.keep(t.clone()));
        return l.loss;
      }, this.vars);
      value.dispose();
      kept.push(report);
      if (!acc) acc = new Map(Object.entries(grads).map(([k, g]) => [this.varNames.get(k)!, g]));
      else {
        for (const [k, g] of Object.entries(grads)) {
          const name = this.varNames.get(k)!;
          const sum = tf.add(acc.get(name)!, g);
          acc.get(name)!.dispose();
          g.dispose();
          acc.set(name, sum);
        }
      }
    }
    let grads = acc!;
    if (micro > 1) {
      const scaled = new Map([...grads].map(([k, g]) => [k, tf.mul(g, 1 / micro)]));
      tf.dispose([...grads.values()]);
      grads = scaled;
    }
    const gradNorm = tf.tidy(() => tf.sqrt(tf.addN([...grads.values()].map((g) => tf.sum(tf.square(g))))));
    const normValue = (await gradNorm.data())[0]!;
    if (this.cfg.gradClip > 0 && normValue > this.cfg.gradClip) {
      const c = this.cfg.gradClip / normValue;
      for (const [k, g] of grads) {
        grads.set(k, tf.mul(g, c));
        g.dispose();
      }
    }
    if (Number.isFinite(normValue)) this.opt.step(grads, lr);
    const reports: number[][] = [];
    for (const r of kept) reports.push(await Promise.all(r.map(async (t) => (await t.data())[0]!)));
    tf.dispose([...grads.values(), gradNorm, ...kept.flat()]);
    return { gradNorm: normValue, reports };
  }

  dispose(): void {
    this.opt.dispose();
  }
}

/** Mean of column j over micro-batch reports. */
export function meanOf(reports: number[][], j: number): number {
  return reports.reduce((a, r) => a + r[j]!, 0) / reports.length;
}

/** What one step of a stage returns: its metrics (step, stage and lr are added) and the tokens it trained on. */
export interface StepOutput {
  metrics: Record<string, number | number[] | string | undefined>;
  tokens: number;
}

/**
 * The step loop of a post-training stage: runs `body` for each step, writes metrics (always with
 * step and stage), evaluates and checkpoints on schedule, and stops cleanly on an interrupt, a
 * non-finite loss or a {@link StageFailure} (with a checkpoint at the last finished step and a message).
 */
export async function stepLoop(
  ctx: PostStageContext,
  cfg: StepConfig & { evalEvery: number; evalOnStart?: boolean },
  hooks: {
    stage: string;
    updater: Updater;
    /** The checkpointed data position and stage state (RNG states) after the last finished step. */
    state(): { sampler: SamplerState; extra?: Record<string, unknown> };
    body(step: number, lr: number): Promise<StepOutput>;
    evaluate?(step: number): Promise<Record<string, number>>;
  },
): Promise<StageResult> {
  const { rd, lock } = ctx;
  const suites = await TrainingEvals.load(lock.recipe.eval, lock.baseDir);
  let step = ctx.resume?.state.step ?? 0;
  let tokens = ctx.resume?.state.tokens ?? 0;
  let seconds = ctx.resume?.state.seconds ?? 0;
  let lastLoss: number | undefined;
  let lastEval: number | undefined;
  // State as of the end of the last finished step: what a checkpoint written after a failure holds.
  let snapshot = hooks.state();
  const checkpoint = async (at: number, snap = snapshot) => {
    const state: CheckpointState = {
      step: at,
      stage: hooks.stage,
      lockId: lock.id,
      optimizerStep: hooks.updater.opt.t,
      sampler: snap.sampler,
      tokens,
      seconds,
      extra: snap.extra,
    };
    const path = await saveCheckpoint(rd, await ctx.model.weights(), await hooks.updater.opt.moments(), state);
    ctx.event({ type: 'checkpoint', step: at, message: `checkpoint at step ${at}`, path });
  };
  const saveIfMissing = async () => {
    if (!(await rd.checkpointSteps()).includes(step)) await checkpoint(step);
  };
  if (cfg.evalOnStart && hooks.evaluate && step === 0)
    ctx.emit({ step: 0, stage: hooks.stage, ...(await hooks.evaluate(0)) });
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
    const loss = typeof m.loss === 'number' ? m.loss : undefined;
    lastLoss = loss;
    if (loss !== undefined && !Number.isFinite(loss)) {
      ctx.emit(m);
      const message = `loss is ${loss} at step ${step}; stopping. The last checkpoint is intact; lower train.lr or raise warmup`;
      ctx.event({ type: 'failed', step, message });
      return { status: 'failed', step, tokens, seconds, loss, error: `loss diverged at step ${step}` };
    }
    const evalDue = hooks.evaluate && ((cfg.evalEvery > 0 && step % cfg.evalEvery === 0) || step === cfg.steps);
    if (evalDue) {
      const ev = await hooks.evaluate!(step);
      Object.assign(m, ev);
      if (typeof ev.eval_loss === 'number') lastEval = ev.eval_loss;
    }
    const suitesDue = suites.due(step, step === cfg.steps);
    if (suitesDue) {
      const { metrics, results } = await suites.run(ctx.model, ctx.tokenizer, step, step === cfg.steps);
      Object.assign(m, metrics);
      ctx.event({ type: 'eval', step, message: results.map(describeResult).join('; ') });
    }
    if (step % cfg.logEvery === 0 || step === cfg.steps || evalDue || suitesDue) ctx.emit(m);
    if ((cfg.checkpointEvery > 0 && step % cfg.checkpointEvery === 0) || step === cfg.steps) await checkpoint(step);
    if (ctx.stopAfter !== undefined && step >= ctx.stopAfter && step < cfg.steps) ctx.stop.reason ??= 'interrupt';
  }
  if (ctx.stop.reason) {
    await saveIfMissing();
    const status = ctx.stop.reason === 'cancel' ? 'cancelled' : 'interrupted';
    ctx.event({ type: status, step, message: `${status} at step ${step}` });
    return { status, step, loss: lastLoss, evalLoss: lastEval, tokens, seconds };
  }
  return { status: 'completed', step, loss: lastLoss, evalLoss: lastEval, tokens, seconds };
}

/** Sequences of prompt + completion as a batch, with the completion's target positions marked. */
export interface SeqBatch {
  inputs: Int32Array;
  targets: Int32Array;
  /** 1 where the target is a completion token. */
  mask: Float32Array;
  batch: number;
  seq: number;
}

/** Packs (prompt, completion) pairs into a right-padded batch; T = the longest sequence minus one. */
export function seqBatch(seqs: { prompt: number[]; completion: number[] }[], pad: number): SeqBatch {
  const batch = seqs.length;
  const seq = Math.max(1, ...seqs.map((s) => s.prompt.length + s.completion.length - 1));
  const inputs = new Int32Array(batch * seq).fill(pad);
  const targets = new Int32Array(batch * seq).fill(pad);
  const mask = new Float32Array(batch * seq);
  seqs.forEach((s, b) => {
    const ids = [...s.prompt, ...s.completion];
    for (let t = 0; t + 1 < ids.length; t++) {
      inputs[b * seq + t] = ids[t]!;
      targets[b * seq + t] = ids[t + 1]!;
      if (t + 1 >= s.prompt.length) mask[b * seq + t] = 1;
    }
  });
  return { inputs, targets, mask, batch, seq };
}

/** log p(target) at every position [B, T]. Call inside a tidy or a gradient scope. */
export function tokenLogProbs(
  model: LanguageModel,
  b: { inputs: Int32Array; targets: Int32Array; batch: number; seq: number },
): tf.Tensor2D {
  const ids = tf.tensor2d(b.inputs, [b.batch, b.seq], 'int32');
  const { logits } = model.forward(ids);
  const logp = tf.logSoftmax(logits, -1);
  const onehot = tf.oneHot(tf.tensor1d(b.targets, 'int32'), model.spec.vocabSize);
  return tf.reshape(tf.sum(tf.mul(logp, onehot), -1), [b.batch, b.seq]) as tf.Tensor2D;
}

/** Summed completion log-probability per sequence [B]. Call inside a tidy or a gradient scope. */
export function sequenceLogProbs(model: LanguageModel, b: SeqBatch): tf.Tensor1D {
  return tf.sum(tf.mul(tokenLogProbs(model, b), tf.tensor2d(b.mask, [b.batch, b.seq])), 1) as tf.Tensor1D;
}

/** Per-token log-probs as plain arrays (no gradient). */
export async function tokenLogProbsData(model: LanguageModel, b: SeqBatch): Promise<Float32Array> {
  const t = tf.tidy(() => tokenLogProbs(model, b));
  const d = (await t.data()) as Float32Array;
  t.dispose();
  return d;
}

/** A seeded, restorable order over n examples: a fresh permutation each epoch; the state is (epoch, index). */
export class ExampleOrder {
  private state: { epoch: number; index: number };
  private perm?: Uint32Array;
  private permEpoch = -1;

  constructor(
    private readonly n: number,
    private readonly seed: number,
    private readonly salt: number,
    state?: SamplerState,
  ) {
    if (n <= 0) throw new Error('ExampleOrder needs at least one example');
    this.state = state?.sources[0] ? { ...state.sources[0] } : { epoch: 0, index: 0 };
  }

  get position(): SamplerState {
    return { sources: [{ ...this.state }] };
  }

  /** Epochs so far (fractional). */
  epochs(): number {
    return this.state.epoch + this.state.index / this.n;
  }

  /** The next k example indices. */
  take(k: number): number[] {
    const out: number[] = [];
    for (let i = 0; i < k; i++) {
      if (this.permEpoch !== this.state.epoch) {
        const perm = this.perm ?? new Uint32Array(this.n);
        for (let j = 0; j < this.n; j++) perm[j] = j;
        const rng = Rng.derive(this.seed, this.salt, this.state.epoch);
        for (let j = this.n - 1; j > 0; j--) {
          const r = rng.int(j + 1);
          const t = perm[j]!;
          perm[j] = perm[r]!;
          perm[r] = t;
        }
        this.perm = perm;
        this.permEpoch = this.state.epoch;
      }
      out.push(this.perm![this.state.index]!);
      if (++this.state.index >= this.n) {
        this.state.index = 0;
        this.state.epoch++;
      }
    }
    return out;
  }
}

/** Rounds for metrics (4 significant decimals are plenty for rates and means). */
export function round4(x: number): number {
  return Math.round(x * 1e4) / 1e4;
}

export type { StageResult, StopSignal } from './pretrain.js';
