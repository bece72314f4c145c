import { tf } from '../engine/tfjs/tf.js';
import { lmLoss } from '../engine/tfjs/losses.js';
import type { LanguageModel } from '../engine/tfjs/model.js';
import type { TokenBatch } from '../data/batches.js';

/** Mean loss over fixed held-out batches. */
export async function evaluateLoss(model: LanguageModel, batches: TokenBatch[]): Promise<number | undefined> {
  if (!batches.length) return undefined;
  let sum = 0;
  for (const b of batches) {
    const t = tf.tidy(() => lmLoss(model, b).ce);
    sum += (await t.data())[0]!;
    t.dispose();
  }
  return sum / batches.length;
}
