import { LatheError } from '../errors.js';
import type { EngineLock } from '../recipe/lock.js';
import type { Resources } from '../recipe/schema.js';
import { backendFromEnv, useBackend, type BackendRequest, type EngineBackend } from './tfjs/backend.js';
import { TORCH_FIX, torchInfo } from './torch/process.js';

/** What a user may ask for: an engine (or auto: the fastest here, said aloud), a device and a precision. */
export interface EngineRequest {
  engine?: 'tfjs' | 'torch' | 'auto';
  /** torch: cpu or cuda (default: cuda where torch sees a GPU under auto, else cpu). */
  device?: 'cpu' | 'cuda';
  /** torch: fp32, or bf16 autocast with fp32 master weights. */
  dtype?: 'fp32' | 'bf16';
  /** tfjs: the backend. */
  backend?: BackendRequest;
}

/** A resolved choice: the tfjs backend, and the torch engine when the run trains on torch. */
export interface ResolvedEngine {
  backend: EngineBackend;
  engine?: EngineLock;
}

const oneOf = <T extends string>(name: string, v: string | undefined, allowed: readonly T[]): T | undefined => {
  if (v === undefined || v === '') return undefined;
  if (!allowed.includes(v as T)) throw new LatheError(`${name}: "${v}" is not one of ${allowed.join(', ')}`, 2);
  return v as T;
};

/** The engine asked for by the environment: LATHE_ENGINE, LATHE_DEVICE, LATHE_DTYPE and LATHE_BACKEND. */
export function engineFromEnv(): EngineRequest {
  return {
    engine: oneOf('LATHE_ENGINE', process.env.LATHE_ENGINE, ['tfjs', 'torch', 'auto'] as const),
    device: oneOf('LATHE_DEVICE', process.env.LATHE_DEVICE, ['cpu', 'cuda'] as const),
    dtype: oneOf('LATHE_DTYPE', process.env.LATHE_DTYPE, ['fp32', 'bf16'] as const),
    backend: backendFromEnv(),
  };
}

/**
 * Resolves an engine request into what a lock records. A named engine or device that cannot run
 * here is an error (exit 2) that says why and how to fix it; `auto` takes torch (on CUDA when torch
 * sees a GPU) where torch is installed, else tfjs, and says which it took and why it skipped the others.
 */
export async function resolveEngine(
  r: EngineRequest,
  onNotice: (m: string) => void = (m) => console.error(m),
): Promise<ResolvedEngine> {
  const kind = r.engine ?? 'tfjs';
  if (kind === 'tfjs') {
    if (r.device === 'cuda')
      throw new LatheError(
        'device cuda: the tfjs engine has no CUDA device; use --engine torch (or webgpu on a GPU)',
        2,
      );
    if (r.dtype === 'bf16')
      throw new LatheError('dtype bf16: the tfjs engine computes in fp32; use --engine torch for bf16', 2);
    return { backend: await useBackend(r.backend ?? 'auto', onNotice) };
  }
  const probe = torchInfo();
  if (kind === 'auto' && !probe.info) {
    onNotice(`engine auto: skipping torch: ${probe.why}`);
    const backend = await useBackend(r.backend ?? 'auto', onNotice);
    onNotice(`engine auto: tfjs on ${backend}`);
    return { backend };
  }
  if (!probe.info) throw new LatheError(`engine torch: ${probe.why}; ${TORCH_FIX}`, 2);
  const info = probe.info;
  let device = r.device ?? (kind === 'auto' && info.cuda ? 'cuda' : 'cpu');
  if (device === 'cuda' && !info.cuda) {
    if (kind === 'auto' && r.device === undefined) device = 'cpu';
    else
      throw new LatheError(
        `device cuda: torch ${info.torch} (${info.python}) sees no CUDA device (a CPU build, or no GPU visible); use --device cpu, or install a CUDA build of torch: ${TORCH_FIX}`,
        2,
      );
  }
  const dtype = r.dtype ?? 'fp32';
  if (dtype === 'bf16' && !info.bf16)
    throw new LatheError(`dtype bf16: torch ${info.torch} here has no bf16 kernels (no oneDNN, no CUDA); use fp32`, 2);
  if (kind === 'auto')
    onNotice(
      `engine auto: torch ${info.torch} on ${device}${device === 'cpu' ? ' (no CUDA device)' : ''}; skipping tfjs (slower than torch here)`,
    );
  return { backend: 'cpu', engine: { kind: 'torch', device, dtype, torch: info.torch } };
}

/** Ranks in all: GPUs (or CPU processes) per node times nodes. */
export function worldSize(r: Resources | undefined): number {
  return r ? r.gpus * r.nodes : 1;
}

/**
 * Checks a run's resources against its engine before anything starts: several ranks need the torch
 * engine, and on one CUDA machine no more GPUs than torch sees.
 */
export function checkResources(r: Resources | undefined, engine: EngineLock | undefined): void {
  if (worldSize(r) <= 1) return;
  if (!engine)
    throw new LatheError(
      `resources: ${r!.gpus} × ${r!.nodes} ranks need the torch engine (--engine torch); the tfjs engine runs in one process`,
      2,
    );
  if (engine.device === 'cuda' && r!.nodes === 1) {
    const have = torchInfo().info?.devices ?? 0;
    if (r!.gpus > have)
      throw new LatheError(
        `resources.gpus: ${r!.gpus} GPUs asked for, torch ${engine.torch} sees ${have} on this machine`,
        2,
      );
  }
}
