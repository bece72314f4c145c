// The benchmark models and their training settings, shared by the Node children and (as JSON)
// by the PyTorch reference. Sizes are fixed by issue 8; only steps and repeats may shrink.

const base = {
  arch: 'dense',
  vocabSize: 4096,
  context: 256,
  ropeTheta: 10_000,
  normEps: 1e-5,
  tieEmbeddings: true,
  initStd: 0.02,
  experts: 8,
  topK: 2,
  auxLossCoef: 0.01,
  zLossCoef: 0.001,
};

/** ModelSpec (see src/model/spec.ts) of each benchmark model. */
export const MODELS = {
  'small-dense': { ...base, dim: 384, layers: 6, heads: 6, kvHeads: 6, headDim: 64, ffnDim: 1024 },
  'small-moe': { ...base, arch: 'moe', dim: 384, layers: 6, heads: 6, kvHeads: 6, headDim: 64, ffnDim: 1024 },
  'tiny-dense': { ...base, dim: 128, layers: 2, heads: 4, kvHeads: 4, headDim: 32, ffnDim: 352 },
  // bench/gpu_check.sh: a ~1B-parameter dense model (issue 14), and its CPU stand-in for --quick.
  'gpu-1b': {
    ...base,
    vocabSize: 32_000,
    context: 2048,
    dim: 2048,
    layers: 16,
    heads: 16,
    kvHeads: 16,
    headDim: 128,
    ffnDim: 5632,
    tieEmbeddings: false,
  },
  'gpu-1b-quick': {
    ...base,
    vocabSize: 4096,
    context: 256,
    dim: 256,
    layers: 4,
    heads: 4,
    kvHeads: 4,
    headDim: 64,
    ffnDim: 704,
  },
};

/** Training settings: the recipe defaults for AdamW and clipping, a constant learning rate. */
export const TRAIN = {
  batch: 16,
  lr: 1e-3,
  beta1: 0.9,
  beta2: 0.95,
  eps: 1e-8,
  weightDecay: 0.1,
  gradClip: 1.0,
  seed: 1234,
};

/** Forward+backward FLOPs per token: 6 x active params + 12 x layers x dim x context (attention). */
export function flopsPerToken(spec) {
  const trunk =
    spec.vocabSize * spec.dim * (spec.tieEmbeddings ? 1 : 2) +
    spec.layers *
      (2 * spec.dim + 2 * spec.heads * spec.headDim * spec.dim + 2 * spec.kvHeads * spec.headDim * spec.dim) +
    spec.dim;
  const ffnPerExpert = 3 * spec.dim * spec.ffnDim;
  const ffn =
    spec.arch === 'moe'
      ? spec.layers * (spec.experts * spec.dim + spec.topK * ffnPerExpert)
      : spec.layers * ffnPerExpert;
  return 6 * (trunk + ffn) + 12 * spec.layers * spec.dim * spec.context;
}

/** Total parameter count (all experts). */
export function numParams(spec) {
  const trunk =
    spec.vocabSize * spec.dim * (spec.tieEmbeddings ? 1 : 2) +
    spec.layers *
      (2 * spec.dim + 2 * spec.heads * spec.headDim * spec.dim + 2 * spec.kvHeads * spec.headDim * spec.dim) +
    spec.dim;
  const ffnPerExpert = 3 * spec.dim * spec.ffnDim;
  const ffn =
    spec.arch === 'moe'
      ? spec.layers * (spec.experts * spec.dim + spec.experts * ffnPerExpert)
      : spec.layers * ffnPerExpert;
  return trunk + ffn;
}
