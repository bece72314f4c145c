import { tf } from './tf.js';
import { nativeMatMulActive } from './native-kernels.js';
import { arrayKernel, defineArrayKernel, runArrayKernel } from './array-kernels.js';
import { gpuBackend, gpuKernel, runGpuKernel } from './webgpu-kernels.js';

// Fused ops with hand-written gradients, for the hot spots of a training step on tfjs-wasm.
// tfjs-wasm sends a matmul to XNNPACK only when it is a plain 2-D product (no transposed operand,
// batch 1); a batched or transposed product falls back to a naive loop about 15x slower. These ops
// are therefore written as per-head 2-D NN products, with explicit transposes (cheap next to the
// products) wherever a gradient needs a transposed operand. Every op here has a test comparing
// its value and gradients with the plain tfjs composition it replaces (kernels.test.ts).

type GradFn = Parameters<typeof tf.customGrad>[0];

let fused = process.env.LATHE_FUSED_KERNELS !== '0';

/**
 * Whether the model uses the fused ops of this file (default; LATHE_FUSED_KERNELS=0 turns them
 * off) or the plain tfjs compositions they replace, which tests and the bench compare against.
 */
export function fusedKernels(): boolean {
  return fused;
}

/** Switches the fused ops on or off (for tests and comparisons); returns the previous setting. */
export function setFusedKernels(on: boolean): boolean {
  const prev = fused;
  fused = on;
  return prev;
}

/** Whether the fused kernel `name` runs on the active backend: as a JS pass (wasm, cpu) or WGSL (webgpu). */
function fusedKernel(name: string): boolean {
  return arrayKernel(name) || gpuKernel(name);
}

/** Whether the model runs on webgpu with Lathe's WGSL kernels (fused kernels on). */
export function gpuKernels(): boolean {
  return fused && gpuBackend() !== undefined;
}

/**
 * Causal attention on webgpu: softmax(scale q k^T + mask) v for q [G, T, hd], k and v [G, S, hd],
 * query t at absolute position pos0 + t. Batched products (one dispatch each, transposes folded
 * in) around one fused kernel for the scale, mask and softmax; the backward pass is five products
 * and one fused kernel for dS = scale P (dP - rowsum(dP P)).
 */
export function gpuAttention(q: tf.Tensor3D, k: tf.Tensor3D, v: tf.Tensor3D, scale: number, pos0: number): tf.Tensor3D {
  const op = tf.customGrad(((qIn: tf.Tensor3D, kIn: tf.Tensor3D, vIn: tf.Tensor3D, save: tf.GradSaveFunc) => {
    const scores = tf.matMul(qIn, kIn, false, true);
    const probs = runGpuKernel('LatheCausalSoftmax', [scores], { scale, pos0 })[0] as tf.Tensor3D;
    save([qIn, kIn, vIn, probs]);
    return {
      value: tf.matMul(probs, vIn),
      gradFunc: (dy: tf.Tensor | tf.Tensor[], saved: tf.Tensor[]) => {
        const [sq, sk, sv, p] = saved as tf.Tensor3D[];
        const dO = dy as tf.Tensor3D;
        const dP = tf.matMul(dO, sv!, false, true);
        const dS = runGpuKernel('LatheSoftmaxGrad', [p!, dP], { scale })[0] as tf.Tensor3D;
        return [tf.matMul(dS, sk!), tf.matMul(dS, sq!, true, false), tf.matMul(p!, dO, true, false)];
      },
    };
  }) as unknown as GradFn);
  return op(q, k, v) as tf.Tensor3D;
}

/** Products a[i] b[i] of stacks given as lists of 2-D tensors, restacked: G XNNPACK matmuls. */
function products(as: tf.Tensor2D[], bs: tf.Tensor2D[]): tf.Tensor3D {
  return tf.stack(as.map((x, i) => tf.matMul(x, bs[i]!))) as tf.Tensor3D;
}

const heads = (x: tf.Tensor3D) => tf.unstack(x) as tf.Tensor2D[];
const t12 = (x: tf.Tensor3D) => tf.transpose(x, [0, 2, 1]) as tf.Tensor3D;

