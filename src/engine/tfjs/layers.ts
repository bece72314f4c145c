import { tf } from './tf.js';
import {
  attentionCore,
  fusedKernels,
  gpuAttention,
  gpuKernels,
  ropeOp,
  ropeSplitOp,
  rmsNormOp,
  swigluOp,
} from './kernels.js';
import { nativeMatMulActive } from './native-kernels.js';
import { ropeInvFreq } from '../../model/rope.js';
import type { RopeScaling } from '../../model/spec.js';
import { gpuBackend, gpuKernel, qkvSplitFits, runGpuKernel } from './webgpu-kernels.js';
import { halfMatMul, halfWeight } from './webgpu-half.js';

// Building blocks shared by the dense and MoE decoders. Weights follow HF Linear: [out, in].

export type Params = Map<string, tf.Variable>;

/** Returns the named parameter or throws, naming it (a missing weight is a loading bug, not user input). */
export function param(p: Params, name: string): tf.Variable {
  const v = p.get(name);
  if (!v) throw new Error(`model parameter ${name} is missing`);
  return v;
}

// tfjs-wasm runs transposed matmuls (NT, TN) about 10x slower than plain NN ones, and the stock
// MatMul gradient uses both. Explicit transposes are cheap, so the forward and both gradients
// are written as NN products.
// With the native GEMM (engine/tfjs/native-kernels.ts), and on webgpu (whose matmul shader reads
// either layout), transposed operands cost nothing, so the products take W as stored.
// With f16 storage (engine/tfjs/webgpu-half.ts) the forward and dx read W's f16 copy; dW stays fp32.
const linearOp = tf.customGrad(((x: tf.Tensor, w: tf.Tensor, save: tf.GradSaveFunc) => {
  save([x, w]);
  const native = nativeMatMulActive() || gpuBackend() !== undefined;
  const h = native ? halfWeight(w) : undefined;
  if (h) {
    const [out, inn] = w.shape as [number, number];
    return {
      value: halfMatMul(x as tf.Tensor2D, h, out, 1),
      gradFunc: (dy: tf.Tensor | tf.Tensor[], saved: tf.Tensor[]) => {
        const g = dy as tf.Tensor2D;
        return [halfMatMul(g, h, inn, 0), tf.matMul(g, saved[0] as tf.Tensor2D, true, false)];
      },
    };
  }
  return {
    value: native
      ? tf.matMul(x as tf.Tensor2D, w as tf.Tensor2D, false, true)
      : tf.matMul(x as tf.Tensor2D, transposedWeight(w as tf.Tensor2D)),
    gradFunc: (dy: tf.Tensor | tf.Tensor[], saved: tf.Tensor[]) => {
      const [sx, sw] = saved as [tf.Tensor2D, tf.Tensor2D];
      const g = dy as tf.Tensor2D;
      if (native) return [tf.matMul(g, sw), tf.matMul(g, sx, true, false)];
      // dW = g^T x rather than (x^T g)^T even where g is the bigger one to transpose: XNNPACK
      // packs the right operand of each product, x is smaller than g there, and layers that read
      // the same x (q, k, v; gate, up) reuse its packing. Measured: x^T g ran at 32 GFLOP/s
      // against 57 for g^T x on the [1024, 1024] gradients of gate and up.
      return [tf.matMul(g, sw), tf.matMul(tf.transpose(g), sx)];
    },
  };
}) as unknown as Parameters<typeof tf.customGrad>[0]);

// W^T of each weight, kept until the weight changes (an optimizer step assigns new data): with
// gradient accumulation the forward runs several times per step, and tfjs-wasm also caches
// XNNPACK's packing of a product's right operand per tensor, so both happen once per step. Each
// kept transpose costs its weight's size twice (copy and packing), so only the first
// TRANSPOSE_BUDGET elements of weights are kept: all of a small dense model, not every expert of
// an MoE one, whose training must fit the 4 GB wasm heap.
const TRANSPOSE_BUDGET = 16 * 2 ** 20;
const transposed = new Map<tf.Tensor, { dataId: object; t: tf.Tensor2D }>();
let keptElements = 0;

