import type { ModelSpec } from '../model/spec.js';
import type { Weights } from '../model/weights.js';
import type { Engine, EngineKind, OptimizerConfig, OptimizerState } from './engine.js';
import type { EngineBackend } from './tfjs/backend.js';
import { TfjsEngine } from './tfjs/engine.js';

export type * from './engine.js';
export { generate, sampleToken, type SampleOptions } from './sample.js';
export { TfjsEngine } from './tfjs/engine.js';

/** What an engine starts from: the model's shape and weights, and (to train) the optimizer. */
export interface EngineOptions {
  engine?: EngineKind;
  /** The tfjs backend (tfjs engine). */
  backend: EngineBackend;
  spec: ModelSpec;
  weights: Weights;
  /** Training: AdamW's settings, and its state when resuming. Absent: inference only. */
  optimizer?: OptimizerConfig & { state?: OptimizerState };
}

/** Starts an engine: the model on its device, ready to train or to decode. */
export async function createEngine(o: EngineOptions): Promise<Engine> {
  const kind = o.engine ?? 'tfjs';
  if (kind !== 'tfjs') throw new Error(`engine ${kind} is not available in this build`);
  return TfjsEngine.create({ backend: o.backend, spec: o.spec, weights: o.weights, optimizer: o.optimizer });
}
