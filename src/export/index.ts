/** Export to and import from Hugging Face (Llama / Mixtral), with optional int8 weight quantization; PEFT adapters of LoRA runs. */
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
export { hfConfigOf, hfConfigJson, HF_ARCHITECTURES, type HfTokenIds } from '../model/hf-config.js';
export { specFromHfConfig, modelConfigOf, type HfConfigInfo, type SpecFromHfOptions } from '../recipe/hf-config.js';
export { quantizeInt8, quantizeRows, isQuantizedWeight, type Int8Summary, type NamedWeights } from './quantize.js';
export { exportPeft, PEFT_FILES, type ExportPeftOptions, type ExportPeftResult } from './peft.js';