/** W^T of a weight, kept until the weight changes (see above). */
export function transposedWeight(w: tf.Tensor2D): tf.Tensor2D {
  if (!(w instanceof tf.Variable)) return tf.transpose(w);
  const hit = transposed.get(w);
  if (hit && hit.dataId === w.dataId && !hit.t.isDisposed) return hit.t;
  if (hit) forget(w);
  // Weights disposed without releaseTransposedWeights (a model dropped piecemeal) free theirs here.
  for (const k of transposed.keys()) if (k.isDisposed) forget(k);
  if (keptElements + w.size > TRANSPOSE_BUDGET) return tf.transpose(w);
  const t = tf.keep(tf.transpose(w));
  transposed.set(w, { dataId: w.dataId, t });
  keptElements += w.size;
  return t;
}

function forget(w: tf.Tensor): void {
  const e = transposed.get(w);
  if (!e) return;
  e.t.dispose();
  keptElements -= w.size;
  transposed.delete(w);
}

/** Frees the kept transposes of these weights (when their model is disposed). */
export function releaseTransposedWeights(ws: Iterable<tf.Tensor>): void {
  for (const w of ws) forget(w);
}

// A weight may carry its own product (engine/tfjs/lora.ts: a LoRA adapter, a frozen or int8 base):
// the model code calls linear() as always, and the weight decides.
const linearHooks = new WeakMap<tf.Tensor, (x: tf.Tensor2D) => tf.Tensor2D>();

/** Makes linear(x, w) compute `f(x)` for this weight (undefined removes the hook). */
export function hookLinear(w: tf.Tensor, f: ((x: tf.Tensor2D) => tf.Tensor2D) | undefined): void {
  if (f) linearHooks.set(w, f);
  else linearHooks.delete(w);
}

/** Whether this weight carries its own product (LoRA, a frozen or int8 base). */
export function hasLinearHook(w: tf.Tensor): boolean {
  return linearHooks.has(w);
}

/** y = x W^T for x [N, in] and W [out, in] (HF Linear layout). */
export function linear(x: tf.Tensor2D, w: tf.Tensor): tf.Tensor2D {
  const hook = linearHooks.get(w);
  return hook ? hook(x) : (linearOp(x, w) as tf.Tensor2D);
}

/**
 * y = x W^T for a frozen W: the backward pass computes dx = dy W only (no dW), in the same layouts
 * as linearOp. `w` may be a function that makes W (an int8 base dequantizes) in the layout asked
 * for, [out, in] or transposed; it is then made again for the backward pass rather than kept.
 */
export function frozenLinear(x: tf.Tensor2D, w: tf.Tensor2D | ((transposed: boolean) => tf.Tensor2D)): tf.Tensor2D {
  const native = nativeMatMulActive();
  const get = (transposed: boolean) => (typeof w === 'function' ? w(transposed) : transposed ? transposedWeight(w) : w);
  const op = tf.customGrad(((xi: tf.Tensor, save: tf.GradSaveFunc) => {
    save([]);
    return {
      value: native ? tf.matMul(xi as tf.Tensor2D, get(false), false, true) : tf.matMul(xi as tf.Tensor2D, get(true)),
      gradFunc: (dy: tf.Tensor | tf.Tensor[]) => [tf.matMul(dy as tf.Tensor2D, get(false))],
    };
  }) as unknown as Parameters<typeof tf.customGrad>[0]);
  return op(x) as tf.Tensor2D;
}

/**
 * The rows of the embedding table w [V, D] for token ids [N]. On webgpu the gradient is one
 * dispatch (LatheEmbedGrad) instead of tfjs's fill, transposes and scatter.
 */
