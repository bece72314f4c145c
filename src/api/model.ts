// The `model` namespace: engine-neutral specs and weights, plus the tfjs model and generation.
export * from '../model/index.js';
export { LanguageModel, disposeCache, type ForwardResult } from '../engine/tfjs/model.js';
export { generate, sampleToken, type SampleOptions } from '../engine/tfjs/generate.js';
export type { LayerCache, Params } from '../engine/tfjs/layers.js';