/**
 * Scaled dot-product attention softmax(q k^T * scale + mask) v for G = batch x heads independent
 * heads: q [G, T, hd], k and v [G, S, hd], mask an additive [T, S] (or none). Returns [G, T, hd].
 * The backward pass uses the softmax identity dS = P * (dP - rowsum(dO * O)) and keeps P. It
 * transposes only the [., hd]-sized operands, never P or dS: dV and dK are computed transposed
 * (dV^T = dO^T P, dK^T = q^T dS) and turned back, which moves 4x less data when S = 4 hd.
 */
export function attentionCore(
  q: tf.Tensor3D,
  k: tf.Tensor3D,
  v: tf.Tensor3D,
  scale: number,
  mask?: tf.Tensor2D,
): tf.Tensor3D {
  const op = tf.customGrad(((qIn: tf.Tensor3D, kIn: tf.Tensor3D, vIn: tf.Tensor3D, save: tf.GradSaveFunc) => {
    const qs = tf.mul(qIn, scale) as tf.Tensor3D;
    // With the native GEMM (engine/tfjs/native-kernels.ts) each product is one batched call with the
    // transposes folded in; on tfjs-wasm's own kernel it is G per-head 2-D products.
    const native = nativeMatMulActive();
    const scores = native ? tf.matMul(qs, kIn, false, true) : products(heads(qs), heads(t12(kIn)));
    const probs = tf.softmax(mask ? tf.add(scores, mask) : scores, -1) as tf.Tensor3D;
    const out = native ? tf.matMul(probs, vIn) : products(heads(probs), heads(vIn));
    // Everything the backward pass reads is saved (tfjs disposes the forward's intermediates);
    // the mask is not needed there, since P is 0 wherever it masks.
    save([qs, kIn, vIn, probs, out]);
    return {
      value: out,
      gradFunc: (dy: tf.Tensor | tf.Tensor[], saved: tf.Tensor[]) => {
        const [sq, sk, sv, p, o] = saved as tf.Tensor3D[];
        const dO = dy as tf.Tensor3D;
        const rowDot = tf.sum(tf.mul(dO, o!), -1, true);
        if (native) {
          const dS = tf.mul(p!, tf.sub(tf.matMul(dO, sv!, false, true), rowDot)) as tf.Tensor3D;
          return [tf.mul(tf.matMul(dS, sk!), scale), tf.matMul(dS, sq!, true, false), tf.matMul(p!, dO, true, false)];
        }
        const dP = products(heads(dO), heads(t12(sv!)));
        const dV = t12(products(heads(t12(dO)), heads(p!)));
        const dSs = heads(tf.mul(p!, tf.sub(dP, rowDot)) as tf.Tensor3D);
        const dQ = tf.mul(products(dSs, heads(sk!)), scale);
        const dK = t12(products(heads(t12(sq!)), dSs));
        return [dQ, dK, dV];
      },
    };
  }) as unknown as GradFn);
  return op(q, k, v) as tf.Tensor3D;
}

/**
 * RMSNorm over the last axis, y = x * r * w with r = 1 / sqrt(mean(x^2) + eps), for x [N, D] and
 * w [D]. The backward pass is the closed form dx = r * (g - xr * mean(g * xr)), g = dy * w,
 * dw = sum over rows of dy * xr: 8 kernels where tfjs's autograd of the composition runs ~15.
 */
