export { useBackend, backendFromEnv, type BackendRequest, type EngineBackend } from './select.js';
export { registerWasmGradientKernels } from './wasm-kernels.js';
export { tf } from './tf.js';
