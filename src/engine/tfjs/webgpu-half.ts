import { tf } from './tf.js';
import { FLAT_ARGS, dispatch, gpuBackend, halfOf, output, strided, type WebGpuBackend } from './webgpu-kernels.js';
import { gpuMatMul } from './webgpu-matmul.js';

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
  for (var i = gid.x; i < u.n; i += nwg.x * 256u) { h[i] = ${halfOf('p[i]')}; }
}`;
  dispatch(be, 'to-half', code, [['u32', w.size]], [w, info], strided(w.size));
  const h = tf.keep(tf.engine().makeTensorFromTensorInfo(info));
  copies.set(w.dataId, h);
  return h;
}

/** The f16 copy a product reads for weight `w` under f16 storage (a float32 variable), else undefined. */
export function halfWeight(w: tf.Tensor): tf.Tensor | undefined {
  return w instanceof tf.Variable && w.dtype === 'float32' && halfStorage() ? halfCopy(w) : undefined;
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

/** y = x W^T from W's f16 copy (W [out, in], HF Linear); dy W for the gradient when `bt` is 0. */
export function halfMatMul(x: tf.Tensor2D, h: tf.Tensor, n: number, bt: 0 | 1): tf.Tensor2D {
  return gpuMatMul(x, h, { n, bt: bt === 1, half: true });
}
