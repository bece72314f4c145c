import { Rng } from '../random.js';
import { paramSpecsOf, type ModelSpec } from './spec.js';

/** Tensors by HF parameter name, as plain arrays: what checkpoints, imports and engines exchange. */
export type Weights = Map<string, { shape: number[]; data: Float32Array }>;

/**
 * A model's initial weights under a seed: normal(0, initStd) for matrices, scaled by 1/sqrt(2 layers)
 * for the projections into the residual stream, ones for norm gains, zeros for biases. Every engine starts from these.
 */
export function initWeights(spec: ModelSpec, seed: number): Weights {
  const rng = new Rng(seed);
  const out: Weights = new Map();
  const scaledStd = spec.initStd / Math.sqrt(2 * spec.layers);
  for (const ps of paramSpecsOf(spec)) {
    const size = ps.shape.reduce((a, b) => a * b, 1);
    const data = new Float32Array(size);
    if (ps.init === 'ones') data.fill(1);
    else if (ps.init !== 'zeros') {
      const std = ps.init === 'scaled' ? scaledStd : spec.initStd;
      for (let i = 0; i < size; i++) data[i] = rng.normal() * std;
    }
    out.set(ps.name, { shape: ps.shape, data });
  }
  return out;
}
