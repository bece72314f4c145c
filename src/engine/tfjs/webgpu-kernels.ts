import { tf } from './tf.js';

// Lathe's own WGSL kernels for tfjs's webgpu backend: each fuses what tfjs would run as several
// dispatches (a compute pass each, with its own read and write of the operands), and some write
// in place (AdamW). They are dispatched through the backend's own command encoder, so they are
// ordered with tfjs's kernels and their buffers are freed only after the queue has them.
// This reaches into @tensorflow/tfjs-backend-webgpu 4.22's WebGPUBackend (pinned in package.json).

interface TensorData {
  resource: GpuBuffer | null;
  values: unknown;
  dtype: string;
  shape: number[];
}
interface GpuBuffer {
  size: number;
}
interface Pass {
  setPipeline(p: unknown): void;
  setBindGroup(i: number, g: unknown): void;
  dispatchWorkgroups(x: number, y?: number, z?: number): void;
  end(): void;
}
interface Pipeline {
  getBindGroupLayout(i: number): unknown;
}
interface Device {
  limits: Record<string, number>;
  createShaderModule(d: { code: string }): unknown;
  createComputePipeline(d: object): Pipeline;
  createBindGroup(d: object): unknown;
}
/** The parts of tfjs-webgpu's WebGPUBackend these kernels use. */
export interface WebGpuBackend {
  device: Device;
  queue: { writeBuffer(b: GpuBuffer, off: number, data: ArrayBuffer): void };
  tensorMap: { get(id: object): TensorData; has(id: object): boolean };
  bufferManager: { acquireBuffer(size: number, usage: number): GpuBuffer };
  uniformPendingDisposal: GpuBuffer[];
  commandQueueOwnedIds: WeakSet<object>;
  commandEncoder: { beginComputePass(d: object): Pass } | null;
  computePassEncoder: Pass | null;
  dispatchCountInPass: number;
  uploadToGPU(id: object): void;
  makeTensorInfo(shape: number[], dtype: tf.DataType): tf.TensorInfo;
  disposeData(id: object): void;
  ensureCommandEncoderReady(): void;
  endComputePassEncoder(): void;
  submitQueue(): void;
}

export type Uniform = ['u32' | 'i32' | 'f32', number];

const pipelines = new WeakMap<Device, Map<string, Pipeline>>();

/** The active webgpu backend (undefined on any other backend). */
export function gpuBackend(): WebGpuBackend | undefined {
  return tf.getBackend() === 'webgpu' ? (tf.backend() as unknown as WebGpuBackend) : undefined;
}

/** Workgroups for a grid-stride loop over n items, at most 65535 in x. */
export function strided(n: number, size = 256): [number, number, number] {
  return [Math.max(1, Math.min(Math.ceil(n / size), 4096)), 1, 1];
}

/** One workgroup per row, rows laid out over x then y (each at most 65535). */
export function perRow(rows: number): [number, number, number] {
  const x = Math.min(rows, 65535);
  return [Math.max(1, x), Math.max(1, Math.ceil(rows / 65535)), 1];
}

export const ROW = `let row = wid.x + wid.y * 65535u;
  if (row >= u.rows) { return; }`;

/** Workgroup tree reductions sumN and maxN for workgroups of n threads (a power of two). */
function reduceFns(n: number): string {
  return `var<workgroup> red: array<f32, ${n}>;
fn sum${n}(v: f32, lid: u32) -> f32 {
  red[lid] = v;
  workgroupBarrier();
  for (var s = ${n / 2}u; s > 0u; s = s >> 1u) {
    if (lid < s) { red[lid] = red[lid] + red[lid + s]; }
    workgroupBarrier();
  }
  let r = red[0];
  workgroupBarrier();
  return r;
}
fn max${n}(v: f32, lid: u32) -> f32 {
  red[lid] = v;
  workgroupBarrier();
  for (var s = ${n / 2}u; s > 0u; s = s >> 1u) {
    if (lid < s) { red[lid] = max(red[lid], red[lid + s]); }
    workgroupBarrier();
  }
  let r = red[0];
  workgroupBarrier();
  return r;
}`;
}
export const REDUCE = reduceFns(64);

export const ROW_ARGS = '@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lidv: vec3<u32>';
/** WGSL: an f32 expression rounded to f16, saturating (an f16 weight copy holds no inf for a large weight). */
export const halfOf = (e: string) => `f16(clamp(${e}, -65504.0, 65504.0))`;

export const FLAT_ARGS = '@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>';

