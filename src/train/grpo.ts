import { tf } from '../engine/tfjs/tf.js';
import type { LanguageModel } from '../engine/tfjs/model.js';
import type { GrpoRecipe } from '../recipe/schema.js';
import { meanStd, openOnlineStage, rolloutAndJudge, type PromptItem } from './rollout.js';
import {
  round4,
  seqBatch,
  stepLoop,
  tokenLogProbs,
  tokenLogProbsData,
  Updater,
  type PostStageContext,
  type SeqBatch,
  type StageResult,
} from './stage.js';

// GRPO (Shao et al. 2024, DeepSeekMath) with verifiable rewards. Each step: sample a group of G
// completions per prompt; reward each with the recipe's reward function; advantage = (r − mean) / std
// within the group (std optional, as in Dr. GRPO); then `innerSteps` updates of the clipped objective
//   L = −mean_seq mean_tok [ min(ρ·A, clip(ρ, 1−ε, 1+ε)·A) − β·KL ],  ρ = π / π_old,
// with the k3 estimator KL = exp(ref − logπ) − (ref − logπ) − 1 to the frozen reference. Completions
// whose reward failed (threw, timed out, NaN) are left out of the group statistics and the loss.

/** A micro-batch of rollouts prepared for the update: sequences, advantages, old and reference log-probs. */
interface RolloutBatch {
  b: SeqBatch;
  adv: Float32Array;
  valid: Float32Array;
  old: Float32Array;
  ref?: Float32Array;
}

/** The GRPO objective of one micro-batch (inside a gradient scope). */
export function grpoLoss(model: LanguageModel, r: RolloutBatch, o: { clipEpsilon: number; beta: number }) {
  const { b } = r;
  const logp = tokenLogProbs(model, b);
  const valid = tf.tensor2d(r.valid, [b.batch, 1]);
  const mask = tf.mul(tf.tensor2d(b.mask, [b.batch, b.seq]), valid);
  const adv = tf.tensor2d(r.adv, [b.batch, 1]);
  const ratio = tf.exp(tf.sub(logp, tf.tensor2d(r.old, [b.batch, b.seq])));
  const s1 = tf.mul(ratio, adv);
  const s2 = tf.mul(tf.clipByValue(ratio, 1 - o.clipEpsilon, 1 + o.clipEpsilon), adv);
  let perToken = tf.neg(tf.minimum(s1, s2));
  let kl: tf.Tensor = tf.zerosLike(logp);
  if (r.ref) {
    const d = tf.sub(tf.tensor2d(r.ref, [b.batch, b.seq]), logp);
    kl = tf.sub(tf.sub(tf.exp(d), d), 1);
    if (o.beta > 0) perToken = tf.add(perToken, tf.mul(kl, o.beta));
  }
  const tokens = tf.sum(mask, 1);
  const perSeq = tf.div(tf.sum(tf.mul(perToken, mask), 1), tf.maximum(tokens, 1));
  const nValid = tf.maximum(tf.sum(valid), 1);
  const loss = tf.div(tf.sum(tf.mul(perSeq, tf.reshape(valid, [-1]))), nValid) as tf.Scalar;
  const nTok = tf.maximum(tf.sum(mask), 1);
  const klMean = tf.div(tf.sum(tf.mul(kl, mask)), nTok) as tf.Scalar;
  const clipped = tf.cast(tf.logicalAnd(tf.greater(mask, 0), tf.notEqual(s1, tf.minimum(s1, s2))), 'float32');
  const clipRatio = tf.div(tf.sum(clipped), nTok) as tf.Scalar;
  return { loss, report: [loss, klMean, clipRatio] };
}

/** Group-relative advantages: (r − mean) / (std + 1e-4) over the group's valid rewards (NaN = failed, advantage 0). */
export function groupAdvantages(rewards: number[], scale: boolean): number[] {
  const { mean, std } = meanStd(rewards);
  return rewards.map((r) => (Number.isFinite(r) ? (scale ? (r - mean) / (std + 1e-4) : r - mean) : 0));
}

