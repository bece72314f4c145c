export { useBackend, backendFromEnv, type BackendRequest, type EngineBackend } from './select.js';
export { installLeanBackprop } from './backprop.js';
export { registerCpuKernels } from './cpu-kernels.js';
export { registerWasmGradientKernels } from './wasm-kernels.js';
export { prepareWasmThreads, wasmThreadsFromEnv, type WasmThreadsPlan } from './wasm-threads.js';
export { nativeAvailable, nativeStatus, runNative, type NativeNode, type NativeOperand } from './native.js';
export { nativeMatMulActive, planMatMul, registerNativeKernels, setNativeKernels } from './native-kernels.js';
export { tf } from './tf.js';
