import type { ModelConfig, MODEL_FAMILIES } from './schema.js';
import { familyOf } from './families.js';

export { familyOf };
import { ffnDimOf } from './validate.js';

/** Everything that fixes a model's shapes: the recipe's model section plus the vocabulary size. */
export interface ModelSpec {
  arch: 'dense' | 'moe';
  vocabSize: number;
  dim: number;
  layers: number;
  heads: number;
  kvHeads: number;
  headDim: number;
  ffnDim: number;
  context: number;
  ropeTheta: number;
  normEps: number;
  tieEmbeddings: boolean;
  initStd: number;
  experts: number;
  topK: number;
  auxLossCoef: number;
  zLossCoef: number;
  // Open-model features (see ModelSchema); absent is Lathe's own decoder.
  /** The HF architecture (model_type) the model exports as; default llama (dense) or mixtral (moe). */
  family?: ModelFamily;
  /** Biases on q, k, v (`qkv`) or on q, k, v and o (`all`). */
  attentionBias?: 'qkv' | 'all';
  /** RMSNorm [headDim] over each head of q and k, before RoPE. */
  qkNorm?: boolean;
  ropeScaling?: RopeScaling;
  /** Each position attends to itself and the slidingWindow - 1 before it, in windowLayers (default all). */
  slidingWindow?: number;
  windowLayers?: number[];
  /** MoE: renormalise the kept router probabilities (default true). */
  normTopK?: boolean;
  /** MoE: layers with one dense MLP of denseFfnDim (default ffnDim) instead of experts. */
  denseLayers?: number[];
  denseFfnDim?: number;
}

/** An HF model_type Lathe reads and writes. */
export type ModelFamily = (typeof MODEL_FAMILIES)[number];

/** RoPE frequency scaling (transformers' rope_parameters). */
export type RopeScaling =
  | { type: 'llama3'; factor: number; lowFreqFactor: number; highFreqFactor: number; originalContext: number }
  | { type: 'linear'; factor: number };

/** Whether layer i attends through the sliding window. */
export function windowed(s: ModelSpec, i: number): boolean {
  return s.slidingWindow !== undefined && (s.windowLayers === undefined || s.windowLayers.includes(i));
}

/** Whether layer i's feed-forward is a mixture of experts (else one dense MLP). */
export function isMoeLayer(s: ModelSpec, i: number): boolean {
  return s.arch === 'moe' && !(s.denseLayers ?? []).includes(i);
}

/** Builds the spec from a recipe's model section and the tokenizer's vocabulary size. */
export function modelSpec(m: ModelConfig, vocabSize: number): ModelSpec {
  const spec: ModelSpec = {
    arch: m.arch,
    vocabSize: Math.max(vocabSize, m.vocabSize ?? 0),
    dim: m.dim,
    layers: m.layers,
    heads: m.heads,
    kvHeads: m.kvHeads ?? m.heads,
    headDim: m.headDim ?? m.dim / m.heads,
    ffnDim: ffnDimOf(m),
    context: m.context,
    ropeTheta: m.ropeTheta,
    normEps: m.normEps,
    tieEmbeddings: m.tieEmbeddings,
    initStd: m.initStd,
    experts: m.experts,
    topK: m.topK,
    auxLossCoef: m.auxLossCoef,
    zLossCoef: m.zLossCoef,
  };
  // Only the fields a model section sets, so a Lathe-native spec is exactly what it was.
  for (const k of OPEN_FIELDS) if (m[k] !== undefined) (spec as unknown as Record<string, unknown>)[k] = m[k];
  return spec;
}

/** The open-model fields that a model section and a spec share as they are. */
export const OPEN_FIELDS = [
  'family',
  'attentionBias',
  'qkNorm',
  'ropeScaling',
  'slidingWindow',
  'windowLayers',
  'normTopK',
  'denseLayers',
  'denseFfnDim',
] as const satisfies readonly (keyof ModelSpec & keyof ModelConfig)[];
