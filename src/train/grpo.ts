import type { PolicyGradientLoss } from '../engine/engine.js';
import type { GrpoRecipe } from '../recipe/schema.js';
import { seqBatch, type SeqBatch } from './batch.js';
import { round4, stepLoop, stepOn, type StageContext, type StageResult } from './loop.js';
import { meanStd, openOnlineStage, rolloutAndJudge, type PromptItem } from './rollout.js';

// GRPO (Shao et al. 2024, DeepSeekMath) with verifiable rewards. Each step: sample a group of G
// completions per prompt; reward each with the recipe's reward function; advantage = (r − mean) / std
// within the group (std optional, as in Dr. GRPO); then `innerSteps` updates of the clipped objective
//   L = −mean_seq mean_tok [ min(ρ·A, clip(ρ, 1−ε, 1+ε)·A) − β·KL ],  ρ = π / π_old,
// with the k3 estimator KL = exp(ref − logπ) − (ref − logπ) − 1 to the frozen reference. Completions
// whose reward failed (threw, timed out, NaN) are left out of the group statistics and the loss.

/** A micro-batch of rollouts prepared for the update: sequences, and the policy-gradient loss with π_old and π_ref frozen. */
interface RolloutBatch {
  b: SeqBatch;
  loss: PolicyGradientLoss;
}

/** Group-relative advantages: (r − mean) / (std + 1e-4) over the group's valid rewards (NaN = failed, advantage 0). */
export function groupAdvantages(rewards: number[], scale: boolean): number[] {
  const { mean, std } = meanStd(rewards);
  return rewards.map((r) => (Number.isFinite(r) ? (scale ? (r - mean) / (std + 1e-4) : r - mean) : 0));
}

/** Runs GRPO. */
export async function grpo(ctx: StageContext<GrpoRecipe>): Promise<StageResult> {
  const r = ctx.lock.recipe;
  const cfg = r.train;
  const { engine } = ctx;
  const { train, judge, errors, order, rng, sampling, evaluate } = await openOnlineStage(ctx, 0x9e0);
  const pad = ctx.tokenizer.special.pad;
  try {
    if (cfg.beta > 0) await engine.setReference(await ctx.referenceWeights());
    return await stepLoop(
      ctx,
      { ...cfg, evalEvery: r.eval.every, evalOnStart: r.eval.onStart },
      {
        stage: 'grpo',
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
              loss: {
                name: 'policy_gradient',
                advantages: Float32Array.from(idx.flatMap((i) => advantages[i]!)),
                valid: Float32Array.from(idx.flatMap((i) => rewards[i]!.map((x) => (Number.isFinite(x) ? 1 : 0)))),
                old: await engine.logprobs(b),
                reference: cfg.beta > 0 ? await engine.logprobs(b, { reference: true }) : undefined,
                clipEpsilon: cfg.clipEpsilon,
                beta: cfg.beta,
              },
            });
          }
          let gradNorm = 0;
          let kl = 0;
          let clip = 0;
          let loss = 0;
          for (let k = 0; k < cfg.innerSteps; k++) {
            const calls = micro.map((m) => () => engine.forwardBackward(m.b, m.loss));
            const { reports, gradNorm: norm } = await stepOn(ctx, step, lr, calls);
            gradNorm = norm;
            loss += reports.reduce((a, x) => a + x.loss, 0) / cfg.gradAccum / cfg.innerSteps;
            kl += reports.reduce((a, x) => a + (x.values.kl as number), 0) / cfg.gradAccum / cfg.innerSteps;
            clip += reports.reduce((a, x) => a + (x.values.clip_ratio as number), 0) / cfg.gradAccum / cfg.innerSteps;
          }
          const all = rewards.flat();
          const stats = meanStd(all);
          const lengths = groups.flat().map((c) => c.ids.length);
          const zeroStd = rewards.filter((g) => meanStd(g).std === 0).length;
          return {
            metrics: {
              loss,
              grad_norm: gradNorm,
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
    await judge.close();
  }
}
