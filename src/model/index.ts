export { paramSpecsOf, modelSpec, type ModelSpec, type ParamSpec } from './spec.js';
export { initWeights, type Weights } from './weights.js';
