import { BatchSampler, evalBatches } from '../data/batches.js';
import type { CrossEntropyLoss } from '../engine/engine.js';
import { evaluateLoss } from '../eval/loss.js';
import { flopsPerToken } from '../model/spec.js';
import type { PretrainRecipe } from '../recipe/schema.js';
import { meanOf, round4, stepLoop, stepOn, type StageContext, type StageResult } from './loop.js';

const CE: CrossEntropyLoss = { name: 'cross_entropy' };

/**
 * Pre-training: causal LM (optionally with fill-in-the-middle), AdamW, warmup + cosine,
 * global-norm clipping, gradient accumulation, periodic held-out eval and checkpoints. With `from`
 * it continues a base model's pre-training (execute.ts starts from its weights), optionally mixing
 * in replay data.
 */
export async function pretrain(ctx: StageContext<PretrainRecipe>): Promise<StageResult> {
  const { lock, engine } = ctx;
  const r = lock.recipe;
  const prepared = ctx.prepared;
  if (!prepared) throw new Error('pretrain needs prepared data');
  const cfg = r.train;
  const seq = engine.spec.context;
  const special = ctx.tokenizer.special;
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
  // With replay, the held-out loss of the new data and of the replayed data, each on its own: what
  // continued pre-training learns, and what it forgets.
  const split = prepared.sources.some((s) => s.replay)
    ? (['new', 'replay'] as const).map((k) => ({
        key: `eval_loss_${k}`,
        batches: evalBatches(
          prepared.sources.filter((s) => Boolean(s.replay) === (k === 'replay')),
          { seq, batch: cfg.batchSize, count: r.eval.batches },
        ),
      }))
    : [];
  const moe = engine.spec.arch === 'moe';
  try {
    return await stepLoop(
      ctx,
      { ...cfg, evalEvery: r.eval.every, evalOnStart: r.eval.onStart },
      {
        stage: 'pretrain',
        flopsPerToken: flopsPerToken(engine.spec),
        state: () => ({ sampler: sampler.position }),
        async body(step, lr) {
          // Accumulate gradients over micro-batches, then clip by global norm and step.
          const calls = Array.from({ length: cfg.gradAccum }, (_, micro) => {
            const batch = sampler.next(step, micro);
            return () => engine.forwardBackward(batch, CE);
          });
          const { reports, gradNorm } = await stepOn(ctx, step, lr, calls);
          const metrics: Record<string, number | number[]> = {
            loss: meanOf(reports, (x) => x.loss),
            grad_norm: gradNorm,
          };
          if (moe) {
            metrics.aux_loss = meanOf(reports, (x) => x.values.aux_loss as number);
            metrics.z_loss = meanOf(reports, (x) => x.values.z_loss as number);
            const util = new Float64Array(engine.spec.experts);
            for (const x of reports)
              (x.values.expert_util as number[]).forEach((v, e) => (util[e]! += v / cfg.gradAccum));
            metrics.expert_util = Array.from(util, (u) => round4(u));
          }
          metrics.epoch = round4(Math.max(...sampler.epochs()));
          return { metrics, tokens: cfg.batchSize * cfg.gradAccum * seq };
        },
        evaluate: evals.length
          ? async () => {
              const out: Record<string, number> = { eval_loss: (await evaluateLoss(engine, evals))! };
              for (const s of split) if (s.batches.length) out[s.key] = (await evaluateLoss(engine, s.batches))!;
              return out;
            }
          : undefined,
      },
    );
  } finally {
    sampler.close();
  }
}
