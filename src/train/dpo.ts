import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { tf } from '../engine/tfjs/tf.js';
import { pairExample, type PairExample } from '../data/pairs.js';
import { readPostRows, type PostManifest } from '../data/post.js';
import type { LanguageModel } from '../engine/tfjs/model.js';
import type { DpoRecipe } from '../recipe/schema.js';
import { announce, noRowsError } from './sft.js';
import {
  ExampleOrder,
  meanOf,
  round4,
  sequenceLogProbs,
  seqBatch,
  stepLoop,
  Updater,
  type PostStageContext,
  type StageResult,
} from './stage.js';

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

/** The DPO loss and its reported parts from policy and reference sequence log-probs [2B] (chosen then rejected). */
export function dpoLoss(policy: tf.Tensor1D, ref: tf.Tensor1D, n: number, beta: number, smoothing: number) {
  const pc = tf.slice(policy, 0, n);
  const pr = tf.slice(policy, n, n);
  const rc = tf.slice(ref, 0, n);
  const rr = tf.slice(ref, n, n);
  const chosen = tf.sub(pc, rc);
  const rejected = tf.sub(pr, rr);
  const logits = tf.mul(tf.sub(chosen, rejected), beta);
  // −log σ(x) = softplus(−x) (tf.logSigmoid's custom gradient breaks inside variableGrads).
  let losses = tf.softplus(tf.neg(logits));
  if (smoothing > 0) losses = tf.add(tf.mul(losses, 1 - smoothing), tf.mul(tf.softplus(logits), smoothing));
  const loss = tf.mean(losses) as tf.Scalar;
  return {
    loss,
    report: [
      loss,
      tf.mean(tf.mul(chosen, beta)) as tf.Scalar,
      tf.mean(tf.mul(rejected, beta)) as tf.Scalar,
      tf.mean(logits) as tf.Scalar,
      tf.mean(tf.cast(tf.greater(logits, 0), 'float32')) as tf.Scalar,
      tf.mean(pc) as tf.Scalar,
      tf.mean(pr) as tf.Scalar,
    ],
  };
}

/** Reference log-probs of a batch (no gradient), kept for the update. */
export function referenceLogProbs(reference: LanguageModel, b: ReturnType<typeof pairBatch>): tf.Tensor1D {
  return tf.tidy(() => sequenceLogProbs(reference, b));
}

/**
 * Preference metrics on fixed pairs: `rewards/accuracies` (implicit reward of chosen above rejected),
 * `pref_accuracy` (the policy's log-prob of chosen above rejected, no reference), margins and loss.
 */
export async function evaluatePairs(
  model: LanguageModel,
  reference: LanguageModel,
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
    const [pol, ref] = tf.tidy(() => [sequenceLogProbs(model, b), sequenceLogProbs(reference, b)]);
    const p = (await pol!.data()) as Float32Array;
    const r = (await ref!.data()) as Float32Array;
    tf.dispose([pol!, ref!]);
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
  ctx: Pick<PostStageContext<DpoRecipe>, 'lock' | 'rd' | 'tokenizer'>,
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

/** Runs DPO. */
export async function dpo(ctx: PostStageContext<DpoRecipe>): Promise<StageResult> {
  const r = ctx.lock.recipe;
  const cfg = r.train;
  const { train, val, manifest } = await preparePairs(ctx);
  announce(ctx, manifest, 'pairs');
  if (!train.length) throw noRowsError(manifest, 'pairs');
  const pad = ctx.tokenizer.special.pad;
  const order = new ExampleOrder(train.length, r.seed, 0xd90, ctx.resume?.state.sampler);
  const evalPairs = val.slice(0, r.eval.batches * cfg.batchSize);
  const reference = await ctx.reference();
  const updater = new Updater(ctx.model, cfg, ctx.resume);
  try {
    return await stepLoop(
      ctx,
      { ...cfg, evalEvery: r.eval.every, evalOnStart: r.eval.onStart },
      {
        stage: 'dpo',
        updater,
        state: () => ({ sampler: order.position }),
        async body(_step, lr) {
          const batches = Array.from({ length: cfg.gradAccum }, () =>
            pairBatch(
              order.take(cfg.batchSize).map((i) => train[i]!),
              pad,
            ),
          );
          const refs = batches.map((b) => referenceLogProbs(reference, b));
          try {
            const { gradNorm, reports } = await updater.update(cfg.gradAccum, lr, (i) =>
              dpoLoss(sequenceLogProbs(ctx.model, batches[i]!), refs[i]!, cfg.batchSize, cfg.beta, cfg.labelSmoothing),
            );
            return {
              metrics: {
                loss: meanOf(reports, 0),
                grad_norm: gradNorm,
                'rewards/chosen': meanOf(reports, 1),
                'rewards/rejected': meanOf(reports, 2),
                'rewards/margins': meanOf(reports, 3),
                'rewards/accuracies': round4(meanOf(reports, 4)),
                'logps/chosen': meanOf(reports, 5),
                'logps/rejected': meanOf(reports, 6),
                epoch: round4(order.epochs()),
              },
              tokens: batches.reduce((a, b) => a + b.batch * b.seq, 0),
            };
          } finally {
            tf.dispose(refs);
          }
        },
        evaluate: evalPairs.length
          ? async () => {
              const e = (await evaluatePairs(ctx.model, reference, evalPairs, {
                batch: cfg.batchSize,
                beta: cfg.beta,
                pad,
              }))!;
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
  } finally {
    updater.dispose();
    reference.dispose();
  }
}