export function embed(w: tf.Tensor, ids: tf.Tensor1D): tf.Tensor2D {
  if (!(gpuKernels() && w.dtype === 'float32' && gpuKernel('LatheEmbedGrad'))) return tf.gather(w, ids) as tf.Tensor2D;
  const op = tf.customGrad(((wIn: tf.Tensor2D, save: tf.GradSaveFunc) => {
    const i = tf.cast(ids, 'int32');
    save([i]);
    return {
      value: tf.gather(wIn, i),
      gradFunc: (dy: tf.Tensor | tf.Tensor[], saved: tf.Tensor[]) => [
        runGpuKernel('LatheEmbedGrad', [dy as tf.Tensor, saved[0]!], { vocab: w.shape[0] })[0]!,
      ],
    };
  }) as unknown as Parameters<typeof tf.customGrad>[0]);
  return op(w) as tf.Tensor2D;
}

/** RMSNorm over the last axis. */
export function rmsNorm(x: tf.Tensor2D, w: tf.Tensor, eps: number): tf.Tensor2D {
  if (fusedKernels()) return rmsNormOp(x, w as tf.Tensor1D, eps);
  const ms = tf.mean(tf.square(x), -1, true);
  return tf.mul(tf.mul(x, tf.rsqrt(tf.add(ms, eps))), w) as tf.Tensor2D;
}

/** SwiGLU feed-forward: down(silu(gate x) * up x). */
export function swiglu(
  x: tf.Tensor2D,
  gate: tf.Tensor,
  up: tf.Tensor,
  down: tf.Tensor,
  lin: (x: tf.Tensor2D, w: tf.Tensor) => tf.Tensor2D = linear,
): tf.Tensor2D {
  const g = lin(x, gate);
  if (fusedKernels()) return lin(swigluOp(g, lin(x, up)), down);
  const silu = tf.mul(g, tf.sigmoid(g)) as tf.Tensor2D;
  return lin(tf.mul(silu, lin(x, up)) as tf.Tensor2D, down);
}

/** Rotary tables (HF rotate_half layout): cos and sin of shape [maxLen, headDim]. */
export function ropeTables(
  maxLen: number,
  headDim: number,
  theta: number,
  scaling?: RopeScaling,
): { cos: tf.Tensor2D; sin: tf.Tensor2D } {
  const half = headDim / 2;
  const cos = new Float32Array(maxLen * headDim);
  const sin = new Float32Array(maxLen * headDim);
  const inv = ropeInvFreq(headDim, theta, scaling);
  for (let pos = 0; pos < maxLen; pos++) {
    for (let i = 0; i < half; i++) {
      // Same float32 rounding as HF: inv_freq in fp32, then pos * inv_freq.
      const invFreq = inv[i]!;
      const a = Math.fround(pos * invFreq);
      const c = Math.cos(a);
      const s = Math.sin(a);
      cos[pos * headDim + i] = c;
      cos[pos * headDim + i + half] = c;
      sin[pos * headDim + i] = s;
      sin[pos * headDim + i + half] = s;
    }
  }
  return { cos: tf.tensor2d(cos, [maxLen, headDim]), sin: tf.tensor2d(sin, [maxLen, headDim]) };
}

/** Applies RoPE to x [B, H, T, hd] with tables already sliced to the T positions. */
export function applyRope(x: tf.Tensor4D, cos: tf.Tensor2D, sin: tf.Tensor2D): tf.Tensor4D {
  if (fusedKernels()) return ropeOp(x, cos, sin);
  const hd = x.shape[3];
  const half = hd / 2;
  const x1 = tf.slice(x, [0, 0, 0, 0], [-1, -1, -1, half]);
  const x2 = tf.slice(x, [0, 0, 0, half], [-1, -1, -1, half]);
  const rotated = tf.concat([tf.neg(x2), x1], 3);
  return tf.add(tf.mul(x, cos), tf.mul(rotated, sin)) as tf.Tensor4D;
}

