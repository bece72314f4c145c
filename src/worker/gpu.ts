import { LatheError } from '../errors.js';
import { useBackend, type BackendRequest, type EngineBackend } from '../engine/tfjs/backend.js';
import { tf } from '../engine/tfjs/tf.js';

// WebGPU for a worker: Dawn (the `webgpu` npm package) supplies navigator.gpu in Node, and tfjs's
// webgpu backend runs on it. We register the backend ourselves so the device asks for shader-f16
// where the adapter offers it (tfjs 4.22's own factory never does).

/** What probing for a GPU found. */
export interface GpuProbe {
  ok: boolean;
  /** Why there is no usable adapter. */
  reason?: string;
  /** The adapter, in words (vendor, architecture, device). */
  adapter?: string;
  /** The adapter offers shader-f16 (and the device requests it). */
  f16?: boolean;
}

interface Adapter {
  features: Set<string>;
  limits: Record<string, number>;
  info?: Record<string, string>;
  requestDevice(d: object): Promise<unknown>;
}
interface Gpu {
  requestAdapter(o?: object): Promise<Adapter | null>;
}

// Dawn toggles: on NVIDIA, f16 in shaders needs vulkan_enable_f16_on_nvidia (DESIGN: known ground).
const DAWN_FLAGS = ['enable-dawn-features=vulkan_enable_f16_on_nvidia'];

let probed: Promise<GpuProbe> | undefined;

/** Loads Dawn, looks for an adapter, and (if one exists) registers tfjs's webgpu backend on it. Runs once per process. */
export function installWebGpu(): Promise<GpuProbe> {
  probed ??= probe();
  return probed;
}

async function probe(): Promise<GpuProbe> {
  let dawn: { create(flags: string[]): Gpu; globals: object };
  try {
    dawn = (await import('webgpu')) as unknown as typeof dawn;
  } catch (e) {
    return { ok: false, reason: `the webgpu package (Dawn) did not load: ${(e as Error).message}` };
  }
  let gpu: Gpu;
  let adapter: Adapter | null;
  try {
    gpu = dawn.create(DAWN_FLAGS);
    adapter = await gpu.requestAdapter({ powerPreference: 'high-performance' });
  } catch (e) {
    return { ok: false, reason: `Dawn failed to look for an adapter: ${(e as Error).message}` };
  }
  if (!adapter)
    return { ok: false, reason: 'Dawn found no GPU adapter on this machine (no Vulkan GPU or driver is visible)' };
  const info = adapter.info ?? {};
  const described =
    [info.vendor, info.architecture, info.device, info.description].filter(Boolean).join(' ') || 'unnamed adapter';
  const f16 = adapter.features.has('shader-f16');
  Object.assign(globalThis, dawn.globals);
  const g = globalThis as { navigator?: object };
  if (!g.navigator) g.navigator = {};
  Object.defineProperty(g.navigator, 'gpu', { value: gpu, configurable: true });
  const wg = (await import('@tensorflow/tfjs-backend-webgpu')) as unknown as {
    WebGPUBackend: new (device: unknown, info: unknown) => unknown;
  };
  if (tf.findBackendFactory('webgpu')) tf.removeBackend('webgpu');
  tf.registerBackend(
    'webgpu',
    async () => {
      const a = (await gpu.requestAdapter({ powerPreference: 'high-performance' }))!;
      const requiredFeatures = ['timestamp-query', 'shader-f16'].filter((f) => a.features.has(f));
      const l = a.limits;
      const requiredLimits = {
        maxComputeWorkgroupStorageSize: l.maxComputeWorkgroupStorageSize,
        maxComputeWorkgroupsPerDimension: l.maxComputeWorkgroupsPerDimension,
        maxStorageBufferBindingSize: l.maxStorageBufferBindingSize,
        maxBufferSize: l.maxBufferSize,
        maxComputeWorkgroupSizeX: l.maxComputeWorkgroupSizeX,
        maxComputeInvocationsPerWorkgroup: l.maxComputeInvocationsPerWorkgroup,
      };
      const device = await a.requestDevice({ requiredFeatures, requiredLimits });
      return new wg.WebGPUBackend(device, a.info) as never;
    },
    3,
  );
  return { ok: true, adapter: described, f16 };
}

/** The backends a worker offers (with `auto`, every one that runs here; else the named one and cpu): the default for jobs, and for each "ok" or why not. */
export interface WorkerBackends {
  backend: EngineBackend;
  backends: Record<EngineBackend, string>;
  gpu?: GpuProbe;
}

/**
 * Chooses a worker's backend. `webgpu` needs an adapter (else the worker refuses to start: never a
 * silent fallback); `auto` says aloud why it skips webgpu (or wasm) and takes the next one.
 */
export async function chooseWorkerBackend(
  request: BackendRequest,
  log: (line: string) => void,
): Promise<WorkerBackends> {
  const backends: Record<EngineBackend, string> = { webgpu: '', wasm: '', cpu: 'ok' };
  let gpu: GpuProbe | undefined;
  if (request === 'webgpu' || request === 'auto') {
    gpu = await installWebGpu();
    backends.webgpu = gpu.ok ? 'ok' : gpu.reason!;
  } else backends.webgpu = `not enabled: the worker was started with --backend ${request}`;
  if (request === 'wasm' || request === 'auto') {
    try {
      await useBackend('wasm', () => {});
      backends.wasm = 'ok';
    } catch (e) {
      backends.wasm = (e as Error).message;
    }
  } else backends.wasm = `not enabled: the worker was started with --backend ${request}`;
  if (request === 'webgpu' && !gpu!.ok)
    throw new LatheError(
      `--backend webgpu: ${gpu!.reason}. Start the worker with --backend auto to use the next backend, or run it on a machine with a GPU`,
    );
  if (request !== 'auto' && backends[request] !== 'ok')
    throw new LatheError(`--backend ${request}: ${backends[request]}`);
  let backend: EngineBackend = request === 'auto' ? 'cpu' : request;
  if (request === 'auto') {
    for (const name of ['webgpu', 'wasm', 'cpu'] as const) {
      if (backends[name] === 'ok') {
        backend = name;
        break;
      }
      log(`backend auto: skipping ${name}: ${backends[name]}`);
    }
  }
  if (backend === 'webgpu') {
    await useBackend('webgpu');
    log(`webgpu on ${gpu!.adapter}${gpu!.f16 ? ', shader-f16 enabled' : ', no shader-f16 on this adapter'}`);
  } else await useBackend(backend, () => {});
  return { backend, backends, gpu };
}