/** Records one dispatch of a WGSL shader on the backend's encoder: binding 0 the uniforms, then the buffers in order. */
export function dispatch(
  be: WebGpuBackend,
  key: string,
  code: string,
  uniforms: Uniform[],
  buffers: tf.TensorInfo[],
  groups: [number, number, number],
): void {
  let cache = pipelines.get(be.device);
  if (!cache) pipelines.set(be.device, (cache = new Map()));
  let pipe = cache.get(key);
  if (!pipe) {
    const module = be.device.createShaderModule({ code });
    pipe = be.device.createComputePipeline({ label: key, layout: 'auto', compute: { module, entryPoint: 'main' } });
    cache.set(key, pipe);
  }
  const bytes = Math.max(16, Math.ceil((uniforms.length * 4) / 16) * 16);
  const data = new ArrayBuffer(bytes);
  const view = new DataView(data);
  uniforms.forEach(([t, v], i) => {
    if (t === 'f32') view.setFloat32(i * 4, v, true);
    else if (t === 'i32') view.setInt32(i * 4, v, true);
    else view.setUint32(i * 4, v, true);
  });
  const ub = be.bufferManager.acquireBuffer(bytes, GPU_USAGE.COPY_DST | GPU_USAGE.UNIFORM);
  be.queue.writeBuffer(ub, 0, data);
  be.uniformPendingDisposal.push(ub);
  const entries = [{ binding: 0, resource: { buffer: ub } }];
  buffers.forEach((t, i) => {
    be.uploadToGPU(t.dataId);
    be.commandQueueOwnedIds.add(t.dataId);
    entries.push({ binding: i + 1, resource: { buffer: be.tensorMap.get(t.dataId).resource! } });
  });
  const bindGroup = be.device.createBindGroup({ layout: pipe.getBindGroupLayout(0), entries });
  be.ensureCommandEncoderReady();
  if (!be.computePassEncoder) be.computePassEncoder = be.commandEncoder!.beginComputePass({});
  be.computePassEncoder.setPipeline(pipe);
  be.computePassEncoder.setBindGroup(0, bindGroup);
  be.computePassEncoder.dispatchWorkgroups(...groups);
  be.dispatchCountInPass++;
  if (be.dispatchCountInPass >= tf.env().getNumber('WEBGPU_DEFERRED_SUBMIT_BATCH_SIZE')) {
    be.endComputePassEncoder();
    be.submitQueue();
  }
}

// GPUBufferUsage, without relying on Dawn's globals at import time.
const GPU_USAGE = { COPY_DST: 0x0008, UNIFORM: 0x0040 };

/** A new float32 output on the backend (its buffer is allocated on first dispatch). */
export function output(be: WebGpuBackend, shape: number[]): tf.TensorInfo {
  return be.makeTensorInfo(shape, 'float32');
}

/** Marks a tensor written in place: a copy of its values kept on the CPU by an earlier read is stale. */
export function written(be: WebGpuBackend, t: tf.TensorInfo): void {
  be.tensorMap.get(t.dataId).values = null;
}

// ---------------------------------------------------------------------------------------------
// Kernels run through tfjs's engine (tf.engine().runKernel), so the tape, tidy and disposal work.

interface GpuKernel {
  name: string;
  run(be: WebGpuBackend, inputs: tf.TensorInfo[], attrs: Record<string, number>): tf.TensorInfo[];
}

const kernels = new Map<string, GpuKernel>();

export function defineGpuKernel(k: GpuKernel): void {
  kernels.set(k.name, k);
}

/** Whether kernel `name` has a WGSL version and the active backend is webgpu (registering it there). */
export function gpuKernel(name: string): boolean {
  if (!gpuBackend()) return false;
  if (tf.getKernel(name, 'webgpu')) return true;
  const k = kernels.get(name);
  if (!k) return false;
  tf.registerKernel({
    kernelName: name,
    backendName: 'webgpu',
    kernelFunc: ({ inputs, backend, attrs }) =>
      k.run(backend as unknown as WebGpuBackend, Object.values(inputs) as tf.TensorInfo[], (attrs ?? {}) as never),
  });
  return true;
}

/** Runs a kernel of this file on webgpu; inputs are named in order. */
export function runGpuKernel(name: string, inputs: tf.Tensor[], attrs: Record<string, number> = {}): tf.Tensor[] {
  if (!gpuKernel(name)) throw new Error(`${name} runs on webgpu only (the backend is ${tf.getBackend()})`);
  const named: tf.NamedTensorMap = {};
  inputs.forEach((x, i) => (named[`x${i}`] = x));
  const out = tf.engine().runKernel(name, named, attrs as unknown as tf.NamedAttrMap);
  return Array.isArray(out) ? (out as tf.Tensor[]) : [out as tf.Tensor];
}

const lastDim = (t: tf.TensorInfo) => t.shape[t.shape.length - 1]!;
const sizeOf = (s: readonly number[]) => s.reduce((a, b) => a * b, 1);

// RMSNorm: y = x r w with r = 1/sqrt(mean(x^2) + eps) per row; outputs y and r (saved for the
// backward pass). One workgroup per row.
defineGpuKernel({
  name: 'LatheRmsNorm',
  run(be, [x, w], { eps }) {
    const d = lastDim(x!);
    const rows = sizeOf(x!.shape) / d;
    const y = output(be, x!.shape);
    const r = output(be, [rows]);
    const code = `struct U { rows: u32, d: u32, eps: f32 }
@group(0) @binding(0) var<uniform> u: U;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> w: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
@group(0) @binding(4) var<storage, read_write> r: array<f32>;
${REDUCE}
@compute @workgroup_size(64) fn main(${ROW_ARGS}) {
  ${ROW}
  let lid = lidv.x;
  let o = row * u.d;
  var s = 0.0;
  for (var i = lid; i < u.d; i += 64u) { let v = x[o + i]; s += v * v; }
  let ri = inverseSqrt(sum64(s, lid) / f32(u.d) + u.eps);
  for (var i = lid; i < u.d; i += 64u) { y[o + i] = x[o + i] * ri * w[i]; }
  if (lid == 0u) { r[row] = ri; }
}`;
    dispatch(
      be,
      'rmsnorm',
      code,
      [
        ['u32', rows],
        ['u32', d],
        ['f32', eps!],
      ],
      [x!, w!, y, r],
      perRow(rows),
    );
    return [y, r];
  },
});

