import { tf } from './tf.js';
import {
  FLAT_ARGS,
  defineGpuKernel,
  dispatch,
  gpuBackend,
  output,
  runGpuKernel,
  strided,
  type WebGpuBackend,
} from './webgpu-kernels.js';

// f16 storage on webgpu where the adapter has shader-f16: each weight a product reads keeps an f16
// copy beside its fp32 master, and the products read that copy (half the bytes of the largest
// operand at small batch) while accumulating in fp32. The fused AdamW writes the copy in the same
// pass as the master, so it costs no dispatch per step; the master, the gradients and the optimizer
// state stay fp32, and checkpoints hold the fp32 master.
// A copy is a float32 tensor of ceil(n / 2) elements whose bytes are n f16 values: only the kernels
// here read it.

let wanted = true;
const copies = new Map<object, tf.Tensor>();

/** Turns f16 storage on (where the adapter has shader-f16) or off (recipe `dtype: fp32`). */
export function setHalfStorage(on: boolean): void {
  wanted = on;
}

/** Whether products on the active backend read f16 weight copies: webgpu, shader-f16, and not turned off. */
export function halfStorage(): boolean {
  const be = gpuBackend();
  return (
    wanted &&
    !!be &&
    (be.device as unknown as { features: Set<string> }).features.has('shader-f16') &&
    be.device.limits.maxStorageBuffersPerShaderStage! >= 7
  );
}

/** The f16 copy of weight `w` (made on first use, and again once `w` holds new data). */
export function halfCopy(w: tf.Tensor): tf.Tensor {
  const be = gpuBackend()!;
  const hit = copies.get(w.dataId);
  if (hit && !hit.isDisposed) return hit;
  sweep(be);
  const info = output(be, [Math.ceil(w.size / 2)]);
  const code = `enable f16;
struct U { n: u32 }
@group(0) @binding(0) var<uniform> u: U;
@group(0) @binding(1) var<storage, read> p: array<f32>;
@group(0) @binding(2) var<storage, read_write> h: array<f16>;
@compute @workgroup_size(256) fn main(${FLAT_ARGS}) {
  for (var i = gid.x; i < u.n; i += nwg.x * 256u) { h[i] = f16(clamp(p[i], -65504.0, 65504.0)); }
}`;
  dispatch(be, 'to-half', code, [['u32', w.size]], [w, info], strided(w.size));
  const h = tf.keep(tf.engine().makeTensorFromTensorInfo(info));
  copies.set(w.dataId, h);
  return h;
}

/** The f16 copy of `p` kept now, if any: an in-place update of `p` must write it too. */
export function halfCopyOf(p: tf.Tensor): tf.Tensor | undefined {
  const h = copies.get(p.dataId);
  return h && !h.isDisposed ? h : undefined;
}

/** Frees the f16 copies of these weights (their model is disposed). */
export function releaseHalfCopies(ws: Iterable<tf.Tensor>): void {
  for (const w of ws) {
    copies.get(w.dataId)?.dispose();
    copies.delete(w.dataId);
  }
}

// Copies whose weight's data is gone (assigned new values, or disposed).
function sweep(be: WebGpuBackend): void {
  for (const [id, h] of copies)
    if (!be.tensorMap.has(id) || h.isDisposed) {
      h.dispose();
      copies.delete(id);
    }
}

// C [M, N] = A [M, K] times B, B f16: stored [N, K] (bt 1, a Linear weight, the forward) or [K, N]
// (bt 0, the input gradient dy W). 64x64 tiles of C per workgroup, 4x4 per thread, K in steps of 16
// through workgroup memory (B converted to f32 as it is loaded); fp32 accumulation.
defineGpuKernel({
  name: 'LatheHalfMatMul',
  run(be, [a, b], { n, bt }) {
    const k = a!.shape[a!.shape.length - 1]!;
    const m = a!.shape.reduce((x, y) => x * y, 1) / k;
    const c = output(be, [m, n!]);
    const code = `enable f16;
struct U { m: u32, n: u32, k: u32, bt: u32 }
@group(0) @binding(0) var<uniform> u: U;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f16>;
@group(0) @binding(3) var<storage, read_write> c: array<f32>;
var<workgroup> sa: array<array<f32, 64>, 16>;
var<workgroup> sb: array<array<f32, 64>, 16>;
@compute @workgroup_size(16, 16) fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
  let m0 = wid.y * 64u;
  let n0 = wid.x * 64u;
  let t = lid.y * 16u + lid.x;
  var acc: array<array<f32, 4>, 4>;
  for (var k0 = 0u; k0 < u.k; k0 += 16u) {
    for (var e = 0u; e < 4u; e++) {
      let idx = t + e * 256u;
      let r = idx / 16u;
      let kk = idx % 16u;
      var av = 0.0;
      if (m0 + r < u.m && k0 + kk < u.k) { av = a[(m0 + r) * u.k + k0 + kk]; }
      sa[kk][r] = av;
      var bv = 0.0;
      if (u.bt == 1u) {
        if (n0 + r < u.n && k0 + kk < u.k) { bv = f32(b[(n0 + r) * u.k + k0 + kk]); }
        sb[kk][r] = bv;
      } else {
        let kb = idx / 64u;
        let nn = idx % 64u;
        if (n0 + nn < u.n && k0 + kb < u.k) { bv = f32(b[(k0 + kb) * u.n + n0 + nn]); }
        sb[kb][nn] = bv;
      }
    }
    workgroupBarrier();
    for (var kk = 0u; kk < 16u; kk++) {
      var ar: array<f32, 4>;
      var br: array<f32, 4>;
      for (var i = 0u; i < 4u; i++) {
        ar[i] = sa[kk][lid.y * 4u + i];
        br[i] = sb[kk][lid.x * 4u + i];
      }
      for (var i = 0u; i < 4u; i++) {
        for (var j = 0u; j < 4u; j++) { acc[i][j] += ar[i] * br[j]; }
      }
    }
    workgroupBarrier();
  }
  for (var i = 0u; i < 4u; i++) {
    let row = m0 + lid.y * 4u + i;
    for (var j = 0u; j < 4u; j++) {
      let col = n0 + lid.x * 4u + j;
      if (row < u.m && col < u.n) { c[row * u.n + col] = acc[i][j]; }
    }
  }
}`;
    dispatch(
      be,
      'half-matmul',
      code,
      [
        ['u32', m],
        ['u32', n!],
        ['u32', k],
        ['u32', bt!],
      ],
      [a!, b!, c],
      [Math.ceil(n! / 64), Math.ceil(m / 64), 1],
    );
    return [c];
  },
});

/** y = x W^T from W's f16 copy (W [out, in], HF Linear); dy W for the gradient when `bt` is 0. */
export function halfMatMul(x: tf.Tensor2D, h: tf.Tensor, n: number, bt: 0 | 1): tf.Tensor2D {
  return runGpuKernel('LatheHalfMatMul', [x, h], { n, bt })[0] as tf.Tensor2D;
}
