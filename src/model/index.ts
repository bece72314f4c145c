export { LanguageModel, paramSpecsOf, disposeCache, type ForwardResult } from './model.js';
export { modelSpec, type ModelSpec, type ParamSpec } from './spec.js';
export { generate, sampleToken, type SampleOptions } from './generate.js';
export type { LayerCache, Params } from './layers.js';