export function rmsNormOp(x: tf.Tensor2D, w: tf.Tensor1D, eps: number): tf.Tensor2D {
  if (x.dtype === 'float32' && gpuKernel('LatheRmsNorm')) {
    // webgpu: one dispatch forward (y and r), two backward (dx by rows, dw by columns).
    const gpu = tf.customGrad(((xIn: tf.Tensor2D, wIn: tf.Tensor1D, save: tf.GradSaveFunc) => {
      const [y, r] = runGpuKernel('LatheRmsNorm', [xIn, wIn], { eps });
      save([xIn, wIn, r!]);
      return {
        value: y!,
        gradFunc: (dy: tf.Tensor | tf.Tensor[], saved: tf.Tensor[]) => {
          const [sx, sw, sr] = saved;
          const d = dy as tf.Tensor;
          return [
            runGpuKernel('LatheRmsNormGradX', [d, sx!, sw!, sr!])[0]!,
            runGpuKernel('LatheRmsNormGradW', [d, sx!, sr!])[0]!,
          ];
        },
      };
    }) as unknown as GradFn);
    return gpu(x, w) as tf.Tensor2D;
  }
  const op = tf.customGrad(((xIn: tf.Tensor2D, wIn: tf.Tensor1D, save: tf.GradSaveFunc) => {
    const r = tf.rsqrt(tf.add(tf.mean(tf.square(xIn), -1, true), eps));
    const xr = tf.mul(xIn, r);
    save([wIn, r, xr]);
    return {
      value: tf.mul(xr, wIn),
      gradFunc: (dy: tf.Tensor | tf.Tensor[], saved: tf.Tensor[]) => {
        const [sw, sr, sxr] = saved as [tf.Tensor1D, tf.Tensor2D, tf.Tensor2D];
        const d = dy as tf.Tensor2D;
        const g = tf.mul(d, sw);
        const dx = tf.mul(sr, tf.sub(g, tf.mul(sxr, tf.mean(tf.mul(g, sxr), -1, true))));
        const dw = tf.sum(tf.mul(d, sxr), 0);
        return [dx, dw];
      },
    };
  }) as unknown as GradFn);
  return op(x, w) as tf.Tensor2D;
}

const rotations = new Map<string, { r: tf.Tensor2D; rT: tf.Tensor2D }>();

/**
 * The rotate-half map of RoPE as a matrix R [hd, hd], so that rotate(x) = x R for rows x of
 * length hd (x R = [-x2, x1] for halves x1, x2), and its transpose. Kept per backend and size:
 * tfjs-wasm then also keeps XNNPACK's packing of it.
 */
function rotation(hd: number): { r: tf.Tensor2D; rT: tf.Tensor2D } {
  const key = `${tf.getBackend()}:${hd}`;
  let m = rotations.get(key);
  if (!m || m.r.isDisposed) {
    const half = hd / 2;
    const vals = new Float32Array(hd * hd);
    for (let i = 0; i < half; i++) {
      vals[(i + half) * hd + i] = -1; // out[i] = -x[i + half]
      vals[i * hd + i + half] = 1; // out[i + half] = x[i]
    }
    const r = tf.keep(tf.tensor2d(vals, [hd, hd]));
    m = { r, rT: tf.keep(tf.transpose(r)) };
    rotations.set(key, m);
  }
  return m;
}

// RoPE in one pass over x (forward, dir 1) or dy (backward, dir -1), tables [T, hd] applied to
// every [T, hd] block: y[i] = x[i] c[i] - x[i+h] s[i], y[i+h] = x[i+h] c[i+h] + x[i] s[i+h];
// the backward pass is its transpose, dx[i] = dy[i] c[i] + dy[i+h] s[i+h],
// dx[i+h] = dy[i+h] c[i+h] - dy[i] s[i]. Replaces a rotation matmul and three elementwise kernels.
defineArrayKernel({
  name: 'LatheRope',
  outputs: (shapes) => [shapes[0]!],
  run: ([x, c, s], [y], shapes, attrs) => {
    const [t, hd] = shapes[1] as [number, number];
    const h = hd / 2;
    const block = t * hd;
    const sign = attrs.dir === -1 ? -1 : 1;
    for (let base = 0; base < x!.length; base += block) {
      for (let row = 0; row < block; row += hd) {
        const o = base + row;
        for (let i = 0; i < h; i++) {
          const a = x![o + i]!;
          const b = x![o + i + h]!;
          const ci = c![row + i]!;
          const ch = c![row + i + h]!;
          // Products rounded to float32 as tfjs's mul would: the forward value is then the same
          // bits as the tensor-op composition.
          if (sign === 1) {
            y![o + i] = Math.fround(a * ci) - Math.fround(b * s![row + i]!);
            y![o + i + h] = Math.fround(b * ch) + Math.fround(a * s![row + i + h]!);
          } else {
            y![o + i] = Math.fround(a * ci) + Math.fround(b * s![row + i + h]!);
            y![o + i + h] = Math.fround(b * ch) - Math.fround(a * s![row + i]!);
          }
        }
      }
    }
  },
});

