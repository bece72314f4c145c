import { evaluateLoss } from '../eval/loss.js';
import { tf } from '../engine/tfjs/tf.js';
import { describeResult } from '../eval/suite.js';
import { TrainingEvals } from '../eval/training.js';
import { BatchSampler, evalBatches } from '../data/batches.js';
import type { PreparedData } from '../data/prepare.js';
import type { LanguageModel } from '../engine/tfjs/model.js';
import type { RecipeLock } from '../recipe/lock.js';
import { saveCheckpoint, type CheckpointState, type Weights } from '../runs/checkpoint.js';
import { restoreOptimizer } from '../engine/tfjs/optimizer.js';
import type { Metric, RunDir, RunEvent, RunStatus } from '../runs/rundir.js';
import type { Tokenizer } from '../tokenizer/index.js';
import { lmLoss } from '../engine/tfjs/losses.js';
import { AdamW } from '../engine/tfjs/optimizer.js';
import { learningRate } from './schedule.js';

/** Why a run stops early; set from outside (interrupt button, cancel, signal handler). */
export interface StopSignal {
  reason?: 'interrupt' | 'cancel';
}

/** What a stage runner gets from the executor. */
export interface StageContext {
  lock: RecipeLock;
  rd: RunDir;
  model: LanguageModel;
  tokenizer: Tokenizer;
  prepared: PreparedData;
  resume?: { state: CheckpointState; moments?: { m: Weights; v: Weights } };
  stop: StopSignal;
  /** Stop as if interrupted once this step is done (tests, and `--until`). */
  stopAfter?: number;
  emit(m: Metric): void;
  event(e: Omit<RunEvent, 'time'>): void;
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

/** Forward+backward FLOPs per token (6N plus attention), for the throughput meter. */
export function flopsPerToken(model: LanguageModel): number {
  const s = model.spec;
  const active =
    s.arch === 'moe' ? model.numParams - s.layers * (s.experts - s.topK) * 3 * s.dim * s.ffnDim : model.numParams;
  return 6 * active + 12 * s.layers * s.dim * s.context;
}

/**
 * Pre-training: causal LM (optionally with fill-in-the-middle), AdamW, warmup + cosine,
 * global-norm clipping, gradient accumulation, periodic held-out eval and checkpoints.
 */
export async function pretrain(ctx: StageContext): Promise<StageResult> {
  const { lock, model, prepared, rd } = ctx;
  const r = lock.recipe;
  if (r.stage !== 'pretrain') throw new Error(`pretrain() got a ${r.stage} recipe`);
  const cfg = r.train;
  const seq = model.spec.context;
  const special = ctx.tokenizer.special;
  const start = ctx.resume?.state.step ?? 0;
  const suites = await TrainingEvals.load(r.eval, lock.baseDir);
  const sampler = new BatchSampler(
    prepared.sources,
    {
      seq,
      batch: cfg.batchSize,
      seed: r.seed,
      fimRate: cfg.fimRate,
      fim: { prefix: special.fimPrefix, suffix: special.fimSuffix, middle: special.fimMiddle },
    },
    ctx.resume?.state.sampler,
  );
  const evals = evalBatches(prepared.sources, { seq, batch: cfg.batchSize, count: r.eval.batches });
  const decay = new Set(model.paramSpecs.filter((p) => p.decay).map((p) => p.name));
  const opt = new AdamW(model.params, decay, cfg);
  if (ctx.resume?.moments) restoreOptimizer(opt, ctx.resume.moments, ctx.resume.state.optimizerStep);
  const varNames = new Map([...model.params].map(([name, v]) => [v.name, name]));
  const vars = [...model.params.values()];
  const flops = flopsPerToken(model);
  let tokens = ctx.resume?.state.tokens ?? 0;
  let seconds = ctx.resume?.state.seconds ?? 0;
  let lastLoss: number | undefined;
  let lastEval: number | undefined;
  let step = start;

  const checkpoint = async () => {
    const state: CheckpointState = {
      step,
      stage: 'pretrain',
      lockId: lock.id,
      optimizerStep: opt.t,
      sampler: sampler.position,
      tokens,
      seconds,
    };
    const path = await saveCheckpoint(rd, await model.weights(), await opt.moments(), state);
    ctx.event({ type: 'checkpoint', step, message: `checkpoint at step ${step}`, path });
  };

  try {
    while (step < cfg.steps) {
      // cpu/wasm reads settle without a macrotask turn; yield one per step so signals, comms and timers run.
      await new Promise<void>((r) => setImmediate(r));
      if (ctx.stop.reason) break;
      step++;
      const t0 = performance.now();
      const lr = learningRate(step, cfg);
      // Accumulate gradients over micro-batches, then clip by global norm and step.
      let acc: Map<string, tf.Tensor> | undefined;
      const parts: tf.Tensor[] = [];
      for (let micro = 0; micro < cfg.gradAccum; micro++) {
        const batch = sampler.next(step, micro);
        let util: tf.Tensor | undefined;
        let extra: tf.Tensor[] = [];
        const { value, grads } = tf.variableGrads(() => {
          const l = lmLoss(model, batch);
          // Clones: for a dense model `total` is `ce` itself, and value is disposed below.
          extra = [tf.keep(l.ce.clone()), tf.keep(l.balance.clone()), tf.keep(l.z.clone())];
          if (l.utilization) util = tf.keep(l.utilization);
          return l.total;
        }, vars);
        value.dispose();
        parts.push(...extra);
        if (util) parts.push(util);
        if (!acc) acc = new Map(Object.entries(grads).map(([k, g]) => [varNames.get(k)!, g]));
        else {
          for (const [k, g] of Object.entries(grads)) {
            const name = varNames.get(k)!;
            const prev = acc.get(name);
            // An MoE expert that no token chose in earlier micro-batches has no gradient yet.
            if (!prev) {
              acc.set(name, g);
              continue;
            }
            acc.set(name, tf.add(prev, g));
            prev.dispose();
            g.dispose();
          }
        }
      }
      let grads = acc!;
      if (cfg.gradAccum > 1) {
        const scaled = new Map([...grads].map(([k, g]) => [k, tf.mul(g, 1 / cfg.gradAccum)]));
        tf.dispose([...grads.values()]);
        grads = scaled;
      }
      const gradNorm = tf.tidy(() => tf.sqrt(tf.addN([...grads.values()].map((g) => tf.sum(tf.square(g))))));
      const normValue = (await gradNorm.data())[0]!;
      if (cfg.gradClip > 0 && normValue > cfg.gradClip) {
        const c = cfg.gradClip / normValue;
        for (const [k, g] of grads) {
          grads.set(k, tf.mul(g, c));
          g.dispose();
        }
      }
      opt.step(grads, lr);
      const per = parts.length / cfg.gradAccum;
      const read = await Promise.all(parts.map((p) => p.data()));
      tf.dispose([...grads.values(), gradNorm, ...parts]);

      const mean = (j: number) => read.filter((_, i) => i % per === j).reduce((a, d) => a + d[0]!, 0) / cfg.gradAccum;
      const loss = mean(0);
      const stepTokens = cfg.batchSize * cfg.gradAccum * seq;
      tokens += stepTokens;
      const dt = (performance.now() - t0) / 1000;
      seconds += dt;
      lastLoss = loss;
      const m: Metric = {
        step,
        stage: 'pretrain',
        loss,
        lr,
        grad_norm: normValue,
        tokens,
        tokens_per_s: stepTokens / dt,
        gflops: (flops * stepTokens) / dt / 1e9,
      };
      if (model.spec.arch === 'moe') {
        m.aux_loss = mean(1);
        m.z_loss = mean(2);
        const util = new Float64Array(model.spec.experts);
        for (let i = 3; i < read.length; i += per) read[i]!.forEach((v, e) => (util[e]! += v / cfg.gradAccum));
        m.expert_util = Array.from(util, (u) => Math.round(u * 1e4) / 1e4);
      }
      if (!Number.isFinite(loss)) {
        ctx.emit(m);
        ctx.event({
          type: 'failed',
          step,
          message: `loss is ${loss} at step ${step}; stopping. The last checkpoint is intact; lower train.lr or raise warmup`,
        });
        return { status: 'failed', step, tokens, seconds, loss, error: `loss diverged at step ${step}` };
      }
      const evalDue = (r.eval.every > 0 && step % r.eval.every === 0) || step === cfg.steps;
      if (evalDue && evals.length) {
        lastEval = await evaluateLoss(model, evals);
        m.eval_loss = lastEval;
      }
      const epochs = sampler.epochs();
      m.epoch = Math.round(Math.max(...epochs) * 1e4) / 1e4;
      const suitesDue = suites.due(step, step === cfg.steps);
      if (suitesDue) {
        const { metrics, results } = await suites.run(model, ctx.tokenizer, step, step === cfg.steps);
        Object.assign(m, metrics);
        ctx.event({ type: 'eval', step, message: results.map(describeResult).join('; ') });
      }
      if (step % cfg.logEvery === 0 || step === cfg.steps || evalDue || suitesDue) ctx.emit(m);
      if ((cfg.checkpointEvery > 0 && step % cfg.checkpointEvery === 0) || step === cfg.steps) await checkpoint();
      if (ctx.stopAfter !== undefined && step >= ctx.stopAfter && step < cfg.steps) ctx.stop.reason ??= 'interrupt';
    }
    if (ctx.stop.reason) {
      const saved = await ctx.rd.checkpointSteps();
      if (!saved.includes(step)) await checkpoint();
      const status = ctx.stop.reason === 'cancel' ? 'cancelled' : 'interrupted';
      ctx.event({ type: status, step, message: `${status} at step ${step}` });
      return { status, step, loss: lastLoss, evalLoss: lastEval, tokens, seconds };
    }
    return { status: 'completed', step, loss: lastLoss, evalLoss: lastEval, tokens, seconds };
  } finally {
    await suites.close();
    sampler.close();
    opt.dispose();
  }
}
