import { LatheError } from '../../errors.js';
import { quietCpuBanner, tf } from './tf.js';
import { installLeanBackprop } from './backprop.js';
import { registerCpuKernels } from './cpu-kernels.js';
import { registerWasmGradientKernels } from './wasm-kernels.js';
import { registerNativeKernels } from './native-kernels.js';
import { prepareWasmThreads, wasmThreadsFromEnv } from './wasm-threads.js';
import { installWebGpu } from './webgpu.js';
import { registerWebGpuKernels } from './webgpu-kernels.js';

/** A concrete tfjs backend Lathe can train on. */
export type EngineBackend = 'cpu' | 'wasm' | 'webgpu';
/** What a user may ask for: a concrete backend, or auto (the best available, said aloud). */
export type BackendRequest = EngineBackend | 'auto';

const ORDER: EngineBackend[] = ['webgpu', 'wasm', 'cpu'];

/** Backend requested by the environment (LATHE_BACKEND), if any. */
export function backendFromEnv(): BackendRequest | undefined {
  const v = process.env.LATHE_BACKEND;
  if (!v) return undefined;
  if (!['cpu', 'wasm', 'webgpu', 'auto'].includes(v))
    throw new LatheError(`LATHE_BACKEND: "${v}" is not one of cpu, wasm, webgpu, auto`);
  return v as BackendRequest;
}

async function tryBackend(name: EngineBackend, auto = false): Promise<string | undefined> {
  try {
    if (name === 'webgpu') {
      const gpu = await installWebGpu();
      if (!gpu.ok) return gpu.reason;
      if (auto && gpu.software)
        return `the only adapter is ${gpu.adapter}, a CPU fallback slower than wasm (--backend webgpu uses it anyway)`;
    }
    let restore = () => {};
    installLeanBackprop();
    if (name === 'cpu') registerCpuKernels();
    if (name !== 'webgpu') registerNativeKernels(name);
    if (name === 'wasm') {
      registerWasmGradientKernels();
      // The threaded build can only be chosen before the wasm module is first instantiated.
      if (!wasmInstantiated()) restore = prepareWasmThreads(wasmThreadsFromEnv()).restore;
    }
    let ok: boolean;
    try {
      ok = await tf.setBackend(name);
    } finally {
      restore();
    }
    if (!ok) return `tfjs could not initialise the ${name} backend`;
    await tf.ready();
    if (name === 'webgpu') registerWebGpuKernels();
    quietCpuBanner();
    return undefined;
  } catch (e) {
    return (e as Error).message;
  }
}

function wasmInstantiated(): boolean {
  const registry = (tf.engine() as unknown as { registry: Record<string, unknown> }).registry;
  return registry.wasm !== undefined;
}

/**
 * Activates a backend. A named backend that cannot start is an error (never a silent fallback);
 * `auto` tries webgpu, wasm, cpu in order and reports each one it skipped through `onNotice`
 * (webgpu needs an adapter from Dawn, and auto passes over a CPU fallback adapter such as SwiftShader).
 * The first activation of wasm starts tfjs's multi-threaded SIMD build when LATHE_WASM_THREADS
 * asks for more than one thread (a number, or `cores`); by default it stays single-threaded.
 * On wasm and cpu, matmuls, exp, softmax and reductions run on onnxruntime-node's native kernels when
 * it loads (LATHE_NATIVE_KERNELS=0 keeps tfjs's own).
 */
export async function useBackend(
  req: BackendRequest,
  onNotice: (msg: string) => void = (m) => console.error(m),
): Promise<EngineBackend> {
  if (req !== 'auto') {
    if (tf.getBackend() === req) return req;
    const why = await tryBackend(req);
    if (why)
      throw new LatheError(
        `backend ${req} is not available: ${why}. Choose another with --backend or the recipe's "backend".`,
      );
    return req;
  }
  for (const name of ORDER) {
    if (tf.getBackend() === name) return name;
    const why = await tryBackend(name, true);
    if (!why) return name;
    onNotice(`backend auto: skipping ${name}: ${why}`);
  }
  throw new LatheError('no tfjs backend could start');
}

/** The backend in use now (the last one activated), or cpu when none is. */
export function activeBackend(): EngineBackend {
  const name = tf.getBackend();
  return ORDER.includes(name as EngineBackend) ? (name as EngineBackend) : 'cpu';
}
