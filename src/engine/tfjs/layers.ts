import { tf } from './tf.js';
import { attentionCore, fusedKernels, ropeOp, ropeSplitOp, rmsNormOp, swigluOp } from './kernels.js';
import { nativeMatMulActive } from './native-kernels.js';

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
// With the native GEMM (engine/tfjs/native-kernels.ts) transposed operands cost nothing, so the products take
// W as stored.
const linearOp = tf.customGrad(((x: tf.Tensor, w: tf.Tensor, save: tf.GradSaveFunc) => {
  save([x, w]);
  const native = nativeMatMulActive();
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

function transposedWeight(w: tf.Tensor2D): tf.Tensor2D {
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

/** y = x W^T for x [N, in] and W [out, in] (HF Linear layout). */
export function linear(x: tf.Tensor2D, w: tf.Tensor): tf.Tensor2D {
  return linearOp(x, w) as tf.Tensor2D;
}

/** RMSNorm over the last axis. */
export function rmsNorm(x: tf.Tensor2D, w: tf.Tensor, eps: number): tf.Tensor2D {
  if (fusedKernels()) return rmsNormOp(x, w as tf.Tensor1D, eps);
  const ms = tf.mean(tf.square(x), -1, true);
  return tf.mul(tf.mul(x, tf.rsqrt(tf.add(ms, eps))), w) as tf.Tensor2D;
}

/** SwiGLU feed-forward: down(silu(gate x) * up x). */
export function swiglu(x: tf.Tensor2D, gate: tf.Tensor, up: tf.Tensor, down: tf.Tensor): tf.Tensor2D {
  const g = linear(x, gate);
  if (fusedKernels()) return linear(swigluOp(g, linear(x, up)), down);
  const silu = tf.mul(g, tf.sigmoid(g)) as tf.Tensor2D;
  return linear(tf.mul(silu, linear(x, up)) as tf.Tensor2D, down);
}

/** Rotary tables (HF rotate_half layout): cos and sin of shape [maxLen, headDim]. */
export function ropeTables(maxLen: number, headDim: number, theta: number): { cos: tf.Tensor2D; sin: tf.Tensor2D } {
  const half = headDim / 2;
  const cos = new Float32Array(maxLen * headDim);
  const sin = new Float32Array(maxLen * headDim);
  for (let pos = 0; pos < maxLen; pos++) {
    for (let i = 0; i < half; i++) {
      // Same float32 rounding as HF: inv_freq in fp32, then pos * inv_freq.
      const invFreq = Math.fround(1 / Math.pow(theta, (2 * i) / headDim));
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
}

/**
 * Causal grouped-query self-attention over x [B*T, D]. With a cache, keys/values of earlier
 * positions are reused and the new ones appended (the cache tensors are kept; the caller disposes them).
 */
export function attention(
  x: tf.Tensor2D,
  batch: number,
  seq: number,
  w: { q: tf.Tensor; k: tf.Tensor; v: tf.Tensor; o: tf.Tensor },
  shape: AttentionShape,
  rope: { cos: tf.Tensor2D; sin: tf.Tensor2D },
  pos0: number,
  cache?: LayerCache,
): tf.Tensor2D {
  const { heads, kvHeads, headDim } = shape;
  const split = (t: tf.Tensor2D, h: number) =>
    tf.transpose(tf.reshape(t, [batch, seq, h, headDim]), [0, 2, 1, 3]) as tf.Tensor4D;
  const cos = tf.slice(rope.cos, [pos0, 0], [seq, headDim]);
  const sin = tf.slice(rope.sin, [pos0, 0], [seq, headDim]);
  const splitRope = (t: tf.Tensor2D, h: number) =>
    fusedKernels() ? ropeSplitOp(t, batch, seq, h, cos, sin) : applyRope(split(t, h), cos, sin);
  const q = splitRope(linear(x, w.q), heads);
  let k = splitRope(linear(x, w.k), kvHeads);
  let v = split(linear(x, w.v), kvHeads);
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
  const mask = seq > 1 ? causalMask(seq, total, pos0) : undefined;
  let heads4: tf.Tensor4D;
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
  return linear(out, w.o);
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
  w: { q: tf.Tensor; k: tf.Tensor; v: tf.Tensor; o: tf.Tensor },
  shape: AttentionShape,
  rope: { cos: tf.Tensor2D; sin: tf.Tensor2D },
  positions: tf.Tensor1D,
  caches: LayerCache[],
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
  const q = rotate(tf.reshape(linear(x, w.q), [b, heads, 1, headDim]));
  const k = rotate(tf.reshape(linear(x, w.k), [b, kvHeads, 1, headDim]));
  const v = tf.reshape(linear(x, w.v), [b, kvHeads, 1, headDim]);
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
    const scores = tf.mul(tf.matMul(qr, repeatKv(keys, heads), false, true), 1 / Math.sqrt(headDim));
    const o = tf.matMul(tf.softmax(scores, -1), repeatKv(values, heads));
    outs.push(tf.reshape(o, [1, heads * headDim]));
  }
  return linear(outs.length === 1 ? outs[0]! : tf.concat(outs, 0), w.o);
}

const maskCache = new Map<string, tf.Tensor2D>();

/** Additive mask [T, S]: query t (at absolute position pos0+t) sees keys at positions <= pos0+t. */
function causalMask(seq: number, total: number, pos0: number): tf.Tensor2D {
  const key = `${tf.getBackend()}:${seq}:${total}:${pos0}`;
  let m = maskCache.get(key);
  if (!m || m.isDisposed) {
    const vals = new Float32Array(seq * total);
    for (let t = 0; t < seq; t++) for (let s = 0; s < total; s++) vals[t * total + s] = s <= pos0 + t ? 0 : -1e9;
    m = tf.keep(tf.tensor2d(vals, [seq, total]));
    maskCache.set(key, m);
  }
  return m;
}
