// The `model` namespace: engine-neutral specs and weights, generation on any engine, and the tfjs model.
export * from '../model/index.js';
export { generate, generateBatch, sampleToken, type SampleOptions } from '../engine/sample.js';
export { LanguageModel, disposeCache, type ForwardResult } from '../engine/tfjs/model.js';
export type { LayerCache, Params } from '../engine/tfjs/layers.js';
