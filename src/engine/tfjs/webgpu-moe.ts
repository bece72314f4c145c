import { tf } from './tf.js';
import {
  FLAT_ARGS,
  REDUCE,
  ROW,
  ROW_ARGS,
  defineGpuKernel,
  dispatch,
  perRow,
  runGpuKernel,
  strided,
  type WebGpuBackend,
} from './webgpu-kernels.js';
import { gpuMatMul } from './webgpu-matmul.js';
import { halfWeight } from './webgpu-half.js';

// An MoE layer's token dispatch on webgpu with no read back: the routing (which tokens each expert
// takes, in token order) is made on the device from the top-k mask, each expert gathers its tokens
// into the first rows of its own buffer, and its products run on those rows only (the row count is
// read by the kernels, webgpu-matmul.ts). Every token reaches each of its k experts (no capacity, so
// nothing is dropped), and the arithmetic follows the routed tokens rather than all of them.

/** Where each token went, on the device: rows [E, N] (expert e's tokens, in order), pos [N, E] (a token's row in expert e, or -1), counts [E]. */
export interface Routing {
  rows: tf.Tensor;
  pos: tf.Tensor;
  counts: tf.Tensor;
}

const int = (be: WebGpuBackend, shape: number[]) => be.makeTensorInfo(shape, 'int32');

// One workgroup per expert: each thread counts a contiguous block of tokens, a scan over the 256
// block counts gives each block its first row, and the block writes its rows in token order.
defineGpuKernel({
  name: 'LatheRoute',
  run(be, [mask]) {
    const [n, e] = mask!.shape as [number, number];
    const rows = int(be, [e, n]);
    const pos = int(be, [n, e]);
    const counts = int(be, [e]);
    const code = `struct U { n: u32, e: u32 }
@group(0) @binding(0) var<uniform> u: U;
@group(0) @binding(1) var<storage, read> mask: array<f32>;
@group(0) @binding(2) var<storage, read_write> rows: array<i32>;
@group(0) @binding(3) var<storage, read_write> pos: array<i32>;
@group(0) @binding(4) var<storage, read_write> counts: array<i32>;
var<workgroup> part: array<u32, 256>;
@compute @workgroup_size(256) fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lidv: vec3<u32>) {
  let x = wid.x;
  let t = lidv.x;
  let per = (u.n + 255u) / 256u;
  let start = min(t * per, u.n);
  let end = min(start + per, u.n);
  var c = 0u;
  for (var i = start; i < end; i++) { if (mask[i * u.e + x] > 0.5) { c++; } }
  part[t] = c;
  workgroupBarrier();
  if (t == 0u) {
    var s = 0u;
    for (var j = 0u; j < 256u; j++) { let v = part[j]; part[j] = s; s += v; }
    counts[x] = i32(s);
  }
  workgroupBarrier();
  var p = part[t];
  for (var i = start; i < end; i++) {
    if (mask[i * u.e + x] > 0.5) {
      rows[x * u.n + p] = i32(i);
      pos[i * u.e + x] = i32(p);
      p++;
    } else {
      pos[i * u.e + x] = -1;
    }
  }
}`;
    dispatch(
      be,
      'moe-route',
      code,
      [
        ['u32', n],
        ['u32', e],
      ],
      [mask!, rows, pos, counts],
      [e, 1, 1],
    );
    return [rows, pos, counts];
  },
});
// The routing is discrete: no gradient flows back to the mask.
tf.registerGradient({
  kernelName: 'LatheRoute',
  inputsToSave: ['x0'],
  gradFunc: (_dy, [mask]) => ({ x0: () => tf.zerosLike(mask!) }),
});

