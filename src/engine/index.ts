import { LatheError } from '../errors.js';
import { checkAdapters, checkLoraTargets } from '../model/lora.js';
import type { ModelSpec } from '../model/spec.js';
import type { Weights } from '../model/weights.js';
import type { EngineLock } from '../recipe/lock.js';
import type { Engine, EngineLora, OptimizerConfig, OptimizerState } from './engine.js';
import type { EngineBackend } from './tfjs/backend.js';
import { TfjsEngine } from './tfjs/engine.js';
import { TorchEngine } from './torch/engine.js';
import type { TorchLaunch } from './torch/launch.js';

export type * from './engine.js';
export { EngineLost } from './engine.js';
export { generate, sampleToken, type SampleOptions } from './sample.js';
export { engineFromEnv, resolveEngine, type EngineRequest, type ResolvedEngine } from './select.js';
export { TfjsEngine } from './tfjs/engine.js';
export { TorchEngine } from './torch/engine.js';

/** What an engine starts from: the model's shape and weights, and (to train) the optimizer. */
export interface EngineOptions {
  /** The tfjs backend (the tfjs engine). */
  backend: EngineBackend;
  /** The torch engine, its device and dtype (a lock's `engine`); absent: tfjs on `backend`. */
  engine?: EngineLock;
  spec: ModelSpec;
  weights: Weights;
  /** Training: AdamW's settings, and its state when resuming. Absent: inference only. */
  optimizer?: OptimizerConfig & { state?: OptimizerState };
  /** torch: recompute each block's activations in the backward pass. */
  checkpointActivations?: boolean;
  /** torch: several ranks (DDP or FSDP); absent: one process. */
  launch?: TorchLaunch;
  /** LoRA: `weights` are the frozen base, these adapters train. */
  lora?: EngineLora;
  /** tfjs on webgpu: f16 weight storage where the adapter has shader-f16 (default true; a recipe's `dtype: fp32` turns it off). */
  halfStorage?: boolean;
}

/** Starts an engine: the model on its device, ready to train or to decode. */
export async function createEngine(o: EngineOptions): Promise<Engine> {
  if (o.lora) {
    checkLoraTargets(o.spec, o.lora);
    checkAdapters(o.spec, o.lora, o.lora.adapters, 'LoRA adapters');
    if (o.lora.quantize === 'nf4' && o.engine?.kind !== 'torch')
      throw new LatheError(
        'train.lora.quantize: nf4 runs on the torch engine on CUDA (bitsandbytes); on the tfjs engine use int8',
      );
  }
  if (o.engine?.kind === 'torch')
    return TorchEngine.create({
      device: o.engine.device,
      dtype: o.engine.dtype,
      spec: o.spec,
      weights: o.weights,
      optimizer: o.optimizer,
      checkpointActivations: o.checkpointActivations,
      launch: o.launch,
      lora: o.lora,
    });
  return TfjsEngine.create({
    backend: o.backend,
    spec: o.spec,
    weights: o.weights,
    optimizer: o.optimizer,
    lora: o.lora,
    halfStorage: o.halfStorage,
  });
}

/** How a lock's engine reads in messages: `torch cpu fp32`, or the tfjs backend. */
export function engineLabel(lock: { backend: string; engine?: EngineLock }): string {
  return lock.engine ? `torch ${lock.engine.device} ${lock.engine.dtype}` : lock.backend;
}
