// Types for configs.mjs (imported by src/model/losscurve.test.ts).
import type { ModelSpec } from '../src/model/spec.js';

export declare const MODELS: Record<'small-dense' | 'small-moe' | 'tiny-dense', ModelSpec>;
export declare const TRAIN: { batch: number; lr: number; beta1: number; beta2: number; eps: number; weightDecay: number; gradClip: number; seed: number };
export declare function flopsPerToken(spec: ModelSpec): number;
export declare function numParams(spec: ModelSpec): number;
