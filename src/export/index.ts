/**
 * Export to and import from Hugging Face (Llama, Mistral, Qwen2, Qwen3, Mixtral, Qwen3-MoE), with
 * optional int8 weight quantization; PEFT adapters of LoRA runs.
 */
export {
  exportHf,
  importHf,
  loadHf,
  saveHf,
  HF_FILES,
  type ExportHfOptions,
  type ExportHfResult,
  type HfImport,
  type ImportHfOptions,
  type QuantizationReport,
} from './hf.js';
export { hfConfigOf, hfConfigJson, HF_ARCHITECTURES, HF_ARCHITECTURE_OF, type HfTokenIds } from '../model/hf-config.js';
export {
  specFromHfConfig,
  modelConfigOf,
  REFUSED_FIELDS,
  type HfConfigInfo,
  type SpecFromHfOptions,
} from '../recipe/hf-config.js';
export { quantizeInt8, quantizeRows, isQuantizedWeight, type Int8Summary, type NamedWeights } from './quantize.js';
export { exportPeft, PEFT_FILES, type ExportPeftOptions, type ExportPeftResult } from './peft.js';
