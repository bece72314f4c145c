import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { tf } from './tf.js';

// WebGPU for the tfjs engine: Dawn (the `webgpu` npm package) supplies navigator.gpu in Node, and
// tfjs's webgpu backend runs on it. Lathe registers the backend itself, so that the device asks for
// shader-f16 and the adapter's binding limits (tfjs 4.22's own factory asks for neither), and so
// that Dawn's validation errors are caught: a command buffer that fails validation is dropped
// whole, with every kernel in it, so a run that saw one has wrong numbers.

/** What an NVIDIA container needs for Vulkan (Dawn's backend on Linux): `graphics` mounts the Vulkan driver. */
export const WEBGPU_DRIVER_CAPABILITIES = 'compute,utility,graphics';

/** What probing for a WebGPU adapter found. */
export interface GpuProbe {
  ok: boolean;
  /** Why there is no usable adapter (which part of Vulkan is missing, when that is the cause). */
  reason?: string;
  /** The adapter, in words (vendor, architecture, device). */
  adapter?: string;
  /** The adapter offers shader-f16 (and the device requests it). */
  f16?: boolean;
  /** A CPU fallback adapter (SwiftShader): correct but slower than wasm, so `auto` skips it. */
  software?: boolean;
}

interface Adapter {
  features: Set<string>;
  limits: Record<string, number>;
  info?: Record<string, unknown>;
  requestDevice(d: object): Promise<GpuDevice>;
}
interface Gpu {
  requestAdapter(o?: object): Promise<Adapter | null>;
}
/** The parts of a GPUDevice that Lathe uses directly. */
export interface GpuDevice {
  features: Set<string>;
  limits: Record<string, number>;
  lost: Promise<{ message: string }>;
  addEventListener(type: 'uncapturederror', f: (e: { error: { message: string } }) => void): void;
}

// Dawn toggles: on NVIDIA, f16 in shaders needs vulkan_enable_f16_on_nvidia (DESIGN: known ground).
const DAWN_FLAGS = ['enable-dawn-features=vulkan_enable_f16_on_nvidia'];

let probed: Promise<GpuProbe> | undefined;
let dispatches = 0;
let readsBack: number[] = [];
const errors: string[] = [];
let device: GpuDevice | undefined;

/**
 * Loads Dawn, looks for an adapter, and (if one exists) registers tfjs's webgpu backend on it.
 * Runs once per process; `useBackend('webgpu')` calls it.
 */
export function installWebGpu(): Promise<GpuProbe> {
  probed ??= probe();
  return probed;
}

/** Compute dispatches recorded so far in this process (every kernel of every backend on Dawn). */
export function dispatchCount(): number {
  return dispatches;
}

/**
 * For each GPU-to-host read completed since the last call, the dispatch count when it came back;
 * empties the list. A step whose dispatches all came before its first read never waited on the host.
 */
export function takeReadsBack(): number[] {
  const r = readsBack;
  readsBack = [];
  return r;
}

/** The device the webgpu backend runs on, once it has started. */
export function webgpuDevice(): GpuDevice | undefined {
  return device;
}

/** Dawn's validation (and device-lost) errors since the last call, each once; empties the list. */
export function takeWebGpuErrors(): string[] {
  return errors.splice(0);
}

async function probe(): Promise<GpuProbe> {
  let dawn: { create(flags: string[]): Gpu; globals: Record<string, { prototype: Record<string, unknown> }> };
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
  if (!adapter) return { ok: false, reason: `Dawn found no GPU adapter: ${vulkanDiagnosis()}` };
  const info = adapter.info ?? {};
  const described =
    [info.vendor, info.architecture, info.device, info.description].filter(Boolean).join(' ') || 'unnamed adapter';
  const f16 = adapter.features.has('shader-f16');
  Object.assign(globalThis, dawn.globals);
  countDispatches(dawn.globals.GPUComputePassEncoder!.prototype);
  noteReads(dawn.globals.GPUBuffer!.prototype);
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
        // tfjs binds one storage buffer per input: the WebGPU default of 8 is too few for some kernels.
        maxStorageBuffersPerShaderStage: l.maxStorageBuffersPerShaderStage,
      };
      const d = await a.requestDevice({ requiredFeatures, requiredLimits });
      watchErrors(d);
      device = d;
      return new wg.WebGPUBackend(d, a.info) as never;
    },
    3,
  );
  return { ok: true, adapter: described, f16, software: info.isFallbackAdapter === true };
}

