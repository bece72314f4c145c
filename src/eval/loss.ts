import type { TokenBatch } from '../data/batches.js';
import type { Engine } from '../engine/engine.js';

/** Mean cross-entropy over fixed held-out batches (no gradients); undefined without batches. */
export async function evaluateLoss(engine: Engine, batches: TokenBatch[]): Promise<number | undefined> {
  if (!batches.length) return undefined;
  let sum = 0;
  for (const b of batches) sum += (await engine.forward(b, { name: 'cross_entropy' })).loss;
  return sum / batches.length;
}
