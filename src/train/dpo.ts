import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { pairExample, type PairExample } from '../data/pairs.js';
import { readPostRows, type PostManifest } from '../data/post.js';
import type { Engine, LossReport } from '../engine/engine.js';
import type { DpoRecipe } from '../recipe/schema.js';
import { ExampleOrder, seqBatch } from './batch.js';
import { meanOf, round4, stepLoop, stepOn, type StageContext, type StageResult } from './loop.js';
import { announce, noRowsError } from './sft.js';

// DPO (Rafailov et al. 2023), sigmoid loss: with h = (log π(y_w) − log π_ref(y_w)) − (log π(y_l) − log π_ref(y_l)),
// loss = −(1−ε)·log σ(β·h) − ε·log σ(−β·h) (ε = labelSmoothing; 0 is plain DPO). The reference is the
// starting model, frozen. Implicit rewards: β·(log π − log π_ref) of chosen and rejected.

/** A pair batch: chosen sequences first, then rejected ones. */
export function pairBatch(pairs: PairExample[], pad: number) {
  return seqBatch(
    [
      ...pairs.map((p) => ({ prompt: p.prompt, completion: p.chosen })),
      ...pairs.map((p) => ({ prompt: p.prompt, completion: p.rejected })),
    ],
    pad,
  );
}

/**
 * Preference metrics on fixed pairs: `rewards/accuracies` (implicit reward of chosen above rejected),
 * `pref_accuracy` (the policy's log-prob of chosen above rejected, no reference), margins and loss.
 */
export async function evaluatePairs(
  engine: Engine,
  pairs: PairExample[],
  o: { batch: number; beta: number; pad: number },
): Promise<{ loss: number; accuracy: number; prefAccuracy: number; margin: number } | undefined> {
  if (!pairs.length) return undefined;
  let loss = 0;
  let acc = 0;
  let pref = 0;
  let margin = 0;
  for (let i = 0; i < pairs.length; i += o.batch) {
    const chunk = pairs.slice(i, i + o.batch);
    const b = pairBatch(chunk, o.pad);
    const p = await engine.logprobs(b, { sum: true });
    const r = await engine.logprobs(b, { sum: true, reference: true });
    const n = chunk.length;
    for (let k = 0; k < n; k++) {
      const h = o.beta * (p[k]! - r[k]! - (p[n + k]! - r[n + k]!));
      loss += h > 0 ? Math.log1p(Math.exp(-h)) : -h + Math.log1p(Math.exp(h));
      margin += h;
      if (h > 0) acc++;
      if (p[k]! > p[n + k]!) pref++;
    }
  }
  const n = pairs.length;
  return { loss: loss / n, accuracy: acc / n, prefAccuracy: pref / n, margin: margin / n };
}

/** Reads, checks and tokenizes a DPO lock's pairs; writes data/rows.json. */
export async function preparePairs(
  ctx: Pick<StageContext<DpoRecipe>, 'lock' | 'rd' | 'tokenizer'>,
): Promise<{ train: PairExample[]; val: PairExample[]; manifest: PostManifest }> {
  const r = ctx.lock.recipe;
  const rows = await readPostRows(ctx.lock, (doc) => pairExample(doc, ctx.tokenizer, r.model.context));
  const train = rows.train.map((x) => x.value);
  const val = rows.val.map((x) => x.value);
  const len = (p: PairExample) => 2 * p.prompt.length + p.chosen.length + p.rejected.length;
  const manifest: PostManifest = {
    stage: 'dpo',
    lock: ctx.lock.id,
    examples: { train: train.length, val: val.length },
    rejected: rows.rejected,
    rejections: rows.rejections,
    duplicates: rows.duplicates,
    truncated: [...train, ...val].filter((p) => p.truncated).length,
    tokens: { train: train.reduce((a, p) => a + len(p), 0), val: val.reduce((a, p) => a + len(p), 0) },
    vocabSize: ctx.tokenizer.vocabSize,
  };
  await writeFile(join(ctx.rd.dataDir, 'rows.json'), JSON.stringify(manifest, null, 1));
  return { train, val, manifest };
}

/** The DPO metrics of a step from its micro-batch reports. */
export function dpoMetrics(reports: LossReport[]): Record<string, number> {
  const mean = (k: string) => meanOf(reports, (x) => x.values[k] as number);
  return {
    loss: meanOf(reports, (x) => x.loss),
    'rewards/chosen': mean('rewards/chosen'),
    'rewards/rejected': mean('rewards/rejected'),
    'rewards/margins': mean('rewards/margins'),
    'rewards/accuracies': round4(mean('rewards/accuracies')),
  };
}

/** Runs DPO. */
export async function dpo(ctx: StageContext<DpoRecipe>): Promise<StageResult> {
  const r = ctx.lock.recipe;
  const cfg = r.train;
  const { engine } = ctx;
  const { train, val, manifest } = await preparePairs(ctx);
  announce(ctx, manifest, 'pairs');
  if (!train.length) throw noRowsError(manifest, 'pairs');
  const pad = ctx.tokenizer.special.pad;
  const order = new ExampleOrder(train.length, r.seed, 0xd90, ctx.resume?.state.sampler);
  const evalPairs = val.slice(0, r.eval.batches * cfg.batchSize);
  await engine.setReference(await ctx.referenceWeights());
  return stepLoop(
    ctx,
    { ...cfg, evalEvery: r.eval.every, evalOnStart: r.eval.onStart },
    {
      stage: 'dpo',
      state: () => ({ sampler: order.position }),
      async body(step, lr) {
        const batches = Array.from({ length: cfg.gradAccum }, () =>
          pairBatch(
            order.take(cfg.batchSize).map((i) => train[i]!),
            pad,
          ),
        );
        // The engine computes the reference's log-probs itself (on webgpu: no read back before the step).
        const calls = batches.map(
          (b) => () =>
            engine.forwardBackward(b, {
              name: 'dpo',
              pairs: cfg.batchSize,
              reference: 'engine',
              beta: cfg.beta,
              labelSmoothing: cfg.labelSmoothing,
            }),
        );
        const { reports, gradNorm } = await stepOn(ctx, step, lr, calls);
        return {
          metrics: {
            ...dpoMetrics(reports),
            grad_norm: gradNorm,
            'logps/chosen': meanOf(reports, (x) => x.values['logps/chosen'] as number),
            'logps/rejected': meanOf(reports, (x) => x.values['logps/rejected'] as number),
            epoch: round4(order.epochs()),
          },
          tokens: batches.reduce((a, b) => a + b.batch * b.seq, 0),
        };
      },
      evaluate: evalPairs.length
        ? async () => {
            const e = (await evaluatePairs(engine, evalPairs, { batch: cfg.batchSize, beta: cfg.beta, pad }))!;
            return {
              eval_loss: e.loss,
              'eval_rewards/accuracies': round4(e.accuracy),
              eval_pref_accuracy: round4(e.prefAccuracy),
              'eval_rewards/margins': e.margin,
            };
          }
        : undefined,
    },
  );
}
