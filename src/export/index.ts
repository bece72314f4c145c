/** Export to and import from Hugging Face (Llama / Mixtral), with optional int8 weight quantization. */
export {
  exportHf,
  importHf,
  loadHf,
  HF_FILES,
  type ExportHfOptions,
  type ExportHfResult,
  type HfImport,
  type ImportHfOptions,
  type QuantizationReport,
} from './hf.js';
export {
  hfConfigOf,
  hfConfigJson,
  specFromHfConfig,
  modelConfigOf,
  HF_ARCHITECTURES,
  type HfConfigInfo,
  type HfTokenIds,
  type SpecFromHfOptions,
} from './hf-config.js';
export { quantizeInt8, quantizeRows, isQuantizedWeight, type Int8Summary, type NamedWeights } from './quantize.js';
