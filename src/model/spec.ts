import type { ModelConfig } from '../recipe/schema.js';
import { ffnDimOf } from '../recipe/validate.js';

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
}

/** Builds the spec from a recipe's model section and the tokenizer's vocabulary size. */
export function modelSpec(m: ModelConfig, vocabSize: number): ModelSpec {
  return {
    arch: m.arch,
    vocabSize,
    dim: m.dim,
    layers: m.layers,
    heads: m.heads,
    kvHeads: m.kvHeads ?? m.heads,
    headDim: m.dim / m.heads,
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
}

/** A parameter's HF name, shape and how it is initialised and regularised. */
export interface ParamSpec {
  name: string;
  shape: number[];
  init: 'normal' | 'ones' | 'scaled';
  /** AdamW weight decay applies (matrices yes, norm gains no). */
  decay: boolean;
}

/** Parameters of the trunk shared by both architectures (embeddings, attention, norms, head). */
export function trunkParams(s: ModelSpec): ParamSpec[] {
  const out: ParamSpec[] = [
    { name: 'model.embed_tokens.weight', shape: [s.vocabSize, s.dim], init: 'normal', decay: true },
  ];
  for (let i = 0; i < s.layers; i++) {
    const p = `model.layers.${i}`;
    out.push(
      { name: `${p}.input_layernorm.weight`, shape: [s.dim], init: 'ones', decay: false },
      { name: `${p}.self_attn.q_proj.weight`, shape: [s.heads * s.headDim, s.dim], init: 'normal', decay: true },
      { name: `${p}.self_attn.k_proj.weight`, shape: [s.kvHeads * s.headDim, s.dim], init: 'normal', decay: true },
      { name: `${p}.self_attn.v_proj.weight`, shape: [s.kvHeads * s.headDim, s.dim], init: 'normal', decay: true },
      { name: `${p}.self_attn.o_proj.weight`, shape: [s.dim, s.heads * s.headDim], init: 'scaled', decay: true },
      { name: `${p}.post_attention_layernorm.weight`, shape: [s.dim], init: 'ones', decay: false },
    );
  }
  out.push({ name: 'model.norm.weight', shape: [s.dim], init: 'ones', decay: false });
  if (!s.tieEmbeddings) out.push({ name: 'lm_head.weight', shape: [s.vocabSize, s.dim], init: 'normal', decay: true });
  return out;
}
