import type { PairExample } from '../data/pairs.js';
import type { OnlineDpoRecipe } from '../recipe/schema.js';
import { seqBatch } from './batch.js';
import { dpoMetrics, pairBatch } from './dpo.js';
import { round4, stepLoop, stepOn, type StageContext, type StageResult } from './loop.js';
import { meanStd, openOnlineStage, rolloutAndJudge, type PromptItem } from './rollout.js';

// Online DPO (Guo et al. 2024): each step the policy samples k completions per prompt, a judge
// scores them (a reward function, or a reward-model run's mean log-prob), and the best and the worst
// completion of each prompt form a DPO pair, trained with the sigmoid DPO loss against the frozen
// starting model. Prompts whose completions all score the same give no pair (counted in `ties`).
// `kl` is the mean over all sampled completions of Σ_t (log π − log π_ref), a sequence-level estimate.

/** Runs online DPO. */
export async function onlineDpo(ctx: StageContext<OnlineDpoRecipe>): Promise<StageResult> {
  const r = ctx.lock.recipe;
  const cfg = r.train;
  const { engine } = ctx;
  const { train, judge, errors, order, rng, sampling, evaluate } = await openOnlineStage(ctx, 0x0d9);
  const pad = ctx.tokenizer.special.pad;
  try {
    await engine.setReference(await ctx.referenceWeights());
    return await stepLoop(
      ctx,
      { ...cfg, evalEvery: r.eval.every, evalOnStart: r.eval.onStart },
      {
        stage: 'online-dpo',
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
          const [pl, rl] = [await engine.logprobs(all), await engine.logprobs(all, { reference: true })];
          let kl = 0;
          for (let s = 0; s < all.batch; s++)
            for (let t = 0; t < all.seq; t++)
              if (all.weights[s * all.seq + t]) kl += pl[s * all.seq + t]! - rl[s * all.seq + t]!;
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
          const calls = batches.map(
            (b, i) => () =>
              engine.forwardBackward(b, {
                name: 'dpo',
                pairs: chunks[i]!.length,
                reference: 'engine',
                beta: cfg.beta,
                labelSmoothing: 0,
              }),
          );
          const { reports, gradNorm } = await stepOn(ctx, step, lr, calls);
          Object.assign(metrics, { ...dpoMetrics(reports), grad_norm: gradNorm });
          return { metrics, tokens: batches.reduce((a, b) => a + b.batch * b.seq, 0) };
        },
        evaluate,
      },
    );
  } finally {
    await judge.close();
  }
}