/** Runs GRPO. */
export async function grpo(ctx: PostStageContext<GrpoRecipe>): Promise<StageResult> {
  const r = ctx.lock.recipe;
  const cfg = r.train;
  const { train, judge, errors, order, rng, sampling, evaluate } = await openOnlineStage(ctx, 0x9e0);
  const pad = ctx.tokenizer.special.pad;
  const reference = cfg.beta > 0 ? await ctx.reference() : undefined;
  const updater = new Updater(ctx.model, cfg, ctx.resume);
  try {
    return await stepLoop(
      ctx,
      { ...cfg, evalEvery: r.eval.every, evalOnStart: r.eval.onStart },
      {
        stage: 'grpo',
        updater,
        state: () => ({ sampler: order.position, extra: { rng: rng.state } }),
        async body(step, lr) {
          const prompts: PromptItem[] = order.take(cfg.batchSize * cfg.gradAccum).map((i) => train[i]!);
          const {
            groups,
            values: rewards,
            stepErrors,
          } = await rolloutAndJudge(ctx, prompts, cfg.groupSize, sampling, rng, judge, errors, step);
          const advantages = rewards.map((g) => groupAdvantages(g, cfg.scaleRewards));
          // Micro-batches of batchSize prompts × groupSize completions, with π_old and π_ref frozen for the inner updates.
          const micro: RolloutBatch[] = [];
          for (let m = 0; m < cfg.gradAccum; m++) {
            const idx = Array.from({ length: cfg.batchSize }, (_, k) => m * cfg.batchSize + k);
            const seqs = idx.flatMap((i) => groups[i]!.map((c) => ({ prompt: prompts[i]!.ids, completion: c.ids })));
            const b = seqBatch(seqs, pad);
            micro.push({
              b,
              adv: Float32Array.from(idx.flatMap((i) => advantages[i]!)),
              valid: Float32Array.from(idx.flatMap((i) => rewards[i]!.map((x) => (Number.isFinite(x) ? 1 : 0)))),
              old: await tokenLogProbsData(ctx.model, b),
              ref: reference ? await tokenLogProbsData(reference, b) : undefined,
            });
          }
          let last = { gradNorm: 0, reports: [] as number[][] };
          let kl = 0;
          let clip = 0;
          let loss = 0;
          for (let k = 0; k < cfg.innerSteps; k++) {
            last = await updater.update(cfg.gradAccum, lr, (i) => grpoLoss(ctx.model, micro[i]!, cfg));
            loss += last.reports.reduce((a, x) => a + x[0]!, 0) / cfg.gradAccum / cfg.innerSteps;
            kl += last.reports.reduce((a, x) => a + x[1]!, 0) / cfg.gradAccum / cfg.innerSteps;
            clip += last.reports.reduce((a, x) => a + x[2]!, 0) / cfg.gradAccum / cfg.innerSteps;
          }
          const all = rewards.flat();
          const stats = meanStd(all);
          const lengths = groups.flat().map((c) => c.ids.length);
          const zeroStd = rewards.filter((g) => meanStd(g).std === 0).length;
          return {
            metrics: {
              loss,
              grad_norm: last.gradNorm,
              reward_mean: round4(stats.mean),
              reward_std: round4(stats.std),
              kl,
              clip_ratio: round4(clip),
              completion_length: round4(lengths.reduce((a, x) => a + x, 0) / lengths.length),
              reward_errors: stepErrors,
              frac_reward_zero_std: round4(zeroStd / rewards.length),
              epoch: round4(order.epochs()),
            },
            tokens: micro.reduce((a, m) => a + m.b.batch * m.b.seq, 0) * cfg.innerSteps,
          };
        },
        evaluate,
      },
    );
  } finally {
    updater.dispose();
    reference?.dispose();
    await judge.close();
  }
}