/**
 * Rotary embedding y = x cos + rotate(x) sin (HF rotate_half layout) for x [..., T, hd] and
 * tables cos, sin [T, hd]. On wasm and cpu it is one pass each way (LatheRope above); elsewhere
 * the rotation is one product with a constant signed permutation matrix instead of two slices,
 * a negation and a concatenation, and the backward pass is dx = dy cos + (dy sin) R^T.
 */
export function ropeOp<T extends tf.Tensor>(x: T, cos: tf.Tensor2D, sin: tf.Tensor2D): T {
  const hd = x.shape[x.shape.length - 1]!;
  if (x.dtype === 'float32' && arrayKernel('LatheRope')) {
    const op = tf.customGrad(((xIn: tf.Tensor, save: tf.GradSaveFunc) => {
      save([cos, sin]);
      return {
        value: runArrayKernel('LatheRope', [xIn, cos, sin], { dir: 1 })[0]!,
        gradFunc: (dy: tf.Tensor | tf.Tensor[], saved: tf.Tensor[]) => [
          runArrayKernel('LatheRope', [dy as tf.Tensor, saved[0]!, saved[1]!], { dir: -1 })[0]!,
        ],
      };
    }) as unknown as GradFn);
    return op(x) as T;
  }
  const { r, rT } = rotation(hd);
  const rows = x.size / hd;
  const op = tf.customGrad(((xIn: tf.Tensor, save: tf.GradSaveFunc) => {
    // The tables are usually slices made inside the forward pass, which tfjs disposes when the
    // forward ends: the backward pass must get them through save().
    save([cos, sin]);
    const rotated = tf.reshape(tf.matMul(tf.reshape(xIn, [rows, hd]), r), xIn.shape);
    return {
      value: tf.add(tf.mul(xIn, cos), tf.mul(rotated, sin)),
      gradFunc: (dy: tf.Tensor | tf.Tensor[], saved: tf.Tensor[]) => {
        const [c, s] = saved as [tf.Tensor2D, tf.Tensor2D];
        const d = dy as tf.Tensor;
        const back = tf.reshape(tf.matMul(tf.reshape(tf.mul(d, s), [rows, hd]), rT), d.shape);
        return [tf.add(tf.mul(d, c), back)];
      },
    };
  }) as unknown as GradFn);
  return op(x) as T;
}

// RoPE fused with the head split of a projection: x [B*T, H*hd] (rows of tokens, heads side by
// side) to y [B, H, T, hd] rotated (dir 1), and the backward pass from dy [B, H, T, hd] back to
// [B*T, H*hd] (dir -1). One pass where the model ran a transpose and then RoPE.
defineArrayKernel({
  name: 'LatheRopeSplit',
  outputs: (shapes, attrs) => {
    const [b, h, t] = [attrs.batch as number, attrs.heads as number, attrs.seq as number];
    const hd = shapes[1]![1]!;
    return [attrs.dir === -1 ? [b * t, h * hd] : [b, h, t, hd]];
  },
  run: ([x, c, s], [y], shapes, attrs) => {
    const [nb, nh, nt] = [attrs.batch as number, attrs.heads as number, attrs.seq as number];
    const hd = shapes[1]![1]!;
    const half = hd / 2;
    const fwd = attrs.dir !== -1;
    for (let b = 0; b < nb; b++)
      for (let h = 0; h < nh; h++)
        for (let t = 0; t < nt; t++) {
          const tokenMajor = ((b * nt + t) * nh + h) * hd;
          const headMajor = ((b * nh + h) * nt + t) * hd;
          const src = fwd ? tokenMajor : headMajor;
          const dst = fwd ? headMajor : tokenMajor;
          const row = t * hd;
          for (let i = 0; i < half; i++) {
            const a = x![src + i]!;
            const bb = x![src + i + half]!;
            if (fwd) {
              y![dst + i] = Math.fround(a * c![row + i]!) - Math.fround(bb * s![row + i]!);
              y![dst + i + half] = Math.fround(bb * c![row + i + half]!) + Math.fround(a * s![row + i + half]!);
            } else {
              y![dst + i] = Math.fround(a * c![row + i]!) + Math.fround(bb * s![row + i + half]!);
              y![dst + i + half] = Math.fround(bb * c![row + i + half]!) - Math.fround(a * s![row + i]!);
            }
          }
        }
  },
});