// RMSNorm's input gradient: g = dy w, xr = x r, dx = r (g - xr mean(g xr)). One workgroup per row.
defineGpuKernel({
  name: 'LatheRmsNormGradX',
  run(be, [dy, x, w, r]) {
    const d = lastDim(x!);
    const rows = sizeOf(x!.shape) / d;
    const dx = output(be, x!.shape);
    const code = `struct U { rows: u32, d: u32 }
@group(0) @binding(0) var<uniform> u: U;
@group(0) @binding(1) var<storage, read> dy: array<f32>;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read> w: array<f32>;
@group(0) @binding(4) var<storage, read> r: array<f32>;
@group(0) @binding(5) var<storage, read_write> dx: array<f32>;
${REDUCE}
@compute @workgroup_size(64) fn main(${ROW_ARGS}) {
  ${ROW}
  let lid = lidv.x;
  let o = row * u.d;
  let ri = r[row];
  var s = 0.0;
  for (var i = lid; i < u.d; i += 64u) { s += dy[o + i] * w[i] * x[o + i] * ri; }
  let m = sum64(s, lid) / f32(u.d);
  for (var i = lid; i < u.d; i += 64u) {
    let xr = x[o + i] * ri;
    dx[o + i] = ri * (dy[o + i] * w[i] - xr * m);
  }
}`;
    dispatch(
      be,
      'rmsnorm-dx',
      code,
      [
        ['u32', rows],
        ['u32', d],
      ],
      [dy!, x!, w!, r!, dx],
      perRow(rows),
    );
    return [dx];
  },
});

// RMSNorm's weight gradient: dw[i] = sum over rows of dy x r. A workgroup per 64 columns, each
// thread walking the rows of its column (coalesced across the workgroup).
defineGpuKernel({
  name: 'LatheRmsNormGradW',
  run(be, [dy, x, r]) {
    const d = lastDim(x!);
    const rows = sizeOf(x!.shape) / d;
    const dw = output(be, [d]);
    const code = `struct U { rows: u32, d: u32 }
@group(0) @binding(0) var<uniform> u: U;
@group(0) @binding(1) var<storage, read> dy: array<f32>;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read> r: array<f32>;
@group(0) @binding(4) var<storage, read_write> dw: array<f32>;
@compute @workgroup_size(64) fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let i = gid.x;
  if (i >= u.d) { return; }
  var s = 0.0;
  for (var row = 0u; row < u.rows; row++) { s += dy[row * u.d + i] * x[row * u.d + i] * r[row]; }
  dw[i] = s;
}`;
    dispatch(
      be,
      'rmsnorm-dw',
      code,
      [
        ['u32', rows],
        ['u32', d],
      ],
      [dy!, x!, r!, dw],
      [Math.ceil(d / 64), 1, 1],
    );
    return [dw];
  },
});

// SwiGLU: y = silu(g) u forward; backward with s = sigmoid(g): du = dy g s, dg = dy u s (1 + g (1 - s)).
defineGpuKernel({
  name: 'LatheSwiglu',
  run(be, [g, up]) {
    const n = sizeOf(g!.shape);
    const y = output(be, g!.shape);
    const code = `struct U { n: u32 }
@group(0) @binding(0) var<uniform> u: U;
@group(0) @binding(1) var<storage, read> g: array<f32>;
@group(0) @binding(2) var<storage, read> up: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
@compute @workgroup_size(256) fn main(${FLAT_ARGS}) {
  for (var i = gid.x; i < u.n; i += nwg.x * 256u) {
    let gi = g[i];
    y[i] = gi / (1.0 + exp(-gi)) * up[i];
  }
}`;
    dispatch(be, 'swiglu', code, [['u32', n]], [g!, up!, y], strided(n));
    return [y];
  },
});

defineGpuKernel({
  name: 'LatheSwigluGrad',
  run(be, [dh, g, up]) {
    const n = sizeOf(g!.shape);
    const dg = output(be, g!.shape);
    const du = output(be, g!.shape);
    const code = `struct U { n: u32 }
@group(0) @binding(0) var<uniform> u: U;
@group(0) @binding(1) var<storage, read> dh: array<f32>;
@group(0) @binding(2) var<storage, read> g: array<f32>;
@group(0) @binding(3) var<storage, read> up: array<f32>;
@group(0) @binding(4) var<storage, read_write> dg: array<f32>;
@group(0) @binding(5) var<storage, read_write> du: array<f32>;
@compute @workgroup_size(256) fn main(${FLAT_ARGS}) {
  for (var i = gid.x; i < u.n; i += nwg.x * 256u) {
    let gi = g[i];
    let s = 1.0 / (1.0 + exp(-gi));
    let d = dh[i];
    du[i] = d * gi * s;
    dg[i] = d * up[i] * s * (1.0 + gi * (1.0 - s));
  }
}`;
    dispatch(be, 'swiglu-grad', code, [['u32', n]], [dh!, g!, up!, dg, du], strided(n));
    return [dg, du];
  },
});

