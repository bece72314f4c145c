import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { afterAll, describe, expect, it } from 'vitest';
import { Rng } from '../../random.js';
import { nativeAvailable, nativeStatus, runNative } from './native.js';
import { nativeMatMulActive, planMatMul, setNativeKernels } from './native-kernels.js';
import { useBackend } from './backend.js';
import { tf } from './tf.js';

// The native kernels (onnxruntime-node) against independent JS references on fresh random inputs,
// values and gradients, on both backends they serve. Tolerances are relative to the magnitude of
// what is summed: float32 sums of K products differ by reordering up to ~K * 2^-24 of it.

function randn(rng: Rng, n: number): Float32Array {
  return Float32Array.from({ length: n }, () => rng.normal());
}

/** c = op(a) op(b) for row-major a [..., r, c] with the batch broadcasting of tf.matMul (whole batch against 1). */
function refMatMul(a: Float32Array, as: number[], b: Float32Array, bs: number[], ta: boolean, tb: boolean) {
  const [ar, ac] = as.slice(-2) as [number, number];
  const [br, bc] = bs.slice(-2) as [number, number];
  const na = as.slice(0, -2).reduce((x, y) => x * y, 1);
  const nb = bs.slice(0, -2).reduce((x, y) => x * y, 1);
  const m = ta ? ac : ar;
  const k = ta ? ar : ac;
  const n = tb ? br : bc;
  const batch = Math.max(na, nb);
  const out = new Float64Array(batch * m * n);
  const mag = new Float64Array(batch * m * n);
  for (let g = 0; g < batch; g++) {
    const ao = (na === 1 ? 0 : g) * ar * ac;
    const bo = (nb === 1 ? 0 : g) * br * bc;
    for (let i = 0; i < m; i++)
      for (let j = 0; j < n; j++) {
        let s = 0;
        let s2 = 0;
        for (let p = 0; p < k; p++) {
          const x = a[ao + (ta ? p * ac + i : i * ac + p)]! * b[bo + (tb ? j * bc + p : p * bc + j)]!;
          s += x;
          s2 += Math.abs(x);
        }
        out[(g * m + i) * n + j] = s;
        mag[(g * m + i) * n + j] = s2;
      }
  }
  return { out, mag, k };
}

const backends = ['wasm', 'cpu'] as const;