function countDispatches(proto: Record<string, unknown>): void {
  const key = Symbol.for('lathe.countedDispatch');
  if (proto[key as unknown as string]) return;
  const dispatch = proto.dispatchWorkgroups as (...a: number[]) => void;
  proto.dispatchWorkgroups = function (this: unknown, ...a: number[]) {
    dispatches++;
    return dispatch.apply(this, a);
  };
  proto[key as unknown as string] = true;
}

function noteReads(proto: Record<string, unknown>): void {
  const key = Symbol.for('lathe.notedRead');
  if (proto[key as unknown as string]) return;
  const mapAsync = proto.mapAsync as (...a: unknown[]) => Promise<void>;
  proto.mapAsync = function (this: unknown, ...a: unknown[]) {
    return mapAsync.apply(this, a).then(() => {
      readsBack.push(dispatches);
      if (readsBack.length > 1024) readsBack.shift(); // bounded when no one takes them
    });
  };
  proto[key as unknown as string] = true;
}

function watchErrors(d: GpuDevice): void {
  const seen = new Set<string>();
  const note = (m: string) => {
    const first = m.split('\n')[0]!;
    if (seen.has(first)) return;
    seen.add(first);
    errors.push(m);
  };
  d.addEventListener('uncapturederror', (e) => note(`Dawn validation error: ${e.error.message}`));
  void d.lost.then((info) => note(`the WebGPU device was lost: ${info.message}`));
}

const LIB_DIRS = [
  '/lib/x86_64-linux-gnu',
  '/usr/lib/x86_64-linux-gnu',
  '/lib/aarch64-linux-gnu',
  '/usr/lib/aarch64-linux-gnu',
  '/lib64',
  '/usr/lib64',
  '/lib',
  '/usr/lib',
  '/usr/local/lib',
];
const ICD_DIRS = ['/etc/vulkan/icd.d', '/usr/share/vulkan/icd.d', '/usr/local/share/vulkan/icd.d', '/etc/glvnd'];

/**
 * Why Vulkan (Dawn's backend on Linux) has no adapter here, in words: the loader (libvulkan.so.1)
 * or the driver (an ICD manifest, NVIDIA's nvidia_icd.json) that is missing, or that both are there.
 */
export function vulkanDiagnosis(env: NodeJS.ProcessEnv = process.env): string {
  if (process.platform !== 'linux') return 'no WebGPU adapter on this machine';
  const dirs = [...(env.LD_LIBRARY_PATH ?? '').split(':').filter(Boolean), ...LIB_DIRS];
  const loader = dirs.find((d) => existsSync(join(d, 'libvulkan.so.1')));
  const nvidiaGpu = existsSync('/dev/nvidia0') || existsSync('/proc/driver/nvidia/version');
  const fix =
    'Lathe needs a Vulkan loader (Debian/Ubuntu: apt-get install libvulkan1) and a Vulkan driver: on NVIDIA the ' +
    "driver's Vulkan ICD (nvidia_icd.json), and in a container NVIDIA_DRIVER_CAPABILITIES=compute,utility,graphics";
  if (!loader) return `no Vulkan loader (libvulkan.so.1 is not installed). ${fix}`;
  const named = (env.VK_ICD_FILENAMES ?? env.VK_DRIVER_FILES ?? '').split(':').filter(Boolean);
  const manifests = named.length
    ? named.filter((f) => existsSync(f))
    : ICD_DIRS.flatMap((d) => {
        try {
          return readdirSync(d)
            .filter((f) => f.endsWith('.json'))
            .map((f) => join(d, f));
        } catch {
          return [];
        }
      });
  if (named.length && !manifests.length)
    return `the Vulkan loader is there (${loader}) but the driver manifests named by VK_ICD_FILENAMES/VK_DRIVER_FILES do not exist (${named.join(', ')}). ${fix}`;
  if (!manifests.length)
    return `the Vulkan loader is there (${loader}) but no Vulkan driver (ICD) is installed${nvidiaGpu ? ': this machine has an NVIDIA GPU but not its Vulkan ICD (nvidia_icd.json)' : ''}. ${fix}`;
  const nvidiaIcd = manifests.some((f) => /nvidia/i.test(f) || /nvidia/i.test(safeRead(f)));
  if (nvidiaGpu && !nvidiaIcd)
    return `this machine has an NVIDIA GPU but no NVIDIA Vulkan ICD (found only ${manifests.join(', ')}). ${fix}`;
  return `the Vulkan loader (${loader}) and driver manifests (${manifests.join(', ')}) are there, but no driver offered an adapter (no GPU visible to Vulkan${nvidiaGpu ? '; in a container, check NVIDIA_DRIVER_CAPABILITIES includes graphics' : ''})`;
}

function safeRead(f: string): string {
  try {
    return readFileSync(f, 'utf8');
  } catch {
    return '';
  }
}