// RoPE fused with the head split (the semantics of LatheRopeSplit in kernels.ts): dir 1 takes
// x [B*T, H*hd] to y [B, H, T, hd] rotated; dir -1 takes dy [B, H, T, hd] back to [B*T, H*hd].
defineGpuKernel({
  name: 'LatheRopeSplit',
  run(be, [x, c, s], { batch, seq, heads, dir }) {
    const hd = lastDim(c!);
    const out = output(be, dir === -1 ? [batch! * seq!, heads! * hd] : [batch!, heads!, seq!, hd]);
    const n = (batch! * heads! * seq! * hd) / 2;
    const code = `struct U { n: u32, b: u32, h: u32, t: u32, hd: u32, fwd: u32 }
@group(0) @binding(0) var<uniform> u: U;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> c: array<f32>;
@group(0) @binding(3) var<storage, read> s: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;
@compute @workgroup_size(256) fn main(${FLAT_ARGS}) {
  let half = u.hd / 2u;
  for (var k = gid.x; k < u.n; k += nwg.x * 256u) {
    let i = k % half;
    let rest = k / half;
    let t = rest % u.t;
    let h = (rest / u.t) % u.h;
    let b = rest / (u.t * u.h);
    let tokenMajor = ((b * u.t + t) * u.h + h) * u.hd;
    let headMajor = ((b * u.h + h) * u.t + t) * u.hd;
    let row = t * u.hd;
    if (u.fwd == 1u) {
      let a = x[tokenMajor + i];
      let bb = x[tokenMajor + i + half];
      y[headMajor + i] = a * c[row + i] - bb * s[row + i];
      y[headMajor + i + half] = bb * c[row + i + half] + a * s[row + i + half];
    } else {
      let a = x[headMajor + i];
      let bb = x[headMajor + i + half];
      y[tokenMajor + i] = a * c[row + i] + bb * s[row + i + half];
      y[tokenMajor + i + half] = bb * c[row + i + half] - a * s[row + i];
    }
  }
}`;
    dispatch(
      be,
      'rope-split',
      code,
      [
        ['u32', n],
        ['u32', batch!],
        ['u32', heads!],
        ['u32', seq!],
        ['u32', hd],
        ['u32', dir === -1 ? 0 : 1],
      ],
      [x!, c!, s!, out],
      strided(n),
    );
    return [out];
  },
});

// An attention layer's three projections in one pass: xq [B*T, H*hd], xk and xv [B*T, KH*hd] to
// [B, H, T, hd], [B, KH, T, hd] and [B, KH, T, hd], RoPE on q and k (LatheRopeSplit's rotation),
// v moved only. dir -1 takes the three gradients back to the projections' layout. One dispatch a
// way where the split, the rotations and v's transpose took five (eight storage buffers).
const QKV_PART = (buf: string, dst: string, nh: string, first: string, rotate: boolean) => `{
    let h = hh - ${first};
    let tokenMajor = ((b * u.t + t) * ${nh} + h) * u.hd;
    let headMajor = ((b * ${nh} + h) * u.t + t) * u.hd;
    ${
      rotate
        ? `if (u.fwd == 1u) {
      let a = ${buf}[tokenMajor + i];
      let bb = ${buf}[tokenMajor + i + half];
      ${dst}[headMajor + i] = a * c[row + i] - bb * s[row + i];
      ${dst}[headMajor + i + half] = bb * c[row + i + half] + a * s[row + i + half];
    } else {
      let a = ${buf}[headMajor + i];
      let bb = ${buf}[headMajor + i + half];
      ${dst}[tokenMajor + i] = a * c[row + i] + bb * s[row + i + half];
      ${dst}[tokenMajor + i + half] = bb * c[row + i + half] - a * s[row + i];
    }`
        : `if (u.fwd == 1u) {
      ${dst}[headMajor + i] = ${buf}[tokenMajor + i];
      ${dst}[headMajor + i + half] = ${buf}[tokenMajor + i + half];
    } else {
      ${dst}[tokenMajor + i] = ${buf}[headMajor + i];
      ${dst}[tokenMajor + i + half] = ${buf}[headMajor + i + half];
    }`
    }
  }`;