// Expert x's rows from token rows: dst[r] = src[rows[x, r]] for r < counts[x], 0 after.
defineGpuKernel({
  name: 'LatheExpertGather',
  run(be, [src, rows, counts], { expert }) {
    const [n, d] = src!.shape as [number, number];
    const dst = be.makeTensorInfo([n, d], 'float32');
    const code = `struct U { n: u32, d: u32, x: u32 }
@group(0) @binding(0) var<uniform> u: U;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read> rows: array<i32>;
@group(0) @binding(3) var<storage, read> counts: array<i32>;
@group(0) @binding(4) var<storage, read_write> dst: array<f32>;
@compute @workgroup_size(256) fn main(${FLAT_ARGS}) {
  let count = u32(max(counts[u.x], 0));
  for (var i = gid.x; i < u.n * u.d; i += nwg.x * 256u) {
    let r = i / u.d;
    var v = 0.0;
    if (r < count) { v = src[u32(rows[u.x * u.n + r]) * u.d + i % u.d]; }
    dst[i] = v;
  }
}`;
    dispatch(
      be,
      'moe-gather',
      code,
      [
        ['u32', n],
        ['u32', d],
        ['u32', expert!],
      ],
      [src!, rows!, counts!, dst],
      strided(n * d),
    );
    return [dst];
  },
});

// Token rows from expert x's rows, each times a per-token weight (1 without one): dst[t] =
// w[t] src[pos[t, x]] where token t went to x, else 0.
defineGpuKernel({
  name: 'LatheExpertScatter',
  run(be, [src, pos, w], { expert, weighted }) {
    const [n, d] = src!.shape as [number, number];
    const e = pos!.shape[1]!;
    const dst = be.makeTensorInfo([n, d], 'float32');
    const code = `struct U { n: u32, d: u32, e: u32, x: u32, weighted: u32 }
@group(0) @binding(0) var<uniform> u: U;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read> pos: array<i32>;
@group(0) @binding(3) var<storage, read> w: array<f32>;
@group(0) @binding(4) var<storage, read_write> dst: array<f32>;
@compute @workgroup_size(256) fn main(${FLAT_ARGS}) {
  for (var i = gid.x; i < u.n * u.d; i += nwg.x * 256u) {
    let t = i / u.d;
    let p = pos[t * u.e + u.x];
    var v = 0.0;
    if (p >= 0) {
      v = src[u32(p) * u.d + i % u.d];
      if (u.weighted == 1u) { v *= w[t]; }
    }
    dst[i] = v;
  }
}`;
    dispatch(
      be,
      'moe-scatter',
      code,
      [
        ['u32', n],
        ['u32', d],
        ['u32', e],
        ['u32', expert!],
        ['u32', weighted!],
      ],
      [src!, pos!, w!, dst],
      strided(n * d),
    );
    return [dst];
  },
});

// The gate's gradient: dg[t] = dy[t] . y[pos[t, x]] where token t went to x, else 0. A workgroup per token.
defineGpuKernel({
  name: 'LatheExpertGateGrad',
  run(be, [dy, y, pos], { expert }) {
    const [n, d] = dy!.shape as [number, number];
    const e = pos!.shape[1]!;
    const dg = be.makeTensorInfo([n, 1], 'float32');
    const code = `struct U { rows: u32, d: u32, e: u32, x: u32 }
@group(0) @binding(0) var<uniform> u: U;
@group(0) @binding(1) var<storage, read> dy: array<f32>;
@group(0) @binding(2) var<storage, read> y: array<f32>;
@group(0) @binding(3) var<storage, read> pos: array<i32>;
@group(0) @binding(4) var<storage, read_write> dg: array<f32>;
${REDUCE}
@compute @workgroup_size(64) fn main(${ROW_ARGS}) {
  ${ROW}
  let lid = lidv.x;
  let p = pos[row * u.e + u.x];
  var s = 0.0;
  if (p >= 0) {
    for (var i = lid; i < u.d; i += 64u) { s += dy[row * u.d + i] * y[u32(p) * u.d + i]; }
  }
  let t = sum64(s, lid);
  if (lid == 0u) { dg[row] = t; }
}`;
    dispatch(
      be,
      'moe-gate-grad',
      code,
      [
        ['u32', n],
        ['u32', d],
        ['u32', e],
        ['u32', expert!],
      ],
      [dy!, y!, pos!, dg],
      perRow(n),
    );
    return [dg];
  },
});

