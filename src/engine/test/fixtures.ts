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

/** `n` floats in [-scale, scale) from a seeded LCG (the same inputs on every backend and run). */
export function seededFloats(n: number, seed: number, scale = 1): Float32Array {
  const a = new Float32Array(n);
  let s = seed >>> 0;
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    a[i] = ((s / 2 ** 32) * 2 - 1) * scale;
  }
  return a;
}

/** The small dense model of the webgpu tests (vocabulary 256, width 64, two layers). */
export function smallGpuSpec(over: Partial<ModelSpec> = {}): ModelSpec {
  return tinySpec({
    vocabSize: 256,
    dim: 64,
    heads: 4,
    kvHeads: 4,
    headDim: 16,
    ffnDim: 160,
    context: 32,
    initStd: 0.02,
    ...over,
  });
}