defineGpuKernel({
  name: 'LatheQkvSplit',
  run(be, [xq, xk, xv, c, s], { batch, seq, heads, kvHeads, dir }) {
    const hd = lastDim(c!);
    const [b, t, h, kh] = [batch!, seq!, heads!, kvHeads!];
    const outs = (
      dir === -1
        ? [
            [b * t, h * hd],
            [b * t, kh * hd],
            [b * t, kh * hd],
          ]
        : [
            [b, h, t, hd],
            [b, kh, t, hd],
            [b, kh, t, hd],
          ]
    ).map((shape) => output(be, shape));
    const n = (b * t * (h + 2 * kh) * hd) / 2;
    const code = `struct U { n: u32, b: u32, h: u32, kh: u32, t: u32, hd: u32, fwd: u32 }
@group(0) @binding(0) var<uniform> u: U;
@group(0) @binding(1) var<storage, read> xq: array<f32>;
@group(0) @binding(2) var<storage, read> xk: array<f32>;
@group(0) @binding(3) var<storage, read> xv: array<f32>;
@group(0) @binding(4) var<storage, read> c: array<f32>;
@group(0) @binding(5) var<storage, read> s: array<f32>;
@group(0) @binding(6) var<storage, read_write> yq: array<f32>;
@group(0) @binding(7) var<storage, read_write> yk: array<f32>;
@group(0) @binding(8) var<storage, read_write> yv: array<f32>;
@compute @workgroup_size(256) fn main(${FLAT_ARGS}) {
  let half = u.hd / 2u;
  let all = u.h + 2u * u.kh;
  for (var k = gid.x; k < u.n; k += nwg.x * 256u) {
    let i = k % half;
    let rest = k / half;
    let t = rest % u.t;
    let hh = (rest / u.t) % all;
    let b = rest / (u.t * all);
    let row = t * u.hd;
    if (hh < u.h) ${QKV_PART('xq', 'yq', 'u.h', '0u', true)} else if (hh < u.h + u.kh) ${QKV_PART('xk', 'yk', 'u.kh', 'u.h', true)} else ${QKV_PART('xv', 'yv', 'u.kh', '(u.h + u.kh)', false)}
  }
}`;
    dispatch(
      be,
      'qkv-split',
      code,
      [
        ['u32', n],
        ['u32', b],
        ['u32', h],
        ['u32', kh],
        ['u32', t],
        ['u32', hd],
        ['u32', dir === -1 ? 0 : 1],
      ],
      [xq!, xk!, xv!, c!, s!, ...outs],
      strided(n),
    );
    return outs;
  },
});
tf.registerGradient({
  kernelName: 'LatheQkvSplit',
  inputsToSave: ['x3', 'x4'],
  gradFunc: (dys, saved, attrs) => {
    const [dq, dk, dv] = dys as tf.Tensor[];
    const [c, s] = saved;
    const back = runGpuKernel('LatheQkvSplit', [dq!, dk!, dv!, c!, s!], {
      ...(attrs as unknown as Record<string, number>),
      dir: -1,
    });
    return {
      x0: () => back[0]!,
      x1: () => back[1]!,
      x2: () => back[2]!,
      x3: () => tf.zerosLike(c!),
      x4: () => tf.zerosLike(s!),
    };
  },
});

/** Whether the device binds the eight storage buffers LatheQkvSplit needs in one shader stage. */
export function qkvSplitFits(): boolean {
  const be = gpuBackend();
  return !!be && be.device.limits.maxStorageBuffersPerShaderStage! >= 8 && gpuKernel('LatheQkvSplit');
}

// The gradient of an embedding lookup y = w[ids]: dw [V, D], row v the sum of dy's rows whose id
// is v, in token order (deterministic, no atomics; an id outside 0..V-1 adds nowhere). One
// workgroup per vocabulary row, where tfjs's UnsortedSegmentSum runs a fill, four transposes and
// the scatter.
defineGpuKernel({
  name: 'LatheEmbedGrad',
  run(be, [dy, ids], { vocab }) {
    const d = lastDim(dy!);
    const n = ids!.shape[0]!;
    const dw = output(be, [vocab!, d]);
    const code = `struct U { rows: u32, d: u32, n: u32 }
@group(0) @binding(0) var<uniform> u: U;
@group(0) @binding(1) var<storage, read> dy: array<f32>;
@group(0) @binding(2) var<storage, read> ids: array<i32>;
@group(0) @binding(3) var<storage, read_write> dw: array<f32>;
@compute @workgroup_size(64) fn main(${ROW_ARGS}) {
  ${ROW}
  let lid = lidv.x;
  let id = i32(row);
  for (var c = lid; c < u.d; c += 64u) {
    var acc = 0.0;
    for (var j = 0u; j < u.n; j++) {
      if (ids[j] == id) { acc += dy[j * u.d + c]; }
    }
    dw[row * u.d + c] = acc;
  }
}`;
    dispatch(
      be,
      'embed-grad',
      code,
      [
        ['u32', vocab!],
        ['u32', d],
        ['u32', n],
      ],
      [dy!, ids!, dw],
      perRow(vocab!),
    );
    return [dw];
  },
});

// Causal softmax of attention scores, scaled: p = softmax(scale s + mask) over each row of
// s [G, T, S], where query t (at absolute position pos0 + t) sees keys 0..pos0+t. One workgroup per row.
defineGpuKernel({
  name: 'LatheCausalSoftmax',
  run(be, [sc], { scale, pos0 }) {
    const [g, t, s] = sc!.shape as [number, number, number];
    const p = output(be, sc!.shape);
    const code = `struct U { rows: u32, t: u32, s: u32, pos0: u32, scale: f32 }
@group(0) @binding(0) var<uniform> u: U;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> p: array<f32>;
${REDUCE}
@compute @workgroup_size(64) fn main(${ROW_ARGS}) {
  ${ROW}
  let lid = lidv.x;
  let o = row * u.s;
  let last = min(u.pos0 + row % u.t, u.s - 1u);
  var m = -3.0e38;
  for (var i = lid; i <= last; i += 64u) { m = max(m, x[o + i] * u.scale); }
  m = max64(m, lid);
  var z = 0.0;
  for (var i = lid; i <= last; i += 64u) { z += exp(x[o + i] * u.scale - m); }
  z = sum64(z, lid);
  for (var i = lid; i < u.s; i += 64u) {
    if (i <= last) { p[o + i] = exp(x[o + i] * u.scale - m) / z; } else { p[o + i] = 0.0; }
  }
}`;
    dispatch(
      be,
      'causal-softmax',
      code,
      [
        ['u32', g * t],
        ['u32', t],
        ['u32', s],
        ['u32', pos0!],
        ['f32', scale!],
      ],
      [sc!, p],
      perRow(g * t),
    );
    return [p];
  },
});