/** Per-layer key/value cache for incremental decoding: [B, kvHeads, S, hd]. */
export interface LayerCache {
  k?: tf.Tensor4D;
  v?: tf.Tensor4D;
}

export interface AttentionShape {
  heads: number;
  kvHeads: number;
  headDim: number;
  /** RMSNorm epsilon (of the q/k norms). */
  normEps: number;
}

/** An attention block's weights: projections, their optional biases (Qwen2) and q/k norms (Qwen3). */
export interface AttentionWeights {
  q: tf.Tensor;
  k: tf.Tensor;
  v: tf.Tensor;
  o: tf.Tensor;
  qBias?: tf.Tensor;
  kBias?: tf.Tensor;
  vBias?: tf.Tensor;
  oBias?: tf.Tensor;
  qNorm?: tf.Tensor;
  kNorm?: tf.Tensor;
}

/** A projection plus its bias, when it has one. */
function biased(y: tf.Tensor2D, b?: tf.Tensor): tf.Tensor2D {
  return b ? (tf.add(y, b) as tf.Tensor2D) : y;
}

/** RMSNorm over each head [headDim] of a projection [N, H*hd]. */
function headNorm(y: tf.Tensor2D, w: tf.Tensor | undefined, hd: number, eps: number): tf.Tensor2D {
  if (!w) return y;
  return tf.reshape(rmsNorm(tf.reshape(y, [-1, hd]), w, eps), y.shape);
}

/**
 * Causal grouped-query self-attention over x [B*T, D]. With a cache, keys/values of earlier
 * positions are reused and the new ones appended (the cache tensors are kept; the caller disposes them).
 * With a window, each position sees itself and the window - 1 positions before it (also when decoding).
 */
