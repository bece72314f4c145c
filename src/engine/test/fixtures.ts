// Test fixtures shared by the engines' tests: a tiny model spec and seeded random batches.
import type { ModelSpec } from '../../model/spec.js';
import { Rng } from '../../random.js';
import type { EngineBatch } from '../engine.js';

/** A two-layer dense model small enough for many steps in a test (MoE fields for `arch: 'moe'`). */
export function tinySpec(over: Partial<ModelSpec> = {}): ModelSpec {
  return {
    arch: 'dense',
    vocabSize: 64,
    dim: 32,
    layers: 2,
    heads: 4,
    kvHeads: 2,
    headDim: 8,
    ffnDim: 64,
    context: 16,
    ropeTheta: 10000,
    normEps: 1e-5,
    tieEmbeddings: true,
    initStd: 0.1,
    experts: 4,
    topK: 2,
    auxLossCoef: 0.01,
    zLossCoef: 0.001,
    ...over,
  };
}

/** `b` rows of `t` uniformly random token ids and targets below `vocab`, from `seed`. */
export function randomBatch(seed: number, vocab: number, b = 4, t = 16): EngineBatch {
  const rng = new Rng(seed);
  const inputs = Int32Array.from({ length: b * t }, () => rng.int(vocab));
  const targets = Int32Array.from({ length: b * t }, () => rng.int(vocab));
  return { inputs, targets, batch: b, seq: t };
}