// Its gradient with respect to the raw scores: ds = scale p (dp - sum(dp p)). One workgroup per row.
defineGpuKernel({
  name: 'LatheSoftmaxGrad',
  run(be, [p, dp], { scale }) {
    const s = lastDim(p!);
    const rows = sizeOf(p!.shape) / s;
    const ds = output(be, p!.shape);
    const code = `struct U { rows: u32, s: u32, scale: f32 }
@group(0) @binding(0) var<uniform> u: U;
@group(0) @binding(1) var<storage, read> p: array<f32>;
@group(0) @binding(2) var<storage, read> dp: array<f32>;
@group(0) @binding(3) var<storage, read_write> ds: array<f32>;
${REDUCE}
@compute @workgroup_size(64) fn main(${ROW_ARGS}) {
  ${ROW}
  let lid = lidv.x;
  let o = row * u.s;
  var a = 0.0;
  for (var i = lid; i < u.s; i += 64u) { a += dp[o + i] * p[o + i]; }
  a = sum64(a, lid);
  for (var i = lid; i < u.s; i += 64u) { ds[o + i] = u.scale * p[o + i] * (dp[o + i] - a); }
}`;
    dispatch(
      be,
      'softmax-grad',
      code,
      [
        ['u32', rows],
        ['u32', s],
        ['f32', scale!],
      ],
      [p!, dp!, ds],
      perRow(rows),
    );
    return [ds];
  },
});

// Token negative log-likelihood over the vocabulary in one pass a row: nll = lse - x[target]
// (0 for a target outside [0, V)), and lse saved for the backward pass.
defineGpuKernel({
  name: 'LatheNll',
  run(be, [x, t]) {
    const [n, v] = x!.shape as [number, number];
    const nll = output(be, [n]);
    const lse = output(be, [n]);
    const code = `struct U { rows: u32, v: u32 }
@group(0) @binding(0) var<uniform> u: U;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> t: array<i32>;
@group(0) @binding(3) var<storage, read_write> nll: array<f32>;
@group(0) @binding(4) var<storage, read_write> lse: array<f32>;
${REDUCE}
@compute @workgroup_size(64) fn main(${ROW_ARGS}) {
  ${ROW}
  let lid = lidv.x;
  let o = row * u.v;
  var m = -3.0e38;
  for (var i = lid; i < u.v; i += 64u) { m = max(m, x[o + i]); }
  m = max64(m, lid);
  var z = 0.0;
  for (var i = lid; i < u.v; i += 64u) { z += exp(x[o + i] - m); }
  z = sum64(z, lid);
  if (lid == 0u) {
    let l = m + log(z);
    lse[row] = l;
    let j = t[row];
    if (j >= 0 && u32(j) < u.v) { nll[row] = l - x[o + u32(j)]; } else { nll[row] = 0.0; }
  }
}`;
    dispatch(
      be,
      'nll',
      code,
      [
        ['u32', n],
        ['u32', v],
      ],
      [x!, t!, nll, lse],
      perRow(n),
    );
    return [nll, lse];
  },
});

// dx = (softmax(x) - onehot(target)) dy, a row of zeros where the target is outside [0, V).
defineGpuKernel({
  name: 'LatheNllGrad',
  run(be, [x, lse, dy, t]) {
    const [n, v] = x!.shape as [number, number];
    const dx = output(be, x!.shape);
    const code = `struct U { n: u32, v: u32 }
@group(0) @binding(0) var<uniform> u: U;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> lse: array<f32>;
@group(0) @binding(3) var<storage, read> dy: array<f32>;
@group(0) @binding(4) var<storage, read> t: array<i32>;
@group(0) @binding(5) var<storage, read_write> dx: array<f32>;
@compute @workgroup_size(256) fn main(${FLAT_ARGS}) {
  for (var k = gid.x; k < u.n; k += nwg.x * 256u) {
    let row = k / u.v;
    let j = t[row];
    if (j < 0 || u32(j) >= u.v) { dx[k] = 0.0; continue; }
    var g = exp(x[k] - lse[row]) * dy[row];
    if (k % u.v == u32(j)) { g -= dy[row]; }
    dx[k] = g;
  }
}`;
    dispatch(
      be,
      'nll-grad',
      code,
      [
        ['u32', n * v],
        ['u32', v],
      ],
      [x!, lse!, dy!, t!, dx],
      strided(n * v),
    );
    return [dx];
  },
});

