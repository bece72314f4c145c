import { tf } from '../engine/tfjs/tf.js';
import type { PairExample } from '../data/pairs.js';
import type { OnlineDpoRecipe } from '../recipe/schema.js';
import { dpoLoss, pairBatch, referenceLogProbs } from './dpo.js';
import { meanStd, openOnlineStage, rolloutAndJudge, type PromptItem } from './rollout.js';
import {
  meanOf,
  round4,
  sequenceLogProbs,
  seqBatch,
  stepLoop,
  tokenLogProbsData,
  Updater,
  type PostStageContext,
  type StageResult,
} from './stage.js';

// Online DPO (Guo et al. 2024): each step the policy samples k completions per prompt, a judge
// scores them (a reward function, or a reward-model run's mean log-prob), and the best and the worst
// completion of each prompt form a DPO pair, trained with the sigmoid DPO loss against the frozen
// starting model. Prompts whose completions all score the same give no pair (counted in `ties`).
// `kl` is the mean over all sampled completions of Σ_t (log π − log π_ref), a sequence-level estimate.

/** Runs online DPO. */
export async function onlineDpo(ctx: PostStageContext<OnlineDpoRecipe>): Promise<StageResult> {
  const r = ctx.lock.recipe;
  const cfg = r.train;
  const { train, judge, errors, order, rng, sampling, evaluate } = await openOnlineStage(ctx, 0x0d9);
  const pad = ctx.tokenizer.special.pad;
  const reference = await ctx.reference();
  const updater = new Updater(ctx.model, cfg, ctx.resume);
  try {
    return await stepLoop(
      ctx,
      { ...cfg, evalEvery: r.eval.every, evalOnStart: r.eval.onStart },
      {
        stage: 'online-dpo',
        updater,
        state: () => ({ sampler: order.position, extra: { rng: rng.state } }),
        async body(step, lr) {
          const prompts: PromptItem[] = order.take(cfg.batchSize * cfg.gradAccum).map((i) => train[i]!);
          const {
            groups,
            values: scores,
            stepErrors,
          } = await rolloutAndJudge(ctx, prompts, cfg.samplesPerPrompt, sampling, rng, judge, errors, step);
          // KL to the reference over every sampled completion (no gradient).
          const all = seqBatch(
            prompts.flatMap((p, i) => groups[i]!.map((c) => ({ prompt: p.ids, completion: c.ids }))),
            pad,
          );
          const [pl, rl] = [await tokenLogProbsData(ctx.model, all), await tokenLogProbsData(reference, all)];
          let kl = 0;
          for (let s = 0; s < all.batch; s++)
            for (let t = 0; t < all.seq; t++)
              if (all.mask[s * all.seq + t]) kl += pl[s * all.seq + t]! - rl[s * all.seq + t]!;
          kl /= all.batch;
          // Best vs worst per prompt.
          const pairs: PairExample[] = [];
          let ties = 0;
          prompts.forEach((p, i) => {
            const g = scores[i]!;
            let best = -1;
            let worst = -1;
            g.forEach((s, k) => {
              if (!Number.isFinite(s) && s !== -Infinity) return;
              if (best < 0 || s > g[best]!) best = k;
              if (worst < 0 || s < g[worst]!) worst = k;
            });
            if (best < 0 || g[best] === g[worst]) {
              ties++;
              return;
            }
            pairs.push({
              prompt: p.ids,
              chosen: groups[i]![best]!.ids,
              rejected: groups[i]![worst]!.ids,
              truncated: false,
            });
          });
          const stats = meanStd(scores.flat());
          const lengths = groups.flat().map((c) => c.ids.length);
          const metrics: Record<string, number> = {
            reward_mean: round4(stats.mean),
            reward_std: round4(stats.std),
            kl,
            pairs: pairs.length,
            ties,
            completion_length: round4(lengths.reduce((a, x) => a + x, 0) / lengths.length),
            reward_errors: stepErrors,
            epoch: round4(order.epochs()),
          };
          if (!Number.isFinite(stats.mean)) delete metrics.reward_mean;
          if (!Number.isFinite(stats.std)) delete metrics.reward_std;
          if (!pairs.length) return { metrics, tokens: 0 };
          // Pairs split into up to gradAccum micro-batches.
          const nChunks = Math.min(cfg.gradAccum, pairs.length);
          const chunks = Array.from({ length: nChunks }, (_, m) => pairs.filter((_, k) => k % nChunks === m));
          const batches = chunks.map((c) => pairBatch(c, pad));
          const refs = batches.map((b) => referenceLogProbs(reference, b));
          try {
            const { gradNorm, reports } = await updater.update(batches.length, lr, (i) =>
              dpoLoss(sequenceLogProbs(ctx.model, batches[i]!), refs[i]!, chunks[i]!.length, cfg.beta, 0),
            );
            Object.assign(metrics, {
              loss: meanOf(reports, 0),
              grad_norm: gradNorm,
              'rewards/chosen': meanOf(reports, 1),
              'rewards/rejected': meanOf(reports, 2),
              'rewards/margins': meanOf(reports, 3),
              'rewards/accuracies': round4(meanOf(reports, 4)),
            });
          } finally {
            tf.dispose(refs);
          }
          return { metrics, tokens: batches.reduce((a, b) => a + b.batch * b.seq, 0) };
        },
        evaluate,
      },
    );
  } finally {
    updater.dispose();
    reference.dispose();
    await judge.close();
  }
}