describe('native kernels (onnxruntime-node)', () => {
  afterAll(() => {
    setNativeKernels(true);
  });

  it('load on this machine', () => {
    // The package carries its CPU library: no download, no install script. If this fails, the
    // bench and training fall back to tfjs's own kernels, much slower.
    expect(nativeAvailable(), nativeStatus()).toBe(true);
    expect(nativeStatus()).toMatch(/^native kernels: onnxruntime-node, \d+ threads$/);
  });

  for (const backend of backends) {
    describe(backend, () => {
      const cases: [number[], number[], boolean, boolean][] = [
        [[96, 200], [200, 80], false, false],
        [[200, 96], [200, 80], true, false],
        [[96, 200], [80, 200], false, true],
        [[200, 96], [80, 200], true, true],
        [[3, 64, 96], [3, 96, 72], false, false],
        [[2, 3, 64, 96], [96, 72], false, false], // weights shared across a batch
        [[64, 96], [5, 96, 72], false, false],
        [[1, 64, 96], [5, 72, 96], false, true],
        [[2, 3, 96, 64], [2, 3, 96, 72], true, false],
      ];
      for (const [as, bs, ta, tb] of cases) {
        it(`BatchMatMul ${JSON.stringify(as)} x ${JSON.stringify(bs)}${ta ? ' transA' : ''}${tb ? ' transB' : ''} matches the reference`, async () => {
          await useBackend(backend);
          expect(nativeMatMulActive()).toBe(true);
          expect(planMatMul(as, bs, ta, tb), 'this case takes the native path').toBeDefined();
          const rng = new Rng(as.length * 131 + bs[0]! + (ta ? 7 : 0) + (tb ? 11 : 0));
          const av = randn(
            rng,
            as.reduce((x, y) => x * y, 1),
          );
          const bv = randn(
            rng,
            bs.reduce((x, y) => x * y, 1),
          );
          const c = tf.tidy(() => tf.matMul(tf.tensor(av, as), tf.tensor(bv, bs), ta, tb));
          const { out, mag, k } = refMatMul(av, as, bv, bs, ta, tb);
          const got = c.dataSync();
          expect(got.length).toBe(out.length);
          for (let i = 0; i < out.length; i++)
            expect(Math.abs(got[i]! - out[i]!), `element ${i}`).toBeLessThanOrEqual(k * 2 ** -23 * mag[i]! + 1e-6);
          c.dispose();
        });
      }

      it('BatchMatMul gradients through the tape match the closed forms (dA = dC B^T, dB = A^T dC)', async () => {
        await useBackend(backend);
        const rng = new Rng(5);
        const [m, k, n] = [48, 160, 56];
        const av = randn(rng, m * k);
        const bv = randn(rng, k * n);
        const wv = randn(rng, m * n);
        const [a, b, w] = [tf.tensor2d(av, [m, k]), tf.tensor2d(bv, [k, n]), tf.tensor2d(wv, [m, n])];
        const [da, db] = tf.grads((x: tf.Tensor, y: tf.Tensor) =>
          tf.sum(tf.mul(tf.matMul(x as tf.Tensor2D, y as tf.Tensor2D), w)),
        )([a, b]);
        // dA[i][p] = sum_j w[i][j] b[p][j], dB[p][j] = sum_i a[i][p] w[i][j]
        const refA = refMatMul(wv, [m, n], bv, [k, n], false, true);
        const refB = refMatMul(av, [m, k], wv, [m, n], true, false);
        const ga = da!.dataSync();
        const gb = db!.dataSync();
        for (let i = 0; i < ga.length; i++)
          expect(Math.abs(ga[i]! - refA.out[i]!)).toBeLessThanOrEqual(n * 2 ** -23 * refA.mag[i]! + 1e-6);
        for (let i = 0; i < gb.length; i++)
          expect(Math.abs(gb[i]! - refB.out[i]!)).toBeLessThanOrEqual(m * 2 ** -23 * refB.mag[i]! + 1e-6);
        tf.dispose([a, b, w, da!, db!]);
      });

      it('Exp matches Math.exp to 2 ulp-ish (relative 3e-7)', async () => {
        await useBackend(backend);
        const rng = new Rng(8);
        const x = Float32Array.from({ length: 300 * 100 }, () => rng.normal() * 6);
        const got = tf.tidy(() => tf.exp(tf.tensor2d(x, [300, 100])).dataSync());
        for (let i = 0; i < x.length; i++)
          expect(Math.abs(got[i]! - Math.exp(x[i]!)) / Math.exp(x[i]!), `exp(${x[i]})`).toBeLessThan(3e-7);
      });

      for (const [name, axis, keep] of [
        ['sum', 0, false],
        ['sum', -1, true],
        ['sum', [0, 2], false],
        ['mean', 1, false],
        ['mean', [0, 2], true],
        ['max', -1, false],
        ['max', 0, true],
      ] as const) {
        it(`${name} over ${JSON.stringify(axis)}${keep ? ' (keepDims)' : ''} of [6, 70, 50] matches the reference`, async () => {
          await useBackend(backend);
          const rng = new Rng(11);
          const shape = [6, 70, 50];
          const x = randn(rng, 6 * 70 * 50);
          const t = tf.tensor3d(x, shape as [number, number, number]);
          const op = name === 'sum' ? tf.sum : name === 'mean' ? tf.mean : tf.max;
          const y = op(t, axis as number | number[], keep);
          const axes = (Array.isArray(axis) ? axis : [axis]).map((a) => (a < 0 ? a + 3 : a));
          const outShape = shape.map((d, i) => (axes.includes(i) ? 1 : d));
          expect(y.shape).toEqual(keep ? outShape : outShape.filter((_, i) => !axes.includes(i)));
          const acc = new Float64Array(outShape.reduce((p, q) => p * q, 1)).fill(name === 'max' ? -Infinity : 0);
          const cnt = shape.filter((_, i) => axes.includes(i)).reduce((p, q) => p * q, 1);
          for (let i = 0; i < 6; i++)
            for (let j = 0; j < 70; j++)
              for (let k = 0; k < 50; k++) {
                const idx = [i, j, k].map((v, d) => (axes.includes(d) ? 0 : v));
                const o = (idx[0]! * outShape[1]! + idx[1]!) * outShape[2]! + idx[2]!;
                const v = x[(i * 70 + j) * 50 + k]!;
                acc[o] = name === 'max' ? Math.max(acc[o]!, v) : acc[o]! + v;
              }
          const got = y.dataSync();
          for (let i = 0; i < acc.length; i++) {
            const want = name === 'mean' ? acc[i]! / cnt : acc[i]!;
            expect(Math.abs(got[i]! - want), `element ${i}`).toBeLessThanOrEqual(
              name === 'max' ? 0 : cnt * 2 ** -22 * 4 + 1e-6,
            );
          }
          tf.dispose([t, y]);
        });
      }

      it('leaves what it does not handle to tfjs: int32 sums, small products, shape errors', async () => {
        await useBackend(backend);
        const ints = tf.tensor2d(
          Array.from({ length: 200 * 100 }, (_, i) => i % 7),
          [200, 100],
          'int32',
        );
        const s = tf.sum(ints, 0);
        expect(s.dtype).toBe('int32');
        expect(s.dataSync()[3]).toBe(
          Array.from({ length: 200 }, (_, r) => (r * 100 + 3) % 7).reduce((p, q) => p + q, 0),
        );
        expect(planMatMul([4, 4], [4, 4], false, false)).toBeUndefined();
        expect(Array.from(tf.matMul(tf.eye(4), tf.ones([4, 4])).dataSync())).toEqual(new Array(16).fill(1));
        expect(() => tf.matMul(tf.ones([64, 300]), tf.ones([200, 64]))).toThrow(/inner shapes|must match/i);
        tf.dispose([ints, s]);
      });
    });
  }

  it('stages operands that live in shared memory (the threaded wasm heap), which ONNX Runtime cannot read', () => {
    const rng = new Rng(3);
    const [m, k, n] = [40, 64, 30];
    const heap = new Float32Array(new SharedArrayBuffer(4 * (8 + m * k + k * n + m * n)));
    const a = heap.subarray(8, 8 + m * k);
    const b = heap.subarray(8 + m * k, 8 + m * k + k * n);
    const c = heap.subarray(8 + m * k + k * n);
    a.set(randn(rng, m * k));
    b.set(randn(rng, k * n));
    runNative(
      { op: 'FusedMatMul', domain: 'com.microsoft', ranks: [3, 3], ints: { transA: 0, transB: 0 } },
      [
        { data: a, shape: [1, m, k] },
        { data: b, shape: [1, k, n] },
      ],
      { data: c, shape: [1, m, n] },
    );
    const ref = refMatMul(a, [m, k], b, [k, n], false, false);
    for (let i = 0; i < c.length; i++)
      expect(Math.abs(c[i]! - ref.out[i]!)).toBeLessThanOrEqual(k * 2 ** -23 * ref.mag[i]! + 1e-6);
  });

  it('gives the same bits wherever the operands sit in memory (bit-exact resume depends on it)', () => {
    // Vectorised reductions along a contiguous axis sum in an order set by the address; those
    // stay on tfjs (native-kernels.ts). The products and leading-axis sums routed here must not.
    const rng = new Rng(21);
    const base = new Float32Array(1 << 20);
    const a0 = randn(rng, 256 * 96);
    const b0 = randn(rng, 256 * 80);
    const bits = (off: number) => {
      const a = base.subarray(off, off + a0.length);
      const b = base.subarray(a0.length + 40 + 3 * off, a0.length + 40 + 3 * off + b0.length);
      a.set(a0);
      b.set(b0);
      const mm = new Float32Array(96 * 80);
      runNative(
        { op: 'FusedMatMul', domain: 'com.microsoft', ranks: [3, 3], ints: { transA: 1, transB: 0 } },
        [
          { data: a, shape: [1, 256, 96] },
          { data: b, shape: [1, 256, 80] },
        ],
        { data: mm, shape: [1, 96, 80] },
      );
      const rows = new Float32Array(96);
      runNative(
        { op: 'ReduceSum', ranks: [2], intLists: { axes: [0] }, ints: { keepdims: 0 }, opset: 11 },
        [{ data: a, shape: [256, 96] }],
        { data: rows, shape: [96] },
      );
      return [...mm, ...rows];
    };
    const ref = bits(0);
    for (let off = 1; off < 16; off++) expect(bits(off), `offset ${off} floats`).toEqual(ref);
  });

  it('LATHE_NATIVE_KERNELS=0 keeps tfjs kernels (and says so)', async () => {
    const code =
      "import('./src/engine/tfjs/native.ts').then((m) => console.log(JSON.stringify([m.nativeAvailable(), m.nativeStatus()])))";
    const { stdout } = await promisify(execFile)(process.execPath, ['--import', 'tsx', '-e', code], {
      env: { ...process.env, LATHE_NATIVE_KERNELS: '0' },
    });
    expect(JSON.parse(stdout.trim())).toEqual([false, 'native kernels off (LATHE_NATIVE_KERNELS=0)']);
  });

  it('setNativeKernels(false) routes back to the stock kernels at run time', async () => {
    await useBackend('wasm');
    const prev = setNativeKernels(false);
    try {
      expect(nativeMatMulActive()).toBe(false);
      const c = tf.tidy(() => tf.matMul(tf.ones([64, 128]), tf.ones([128, 64])));
      expect(c.dataSync()[0]).toBe(128);
      c.dispose();
    } finally {
      setNativeKernels(prev);
    }
    expect(nativeMatMulActive()).toBe(true);
  });
});