// Mixtral's routing choice on the device: a 0/1 mask [n, E] marking the k largest router
// probabilities of each row, ties to the lower expert (as topKRows in moe.ts). One thread a row.
defineGpuKernel({
  name: 'LatheTopKMask',
  run(be, [p], { k }) {
    const [n, e] = p!.shape as [number, number];
    const mask = output(be, p!.shape);
    const code = `struct U { n: u32, e: u32, k: u32 }
@group(0) @binding(0) var<uniform> u: U;
@group(0) @binding(1) var<storage, read> p: array<f32>;
@group(0) @binding(2) var<storage, read_write> mask: array<f32>;
@compute @workgroup_size(64) fn main(${FLAT_ARGS}) {
  for (var row = gid.x; row < u.n; row += nwg.x * 64u) {
    let o = row * u.e;
    for (var c = 0u; c < u.e; c++) { mask[o + c] = 0.0; }
    for (var j = 0u; j < u.k; j++) {
      var best = 0u;
      var found = false;
      for (var c = 0u; c < u.e; c++) {
        if (mask[o + c] > 0.0) { continue; }
        if (!found || p[o + c] > p[o + best]) { best = c; found = true; }
      }
      mask[o + best] = 1.0;
    }
  }
}`;
    dispatch(
      be,
      'topk-mask',
      code,
      [
        ['u32', n],
        ['u32', e],
        ['u32', k!],
      ],
      [p!, mask],
      strided(n, 64),
    );
    return [mask];
  },
});

// The routing choice is discrete: no gradient flows through the mask.
tf.registerGradient({ kernelName: 'LatheTopKMask', gradFunc: (dy) => ({ x0: () => tf.zerosLike(dy as tf.Tensor) }) });

// ---------------------------------------------------------------------------------------------
// The optimizer step on the device: the global gradient norm, clipping and the non-finite skip are
// decided there (no read before the update), and AdamW updates p, m and v in place.

/**
 * The clipping control of a step [4]: the global norm of the gradients times `gscale` (1 / the
 * number of micro-batches), the factor each gradient is multiplied by (gscale, times clip / norm
 * when the norm exceeds a positive clip), and 1 when the norm is not finite (the step is skipped).
 */
export function gpuClipControl(grads: tf.Tensor[], clip: number, gscale: number): tf.Tensor1D {
  const be = gpuBackend()!;
  // Inputs a dispatch binds: the device's storage-buffer limit, less the partial sums it writes.
  const per = Math.max(1, Math.min(8, be.device.limits.maxStorageBuffersPerShaderStage! - 1));
  const CHUNK = 4096;
  const chunks = grads.map((g) => Math.max(1, Math.ceil(g.size / CHUNK)));
  const total = chunks.reduce((a, b) => a + b, 0);
  const partial = output(be, [total]);
  let base = 0;
  for (let i = 0; i < grads.length; i += per) {
    const group = grads.slice(i, i + per);
    const k = group.length;
    const decl = group.map((_, j) => `@group(0) @binding(${j + 2}) var<storage, read> g${j}: array<f32>;`).join('\n');
    const cases = group.map((_, j) => `case ${j}u: { v = g${j}[idx]; }`).join('\n      ');
    const code = `struct U { info: array<vec4<u32>, ${k}> }
@group(0) @binding(0) var<uniform> u: U;
@group(0) @binding(1) var<storage, read_write> partial: array<f32>;
${decl}
${reduceFns(256)}
@compute @workgroup_size(256) fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lidv: vec3<u32>) {
  let j = wid.y;
  let n = u.info[j].x;
  let c = wid.x;
  if (c >= u.info[j].z) { return; }
  let lid = lidv.x;
  var s = 0.0;
  for (var q = lid; q < ${CHUNK}u; q += 256u) {
    let idx = c * ${CHUNK}u + q;
    if (idx < n) {
      var v = 0.0;
      switch j {
      ${cases}
        default: {}
      }
      s += v * v;
    }
  }
  s = sum256(s, lid);
  if (lid == 0u) { partial[u.info[j].y + c] = s; }
}`;
    const uniforms: Uniform[] = [];
    group.forEach((g, j) => {
      uniforms.push(['u32', g.size], ['u32', base], ['u32', chunks[i + j]!], ['u32', 0]);
      base += chunks[i + j]!;
    });
    dispatch(be, `sumsq-${k}`, code, uniforms, [partial, ...group], [Math.max(...chunks.slice(i, i + k)), k, 1]);
  }
  const ctl = output(be, [4]);
  const code = `struct U { n: u32, clip: f32, gscale: f32 }
@group(0) @binding(0) var<uniform> u: U;
@group(0) @binding(1) var<storage, read> partial: array<f32>;
@group(0) @binding(2) var<storage, read_write> ctl: array<f32>;
${reduceFns(256)}
@compute @workgroup_size(256) fn main(@builtin(local_invocation_id) lidv: vec3<u32>) {
  let lid = lidv.x;
  var s = 0.0;
  for (var i = lid; i < u.n; i += 256u) { s += partial[i]; }
  s = sum256(s, lid);
  if (lid == 0u) {
    let norm = sqrt(s) * u.gscale;
    let bad = (bitcast<u32>(norm) & 0x7f800000u) == 0x7f800000u;
    var f = u.gscale;
    if (!bad && u.clip > 0.0 && norm > u.clip) { f = u.gscale * (u.clip / norm); }
    ctl[0] = norm;
    ctl[1] = f;
    ctl[2] = select(0.0, 1.0, bad);
    ctl[3] = 0.0;
  }
}`;
  dispatch(
    be,
    'clip-control',
    code,
    [
      ['u32', total],
      ['f32', clip],
      ['f32', gscale],
    ],
    [partial, ctl],
    [1, 1, 1],
  );
  be.disposeData(partial.dataId);
  return tf.engine().makeTensorFromTensorInfo(ctl) as tf.Tensor1D;
}

