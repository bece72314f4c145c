import type { ModelConfig } from './schema.js';
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