/** The routing of a top-k mask [N, E] (1 where a token chose an expert), made on the device. */
export function route(mask: tf.Tensor2D): Routing {
  const [rows, pos, counts] = runGpuKernel('LatheRoute', [mask]);
  return { rows: rows!, pos: pos!, counts: counts! };
}

/** Expert `e`'s tokens of x [N, D] in its first counts[e] rows (the rest 0); the gradient goes back to their tokens. */
export function expertGather(x: tf.Tensor2D, r: Routing, e: number): tf.Tensor2D {
  const op = tf.customGrad(((xi: tf.Tensor2D, save: tf.GradSaveFunc) => {
    save([r.pos]);
    return {
      value: runGpuKernel('LatheExpertGather', [xi, r.rows, r.counts], { expert: e })[0]!,
      gradFunc: (dy: tf.Tensor | tf.Tensor[], [pos]: tf.Tensor[]) => [
        // Unweighted: pos stands in for the weights it does not read.
        runGpuKernel('LatheExpertScatter', [dy as tf.Tensor, pos!, pos!], { expert: e, weighted: 0 })[0]!,
      ],
    };
  }) as unknown as Parameters<typeof tf.customGrad>[0]);
  return op(x) as tf.Tensor2D;
}

/** Expert `e`'s output rows y back in token order, each times its token's gate g [N, 1] (0 for tokens not routed to e). */
export function expertCombine(y: tf.Tensor2D, g: tf.Tensor2D, r: Routing, e: number): tf.Tensor2D {
  const op = tf.customGrad(((yi: tf.Tensor2D, gi: tf.Tensor2D, save: tf.GradSaveFunc) => {
    save([yi, gi, r.rows, r.pos, r.counts]);
    return {
      value: runGpuKernel('LatheExpertScatter', [yi, r.pos, gi], { expert: e, weighted: 1 })[0]!,
      gradFunc: (dy: tf.Tensor | tf.Tensor[], [ys, gs, rows, pos, counts]: tf.Tensor[]) => {
        const d = dy as tf.Tensor2D;
        // Back to expert rows: d y[r] = g[token] dy[token] for the expert's r-th token.
        const dyRows = runGpuKernel('LatheExpertGather', [tf.mul(d, gs!), rows!, counts!], { expert: e })[0]!;
        return [dyRows, runGpuKernel('LatheExpertGateGrad', [d, ys!, pos!], { expert: e })[0]!];
      },
    };
  }) as unknown as Parameters<typeof tf.customGrad>[0]);
  return op(y, g) as tf.Tensor2D;
}

/**
 * y = x W^T on expert `e`'s first counts[e] rows of x [N, in] (W [out, in]); the rest of y is 0. The
 * gradients bound the same rows, and dW sums over them only. With f16 storage, W's f16 copy.
 */
export function expertLinear(x: tf.Tensor2D, w: tf.Tensor, r: Routing, e: number): tf.Tensor2D {
  const [out, inn] = w.shape as [number, number];
  const h = halfWeight(w);
  const half = h !== undefined;
  const b = h ?? w;
  const op = tf.customGrad(((xi: tf.Tensor2D, wi: tf.Tensor2D, save: tf.GradSaveFunc) => {
    save([xi, r.counts]);
    const rows = { limit: 'rows' as const, counts: r.counts, expert: e };
    return {
      value: gpuMatMul(xi, b, { n: out, bt: true, half, ...rows }),
      gradFunc: (dy: tf.Tensor | tf.Tensor[], [xs, counts]: tf.Tensor[]) => {
        const d = dy as tf.Tensor2D;
        return [
          gpuMatMul(d, b, { n: inn, half, limit: 'rows', counts: counts!, expert: e }),
          gpuMatMul(d, xs!, { n: inn, at: true, limit: 'depth', counts: counts!, expert: e }),
        ];
      },
    };
  }) as unknown as Parameters<typeof tf.customGrad>[0]);
  return op(x, w) as tf.Tensor2D;
}
