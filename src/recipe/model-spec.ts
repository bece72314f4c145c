import type { ModelConfig, MODEL_FAMILIES } from './schema.js';
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

/** The spec's family: its own, or the default for its arch. */
export function familyOf(s: Pick<ModelSpec, 'arch' | 'family'>): ModelFamily {
  return s.family ?? (s.arch === 'moe' ? 'mixtral' : 'llama');
}

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

/**
 * What a model section's open-model fields may not combine to, each with the field to fix: every
 * spec that passes is one its family's HF class computes exactly (so export writes it back).
 */
export function familyIssues(
  m: Partial<Pick<ModelSpec, (typeof OPEN_FIELDS)[number] | 'arch' | 'layers'>>,
): { field: string; message: string }[] {
  const out: { field: string; message: string }[] = [];
  const arch = m.arch ?? 'dense';
  const family = familyOf({ arch, family: m.family });
  const moeFamily = family === 'mixtral' || family === 'qwen3_moe';
  if (moeFamily !== (arch === 'moe'))
    out.push({
      field: 'family',
      message: `${family} is ${moeFamily ? 'a mixture of experts: set arch "moe"' : 'dense: set arch "dense"'}`,
    });
  if (family === 'qwen2' && m.attentionBias !== 'qkv')
    out.push({ field: 'attentionBias', message: 'qwen2 has q/k/v biases: set "qkv"' });
  if (m.attentionBias === 'qkv' && family !== 'qwen2')
    out.push({ field: 'attentionBias', message: `"qkv" is Qwen2's; ${family} has "all" or none` });
  if (m.attentionBias === 'all' && (family === 'mistral' || family === 'mixtral' || family === 'qwen2'))
    out.push({ field: 'attentionBias', message: `${family} has no attention_bias option` });
  const qk = family === 'qwen3' || family === 'qwen3_moe';
  if (qk !== Boolean(m.qkNorm))
    out.push({ field: 'qkNorm', message: qk ? `${family} has q/k norms: set true` : `${family} has no q/k norms` });
  if (m.slidingWindow !== undefined && family === 'llama')
    out.push({ field: 'slidingWindow', message: 'llama has no sliding window; set family mistral or qwen2' });
  if (m.windowLayers !== undefined && family !== 'qwen2' && family !== 'qwen3')
    out.push({ field: 'windowLayers', message: `${family} applies its window to every layer; remove windowLayers` });
  if (m.windowLayers !== undefined && m.slidingWindow === undefined)
    out.push({ field: 'windowLayers', message: 'is set without slidingWindow' });
  for (const k of ['normTopK', 'denseLayers', 'denseFfnDim'] as const)
    if (m[k] !== undefined && family !== 'qwen3_moe')
      out.push({ field: k, message: `is a Qwen3-MoE setting: set family "qwen3_moe"` });
  for (const k of ['windowLayers', 'denseLayers'] as const) {
    const bad = (m[k] ?? []).find((i) => m.layers !== undefined && i >= m.layers);
    if (bad !== undefined) out.push({ field: k, message: `layer ${bad} is past the last layer ${m.layers! - 1}` });
  }
  if (m.denseLayers && m.layers !== undefined && new Set(m.denseLayers).size >= m.layers)
    out.push({ field: 'denseLayers', message: 'leaves no layer with experts' });
  return out;
}