/**
 * The heads of a projection x [B*T, H*hd] as [B, H, T, hd] with RoPE applied (tables [T, hd]):
 * one pass each way on wasm and cpu, else the transpose followed by ropeOp.
 */
export function ropeSplitOp(
  x: tf.Tensor2D,
  batch: number,
  seq: number,
  heads: number,
  cos: tf.Tensor2D,
  sin: tf.Tensor2D,
): tf.Tensor4D {
  const hd = cos.shape[1];
  if (x.dtype !== 'float32' || !fusedKernel('LatheRopeSplit'))
    return ropeOp(tf.transpose(tf.reshape(x, [batch, seq, heads, hd]), [0, 2, 1, 3]) as tf.Tensor4D, cos, sin);
  const attrs = { batch, seq, heads };
  const op = tf.customGrad(((xIn: tf.Tensor, save: tf.GradSaveFunc) => {
    save([cos, sin]);
    return {
      value: runArrayKernel('LatheRopeSplit', [xIn, cos, sin], { ...attrs, dir: 1 })[0]!,
      gradFunc: (dy: tf.Tensor | tf.Tensor[], saved: tf.Tensor[]) => [
        runArrayKernel('LatheRopeSplit', [dy as tf.Tensor, saved[0]!, saved[1]!], { ...attrs, dir: -1 })[0]!,
      ],
    };
  }) as unknown as GradFn);
  return op(x) as tf.Tensor4D;
}

// The SwiGLU gradient in one pass: with s = sigmoid(g) saved by the forward pass,
// du = dh g s and dg = dh u s (1 + g (1 - s)). tfjs's autograd of g * sigmoid(g) * u runs ~9
// elementwise kernels over the [tokens, ffn] activations.
defineArrayKernel({
  name: 'LatheSwigluGrad',
  outputs: (shapes) => [shapes[1]!, shapes[1]!],
  run: ([dh, g, u, s], [dg, du]) => {
    for (let i = 0; i < g!.length; i++) {
      const gi = g![i]!;
      const si = s![i]!;
      const d = dh![i]!;
      du![i] = d * gi * si;
      dg![i] = d * u![i]! * si * (1 + gi * (1 - si));
    }
  },
});

/** silu(g) * u for the SwiGLU feed-forward, with the one-pass gradient above (wasm, cpu; WGSL on webgpu). */
export function swigluOp(g: tf.Tensor2D, u: tf.Tensor2D): tf.Tensor2D {
  if (g.dtype === 'float32' && u.dtype === 'float32' && gpuKernel('LatheSwiglu') && gpuKernel('LatheSwigluGrad')) {
    const gpu = tf.customGrad(((gIn: tf.Tensor2D, uIn: tf.Tensor2D, save: tf.GradSaveFunc) => {
      save([gIn, uIn]);
      return {
        value: runGpuKernel('LatheSwiglu', [gIn, uIn])[0]!,
        gradFunc: (dy: tf.Tensor | tf.Tensor[], saved: tf.Tensor[]) =>
          runGpuKernel('LatheSwigluGrad', [dy as tf.Tensor, saved[0]!, saved[1]!]),
      };
    }) as unknown as GradFn);
    return gpu(g, u) as tf.Tensor2D;
  }
  if (g.dtype !== 'float32' || u.dtype !== 'float32' || !arrayKernel('LatheSwigluGrad'))
    return tf.mul(tf.mul(g, tf.sigmoid(g)), u) as tf.Tensor2D;
  const op = tf.customGrad(((gIn: tf.Tensor2D, uIn: tf.Tensor2D, save: tf.GradSaveFunc) => {
    const s = tf.sigmoid(gIn);
    save([gIn, uIn, s]);
    return {
      value: tf.mul(tf.mul(gIn, s), uIn),
      gradFunc: (dy: tf.Tensor | tf.Tensor[], saved: tf.Tensor[]) =>
        runArrayKernel('LatheSwigluGrad', [dy as tf.Tensor, saved[0]!, saved[1]!, saved[2]!]),
    };
  }) as unknown as GradFn);
  return op(g, u) as tf.Tensor2D;
}