export function attention(
  x: tf.Tensor2D,
  batch: number,
  seq: number,
  w: AttentionWeights,
  shape: AttentionShape,
  rope: { cos: tf.Tensor2D; sin: tf.Tensor2D },
  pos0: number,
  cache?: LayerCache,
  window?: number,
): tf.Tensor2D {
  const { heads, kvHeads, headDim } = shape;
  const split = (t: tf.Tensor2D, h: number) =>
    tf.transpose(tf.reshape(t, [batch, seq, h, headDim]), [0, 2, 1, 3]) as tf.Tensor4D;
  const cos = tf.slice(rope.cos, [pos0, 0], [seq, headDim]);
  const sin = tf.slice(rope.sin, [pos0, 0], [seq, headDim]);
  const splitRope = (t: tf.Tensor2D, h: number) =>
    fusedKernels() ? ropeSplitOp(t, batch, seq, h, cos, sin) : applyRope(split(t, h), cos, sin);
  let q: tf.Tensor4D;
  let k: tf.Tensor4D;
  let v: tf.Tensor4D;
  // The fused split knows no q/k/v biases or per-head norms (Qwen2, Qwen3): those take the ops.
  const plain = !w.qBias && !w.kBias && !w.vBias && !w.qNorm && !w.kNorm;
  if (plain && gpuKernels() && qkvSplitFits()) {
    // webgpu: the three head splits, both rotations and v's transpose in one dispatch.
    const out = runGpuKernel('LatheQkvSplit', [linear(x, w.q), linear(x, w.k), linear(x, w.v), cos, sin], {
      batch,
      seq,
      heads,
      kvHeads,
    });
    [q, k, v] = out as tf.Tensor4D[];
  } else {
    q = splitRope(headNorm(biased(linear(x, w.q), w.qBias), w.qNorm, headDim, shape.normEps), heads);
    k = splitRope(headNorm(biased(linear(x, w.k), w.kBias), w.kNorm, headDim, shape.normEps), kvHeads);
    v = split(biased(linear(x, w.v), w.vBias), kvHeads);
  }
  if (cache) {
    if (cache.k && cache.v) {
      k = tf.concat([cache.k, k], 2);
      v = tf.concat([cache.v, v], 2);
    }
    const [oldK, oldV] = [cache.k, cache.v];
    cache.k = tf.keep(k);
    cache.v = tf.keep(v);
    oldK?.dispose();
    oldV?.dispose();
  }
  const total = k.shape[2];
  k = repeatKv(k, heads);
  v = repeatKv(v, heads);
  const mask = seq > 1 || (window !== undefined && total > window) ? causalMask(seq, total, pos0, window) : undefined;
  let heads4: tf.Tensor4D;
  // The shader's mask is causal only: a sliding window that cuts keys takes the ops below.
  if (gpuKernels() && (window === undefined || total <= window)) {
    // webgpu: batched products and one fused causal softmax, the mask computed in the shader.
    const g = batch * heads;
    const o = gpuAttention(
      tf.reshape(q, [g, seq, headDim]),
      tf.reshape(k, [g, total, headDim]),
      tf.reshape(v, [g, total, headDim]),
      1 / Math.sqrt(headDim),
      pos0,
    );
    const merged = tf.transpose(tf.reshape(o, [batch, heads, seq, headDim]), [0, 2, 1, 3]);
    return biased(linear(tf.reshape(merged, [batch * seq, heads * headDim]) as tf.Tensor2D, w.o), w.oBias);
  }
  // Per-head products pay for their extra dispatches only on long enough sequences: below ~64k
  // multiply-adds a head (decoding, small models) tfjs's batched product is faster.
  if (fusedKernels() && (nativeMatMulActive() || seq * total * headDim >= 65_536)) {
    const g = batch * heads;
    const o = attentionCore(
      tf.reshape(q, [g, seq, headDim]),
      tf.reshape(k, [g, total, headDim]),
      tf.reshape(v, [g, total, headDim]),
      1 / Math.sqrt(headDim),
      mask,
    );
    heads4 = tf.reshape(o, [batch, heads, seq, headDim]);
  } else {
    let scores = tf.mul(tf.matMul(q, k, false, true), 1 / Math.sqrt(headDim));
    if (mask) scores = tf.add(scores, mask);
    heads4 = tf.matMul(tf.softmax(scores, -1), v) as tf.Tensor4D;
  }
  const out = tf.reshape(tf.transpose(heads4, [0, 2, 1, 3]), [batch * seq, heads * headDim]) as tf.Tensor2D;
  return biased(linear(out, w.o), w.oBias);
}

/** Grouped-query keys or values [B, kvHeads, S, hd] repeated to `heads` heads (HF repeat_kv order). */
function repeatKv(t: tf.Tensor4D, heads: number): tf.Tensor4D {
  const [batch, kvHeads, total, headDim] = t.shape;
  if (kvHeads === heads) return t;
  // Same head order as HF repeat_kv (head = kv * rep + r); rank 3 because tile's gradient stops at rank 4.
  return tf.reshape(tf.tile(tf.reshape(t, [batch * kvHeads, 1, total * headDim]), [1, heads / kvHeads, 1]), [
    batch,
    heads,
    total,
    headDim,
  ]) as tf.Tensor4D;
}

/**
 * Self-attention of one new token per row, x [B, D], where each row has its own cache and position
 * (continuous batching). The projections run batched; each row attends to its own keys. Appends the
 * new keys and values to each row's cache (kept; the caller disposes them).
 */