/** AdamW's settings for one parameter's update (bias corrections of this step; decay 0: none). */
export interface GpuAdamW {
  beta1: number;
  beta2: number;
  bc1: number;
  bc2: number;
  eps: number;
  lr: number;
  decay: number;
}

/**
 * One AdamW update of p, m and v in place, from the gradient g scaled by ctl[1], skipped where
 * ctl[2] is set, and (for an MoE expert's weight) where active[index] is 0: an expert no token
 * chose all step is left as it is, as on the other backends, where it has no gradient.
 */
export function gpuAdamW(
  p: tf.Tensor,
  g: tf.Tensor,
  m: tf.Tensor,
  v: tf.Tensor,
  ctl: tf.Tensor,
  a: GpuAdamW,
  active?: { use: tf.Tensor; index: number },
  half?: tf.Tensor,
): void {
  const be = gpuBackend()!;
  const n = p.size;
  for (const t of [p, m, v]) {
    be.uploadToGPU(t.dataId);
    written(be, t);
  }
  // With `half` (p's f16 copy, webgpu-half.ts) the new p is also written there, rounded.
  const code = `${half ? 'enable f16;\n' : ''}struct U { n: u32, b1: f32, b2: f32, bc1: f32, bc2: f32, eps: f32, lr: f32, decay: f32, idx: i32 }
@group(0) @binding(0) var<uniform> u: U;
@group(0) @binding(1) var<storage, read_write> p: array<f32>;
@group(0) @binding(2) var<storage, read> g: array<f32>;
@group(0) @binding(3) var<storage, read_write> m: array<f32>;
@group(0) @binding(4) var<storage, read_write> v: array<f32>;
@group(0) @binding(5) var<storage, read> ctl: array<f32>;
@group(0) @binding(6) var<storage, read> used: array<f32>;
${half ? '@group(0) @binding(7) var<storage, read_write> h: array<f16>;' : ''}
@compute @workgroup_size(256) fn main(${FLAT_ARGS}) {
  if (ctl[2] > 0.5) { return; }
  if (u.idx >= 0 && used[u.idx] <= 0.0) { return; }
  let f = ctl[1];
  for (var i = gid.x; i < u.n; i += nwg.x * 256u) {
    let gi = g[i] * f;
    let mi = u.b1 * m[i] + (1.0 - u.b1) * gi;
    let vi = u.b2 * v[i] + (1.0 - u.b2) * gi * gi;
    m[i] = mi;
    v[i] = vi;
    let pi = p[i];
    let pn = pi - u.lr * (mi / u.bc1 / (sqrt(vi / u.bc2) + u.eps)) - u.lr * u.decay * pi;
    p[i] = pn;
    ${half ? `h[i] = ${halfOf('pn')};` : ''}
  }
}`;
  if (half) written(be, half);
  dispatch(
    be,
    half ? 'adamw-half' : 'adamw',
    code,
    [
      ['u32', n],
      ['f32', a.beta1],
      ['f32', a.beta2],
      ['f32', a.bc1],
      ['f32', a.bc2],
      ['f32', a.eps],
      ['f32', a.lr],
      ['f32', a.decay],
      ['i32', active ? active.index : -1],
    ],
    [p, g, m, v, ctl, active ? active.use : ctl, ...(half ? [half] : [])],
    strided(n),
  );
}

// ---------------------------------------------------------------------------------------------

/**
 * Lathe's fixes to tfjs-webgpu's kernels, registered when the backend starts. AddN binds one
 * storage buffer per input, and with more inputs than the device allows a shader stage (8 by
 * default) its pipeline is invalid: Dawn then drops the whole command buffer it was recorded in,
 * with every kernel before it since the last submit, and the output keeps whatever its recycled
 * buffer held. That made the global gradient norm (an AddN over every parameter) report stale
 * numbers. Here AddN sums at most limit - 1 inputs per dispatch.
 */
export function registerWebGpuKernels(): void {
  const stock = tf.getKernel('AddN', 'webgpu');
  if (!stock || (stock.kernelFunc as { lathe?: boolean }).lathe) return;
  const addN = stock.kernelFunc;
  const chunked = ((args: { inputs: tf.TensorInfo[]; backend: WebGpuBackend; attrs: unknown }) => {
    const { inputs, backend } = args;
    const most = Math.max(2, backend.device.limits.maxStorageBuffersPerShaderStage! - 1);
    if (inputs.length <= most) return addN(args as never);
    let acc = addN({ ...args, inputs: inputs.slice(0, most) } as never) as tf.TensorInfo;
    for (let i = most; i < inputs.length; i += most - 1) {
      const next = addN({ ...args, inputs: [acc, ...inputs.slice(i, i + most - 1)] } as never) as tf.TensorInfo;
      backend.disposeData(acc.dataId);
      acc = next;
    }
    return acc;
  }) as unknown as tf.KernelFunc & { lathe?: boolean };
  chunked.lathe = true;
  tf.unregisterKernel('AddN', 'webgpu');
  tf.registerKernel({ kernelName: 'AddN', backendName: 'webgpu', kernelFunc: chunked });
}
