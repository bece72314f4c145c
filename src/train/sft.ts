import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fitExample, sftEvalBatches, sftExample, SftSampler, type SftExample } from '../data/chat.js';
import { readPostRows, type PostManifest } from '../data/post.js';
import { LatheError } from '../errors.js';
import type { CrossEntropyLoss, Engine } from '../engine/engine.js';
import type { SftRecipe } from '../recipe/schema.js';
import type { TokenBatch } from '../data/batches.js';
import { meanOf, round4, stepLoop, stepOn, type StageContext, type StageResult } from './loop.js';

// Supervised fine-tuning: chat rows rendered with the tokenizer's chat template, the loss on
// assistant tokens only (a per-token weight: lmLoss's masked cross-entropy), whole conversations
// packed into context windows. Metrics: loss and token_accuracy over assistant tokens.

const CE_ACCURACY: CrossEntropyLoss = { name: 'cross_entropy', accuracy: true };

/** Mean assistant-token loss and accuracy over fixed batches, weighted by assistant tokens. */
export async function evaluateSft(
  engine: Engine,
  batches: TokenBatch[],
): Promise<{ loss: number; accuracy: number } | undefined> {
  if (!batches.length) return undefined;
  let loss = 0;
  let acc = 0;
  let weight = 0;
  for (const b of batches) {
    const w = b.weights!.reduce((a, x) => a + x, 0);
    if (!w) continue;
    const r = await engine.forward(b, CE_ACCURACY);
    loss += r.loss * w;
    acc += (r.values.accuracy as number) * w;
    weight += w;
  }
  return weight ? { loss: loss / weight, accuracy: acc / weight } : undefined;
}

/** Reads, checks and tokenizes a SFT lock's chats; writes data/rows.json. */
export async function prepareSft(
  ctx: Pick<StageContext<SftRecipe>, 'lock' | 'rd' | 'tokenizer' | 'event'>,
): Promise<{ train: SftExample[]; val: SftExample[]; manifest: PostManifest }> {
  const r = ctx.lock.recipe;
  const max = r.model.context + 1;
  let truncated = 0;
  const rows = await readPostRows(ctx.lock, (doc) => sftExample(doc, ctx.tokenizer, r.train.assistantOnly));
  // Cut to the context; a conversation whose trained tokens were all cut off is dropped (counted as cut).
  const fit = (xs: { value: SftExample }[]) =>
    xs.flatMap((x) => {
      const f = fitExample(x.value, max);
      if (f.truncated) truncated++;
      return f.ex.mask.some((v, i) => v && i > 0) ? [f.ex] : [];
    });
  const train = fit(rows.train);
  const val = fit(rows.val);
  const manifest: PostManifest = {
    stage: 'sft',
    lock: ctx.lock.id,
    examples: { train: train.length, val: val.length },
    rejected: rows.rejected,
    rejections: rows.rejections,
    duplicates: rows.duplicates,
    truncated,
    tokens: { train: train.reduce((a, e) => a + e.ids.length, 0), val: val.reduce((a, e) => a + e.ids.length, 0) },
    vocabSize: ctx.tokenizer.vocabSize,
  };
  await writeFile(join(ctx.rd.dataDir, 'rows.json'), JSON.stringify(manifest, null, 1));
  return { train, val, manifest };
}

/** Runs SFT. */
export async function sft(ctx: StageContext<SftRecipe>): Promise<StageResult> {
  const r = ctx.lock.recipe;
  const cfg = r.train;
  const { engine } = ctx;
  const seq = engine.spec.context;
  const { train, val, manifest } = await prepareSft(ctx);
  announce(ctx, manifest, 'conversations');
  if (!train.length) throw noRowsError(manifest, 'conversations');
  const pad = ctx.tokenizer.special.pad;
  const sampler = new SftSampler(
    train,
    { seq, batch: cfg.batchSize, seed: r.seed, pad, packing: cfg.packing },
    ctx.resume?.state.sampler,
  );
  const evals = sftEvalBatches(val, { seq, batch: cfg.batchSize, count: r.eval.batches, pad, packing: cfg.packing });
  return stepLoop(
    ctx,
    { ...cfg, evalEvery: r.eval.every, evalOnStart: r.eval.onStart },
    {
      stage: 'sft',
      state: () => ({ sampler: sampler.position }),
      async body(step, lr) {
        const batches = Array.from({ length: cfg.gradAccum }, () => sampler.next());
        const calls = batches.map((b) => () => engine.forwardBackward(b, CE_ACCURACY));
        const { reports, gradNorm } = await stepOn(ctx, step, lr, calls);
        const trained = batches.reduce((a, b) => a + b.weights!.reduce((x, y) => x + y, 0), 0);
        return {
          metrics: {
            loss: meanOf(reports, (x) => x.loss),
            token_accuracy: round4(meanOf(reports, (x) => x.values.accuracy as number)),
            grad_norm: gradNorm,
            assistant_tokens: trained,
            examples: batches.reduce((a, b) => a + b.examples, 0),
            epoch: round4(sampler.epochs()),
          },
          tokens: batches.length * cfg.batchSize * seq,
        };
      },
      evaluate: evals.length
        ? async (): Promise<Record<string, number>> => {
            const e = await evaluateSft(engine, evals);
            return e ? { eval_loss: e.loss, eval_token_accuracy: round4(e.accuracy) } : {};
          }
        : undefined,
    },
  );
}

/** The error when no training rows are left, with the first rejection's file:line and reason. */
export function noRowsError(m: PostManifest, what: string): LatheError {
  const first = m.rejections[0];
  return new LatheError(
    `data: no training ${what} left (${m.rejected} rejected${first ? `, first ${first.file}:${first.line}: ${first.reason}` : ''}; ${m.examples.val} held out); check the data or lower data.valFraction`,
  );
}

/** The 'prepared' event of a post-training stage (fresh starts only). */
export function announce(ctx: Pick<StageContext, 'fresh' | 'event'>, m: PostManifest, what: string): void {
  if (!ctx.fresh) return;
  const first = m.rejections[0];
  ctx.event({
    type: 'prepared',
    message: `data ready: ${m.examples.train} ${what} for training, ${m.examples.val} held out; ${m.duplicates} duplicates removed, ${m.rejected} rows rejected${first ? ` (first: ${first.file}:${first.line}: ${first.reason})` : ''}${m.truncated ? `, ${m.truncated} cut to fit the context` : ''}`,
    rejected: m.rejected,
  });
}
