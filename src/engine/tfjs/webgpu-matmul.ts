import { tf } from './tf.js';
import { defineGpuKernel, dispatch, output, runGpuKernel } from './webgpu-kernels.js';

// Lathe's tiled matrix product on webgpu, for the products tfjs's own MatMul cannot do: a B operand
// stored as f16 (webgpu-half.ts), and a row count known only on the device (an MoE expert's routed
// tokens, webgpu-moe.ts), which bounds the rows of C or the depth of the sum without a read back.
// 64x64 tiles of C per workgroup, 4x4 per thread, the depth in steps of 16 through workgroup
// memory; fp32 accumulation.

/** How the product reads its operands, and what bounds it. */
export interface MatMulForm {
  /** Columns of C. */
  n: number;
  /** A is stored [K, M] (transposed) rather than [M, K]. */
  at?: boolean;
  /** B is stored [N, K] (a Linear weight) rather than [K, N]. */
  bt?: boolean;
  /** B holds f16 values (an f16 weight copy). */
  half?: boolean;
  /** With `counts` and `expert`: 'rows' computes C's first counts[expert] rows (the rest are 0); 'depth' sums over the first counts[expert] of K. */
  limit?: 'rows' | 'depth';
  counts?: tf.Tensor;
  expert?: number;
}

defineGpuKernel({
  name: 'LatheMatMul',
  run(be, [a, b, counts], { n, at, bt, half, limit, expert }) {
    const [r0, r1] = a!.shape as [number, number];
    const [m, k] = at ? [r1, r0] : [r0, r1];
    const c = output(be, [m, n!]);
    const loadA = at
      ? `let kk = idx / 64u; let r = idx % 64u;
      var av = 0.0;
      if (m0 + r < u.m && k0 + kk < kl) { av = a[(k0 + kk) * u.m + m0 + r]; }`
      : `let r = idx / 16u; let kk = idx % 16u;
      var av = 0.0;
      if (m0 + r < u.m && k0 + kk < kl) { av = a[(m0 + r) * u.k + k0 + kk]; }`;
    const loadB = bt
      ? `let nb = idx / 16u; let kb = idx % 16u;
      var bv = 0.0;
      if (n0 + nb < u.n && k0 + kb < kl) { bv = f32(b[(n0 + nb) * u.k + k0 + kb]); }`
      : `let kb = idx / 64u; let nb = idx % 64u;
      var bv = 0.0;
      if (n0 + nb < u.n && k0 + kb < kl) { bv = f32(b[(k0 + kb) * u.n + n0 + nb]); }`;
    const bounded = limit === 1 || limit === 2;
    const code = `${half ? 'enable f16;\n' : ''}struct U { m: u32, n: u32, k: u32, expert: u32 }
@group(0) @binding(0) var<uniform> u: U;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<${half ? 'f16' : 'f32'}>;
${bounded ? '@group(0) @binding(3) var<storage, read> counts: array<i32>;' : ''}
@group(0) @binding(${bounded ? 4 : 3}) var<storage, read_write> c: array<f32>;
var<workgroup> sa: array<array<f32, 64>, 16>;
var<workgroup> sb: array<array<f32, 64>, 16>;
var<workgroup> bound: u32;
@compute @workgroup_size(16, 16) fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
  let m0 = wid.y * 64u;
  let n0 = wid.x * 64u;
  let t = lid.y * 16u + lid.x;
  if (t == 0u) { bound = ${bounded ? 'u32(max(counts[u.expert], 0))' : '0xffffffffu'}; }
  let lim = workgroupUniformLoad(&bound);
  let ml = ${limit === 1 ? 'min(u.m, lim)' : 'u.m'};
  let kl = ${limit === 2 ? 'min(u.k, lim)' : 'u.k'};
  var acc: array<array<f32, 4>, 4>;
  if (m0 < ml) {
    for (var k0 = 0u; k0 < kl; k0 += 16u) {
      for (var e = 0u; e < 4u; e++) {
        let idx = t + e * 256u;
        {
          ${loadA}
          sa[kk][r] = av;
        }
        {
          ${loadB}
          sb[kb][nb] = bv;
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
  }
  for (var i = 0u; i < 4u; i++) {
    let row = m0 + lid.y * 4u + i;
    for (var j = 0u; j < 4u; j++) {
      let col = n0 + lid.x * 4u + j;
      if (row < u.m && col < u.n) { c[row * u.n + col] = select(0.0, acc[i][j], row < ml); }
    }
  }
}`;
    dispatch(
      be,
      `matmul-${at ? 't' : 'n'}${bt ? 't' : 'n'}${half ? '-half' : ''}${bounded ? `-limit${limit}` : ''}`,
      code,
      [
        ['u32', m],
        ['u32', n!],
        ['u32', k],
        ['u32', bounded ? expert! : 0],
      ],
      bounded ? [a!, b!, counts!, c] : [a!, b!, c],
      [Math.ceil(n! / 64), Math.ceil(m / 64), 1],
    );
    return [c];
  },
});

/** C = op(A) op(B) on webgpu (see MatMulForm); A [M, K] or [K, M], fp32. */
export function gpuMatMul(a: tf.Tensor2D, b: tf.Tensor, f: MatMulForm): tf.Tensor2D {
  const bounded = f.limit !== undefined;
  if (bounded && (!f.counts || f.expert === undefined)) throw new Error('gpuMatMul: a limit needs counts and expert');
  const attrs = {
    n: f.n,
    at: f.at ? 1 : 0,
    bt: f.bt ? 1 : 0,
    half: f.half ? 1 : 0,
    limit: f.limit === 'rows' ? 1 : f.limit === 'depth' ? 2 : 0,
    expert: f.expert ?? 0,
  };
  return runGpuKernel('LatheMatMul', bounded ? [a, b, f.counts!] : [a, b], attrs)[0] as tf.Tensor2D;
}