export function attentionRows(
  x: tf.Tensor2D,
  w: AttentionWeights,
  shape: AttentionShape,
  rope: { cos: tf.Tensor2D; sin: tf.Tensor2D },
  positions: tf.Tensor1D,
  caches: LayerCache[],
  window?: number,
): tf.Tensor2D {
  const { heads, kvHeads, headDim } = shape;
  const b = caches.length;
  // Rotary tables at each row's own position, [B, 1, 1, hd]: they broadcast over heads.
  const cos = tf.reshape(tf.gather(rope.cos, positions), [b, 1, 1, headDim]);
  const sin = tf.reshape(tf.gather(rope.sin, positions), [b, 1, 1, headDim]);
  const rotate = (t: tf.Tensor4D): tf.Tensor4D => {
    const half = headDim / 2;
    const t1 = tf.slice(t, [0, 0, 0, 0], [-1, -1, -1, half]);
    const t2 = tf.slice(t, [0, 0, 0, half], [-1, -1, -1, half]);
    return tf.add(tf.mul(t, cos), tf.mul(tf.concat([tf.neg(t2), t1], 3), sin)) as tf.Tensor4D;
  };
  // One token per row: [B, H*hd] is [B, H, 1, hd] in memory.
  const eps = shape.normEps;
  const q = rotate(
    tf.reshape(headNorm(biased(linear(x, w.q), w.qBias), w.qNorm, headDim, eps), [b, heads, 1, headDim]),
  );
  const k = rotate(
    tf.reshape(headNorm(biased(linear(x, w.k), w.kBias), w.kNorm, headDim, eps), [b, kvHeads, 1, headDim]),
  );
  const v = tf.reshape(biased(linear(x, w.v), w.vBias), [b, kvHeads, 1, headDim]);
  const outs: tf.Tensor2D[] = [];
  for (let r = 0; r < b; r++) {
    const c = caches[r]!;
    const kr = tf.slice(k, [r, 0, 0, 0], [1, -1, -1, -1]) as tf.Tensor4D;
    const vr = tf.slice(v, [r, 0, 0, 0], [1, -1, -1, -1]) as tf.Tensor4D;
    const [oldK, oldV] = [c.k, c.v];
    const keys = tf.keep(oldK ? tf.concat([oldK, kr], 2) : kr);
    const values = tf.keep(oldV ? tf.concat([oldV, vr], 2) : vr);
    [c.k, c.v] = [keys, values];
    oldK?.dispose();
    oldV?.dispose();
    const qr = tf.slice(q, [r, 0, 0, 0], [1, -1, -1, -1]);
    // A sliding window: the new token sees itself and the window - 1 keys before it.
    const total = keys.shape[2];
    const from = window !== undefined && total > window ? total - window : 0;
    const [kw, vw] = from ? [tf.slice(keys, [0, 0, from, 0]), tf.slice(values, [0, 0, from, 0])] : [keys, values];
    const scores = tf.mul(tf.matMul(qr, repeatKv(kw as tf.Tensor4D, heads), false, true), 1 / Math.sqrt(headDim));
    const o = tf.matMul(tf.softmax(scores, -1), repeatKv(vw as tf.Tensor4D, heads));
    outs.push(tf.reshape(o, [1, heads * headDim]));
  }
  return biased(linear(outs.length === 1 ? outs[0]! : tf.concat(outs, 0), w.o), w.oBias);
}

const maskCache = new Map<string, tf.Tensor2D>();

/**
 * Additive mask [T, S]: query t (at absolute position pos0+t) sees keys at positions <= pos0+t,
 * and with a window only those > pos0+t-window (transformers' sliding_window_overlay).
 */
function causalMask(seq: number, total: number, pos0: number, window = Infinity): tf.Tensor2D {
  const make = () => {
    const vals = new Float32Array(seq * total);
    for (let t = 0; t < seq; t++)
      for (let s = 0; s < total; s++) vals[t * total + s] = s <= pos0 + t && s > pos0 + t - window ? 0 : -1e9;
    return tf.tensor2d(vals, [seq, total]);
  };
  // A decoding step's mask (one query, windowed) differs at every position: made, not kept.
  if (seq === 1) return make();
  const key = `${tf.getBackend()}:${seq}:${total}:${pos0}:${window}`;
  let m = maskCache.get(key);
  if (!m || m.isDisposed) {
    m = tf.keep(make());
    maskCache.set(key, m);
  }
  return m;
}
