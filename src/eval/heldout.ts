import { evalBatches } from '../data/batches.js';
import type { PreparedData } from '../data/prepare.js';
import { loadModel } from '../runs/index.js';
import { RunDir } from '../runs/rundir.js';
import { evaluateLoss } from './loss.js';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';

/** Held-out loss and perplexity of a run's latest checkpoint on its own validation split. */
export async function heldOut(
  dir: string,
  opts: { batches?: number } = {},
): Promise<{ step: number; loss: number; perplexity: number; batches: number }> {
  const rd = RunDir.open(dir);
  const lock = rd.readLock();
  const prepared = JSON.parse(await readFile(join(rd.dataDir, 'prepared.json'), 'utf8')) as PreparedData;
  const { model, step } = await loadModel(dir);
  try {
    const batches = evalBatches(prepared.sources, {
      seq: model.spec.context,
      batch: lock.recipe.train.batchSize,
      count: opts.batches ?? lock.recipe.eval.batches,
    });
    const loss = (await evaluateLoss(model, batches)) ?? NaN;
    return { step, loss, perplexity: Math.exp(loss), batches: batches.length };
  } finally {
    await model.dispose();
  }
}
