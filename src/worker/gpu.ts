import { LatheError } from '../errors.js';
import { useBackend, type BackendRequest, type EngineBackend } from '../engine/tfjs/backend.js';
import { installWebGpu, type GpuProbe } from '../engine/tfjs/webgpu.js';

// Backends for a worker: Dawn's adapter (src/engine/tfjs/webgpu.ts) decides whether webgpu is offered.

export type { GpuProbe };

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
    backends.webgpu = !gpu.ok
      ? gpu.reason!
      : request === 'auto' && gpu.software
        ? `the only adapter is ${gpu.adapter}, a CPU fallback slower than wasm (--backend webgpu uses it anyway)`
        : 'ok';
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
