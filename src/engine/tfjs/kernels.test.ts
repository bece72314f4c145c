import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { useBackend } from './backend.js';
import { tf } from './tf.js';
import { ropeTables } from './layers.js';
import { attentionCore, ropeOp, ropeSplitOp, rmsNormOp, setFusedKernels, swigluOp } from './kernels.js';

// Every fused op against the plain tfjs composition it replaces, value and gradients, on random
// inputs (fixed seeds) and a random upstream gradient. Tolerances are on the largest absolute
// difference; the values and gradients here are O(1), and float32 reassociation (XNNPACK's
// blocked sums against tfjs's naive loops) moves them by up to ~4e-6 (measured: attention at
// T 256, head dim 64, on wasm), so 2e-5 leaves a 5x margin.
const TOL = 2e-5;

function maxAbsDiff(a: tf.Tensor, b: tf.Tensor): number {
  expect(a.shape).toEqual(b.shape);
  return tf.tidy(() => tf.max(tf.abs(tf.sub(a, b))).dataSync()[0]!);
}

/** Value and input gradients of sum(f(xs) * dy). */
function valueAndGrads(
  f: (...xs: tf.Tensor[]) => tf.Tensor,
  xs: tf.Tensor[],
  dy: tf.Tensor,
): { y: tf.Tensor; grads: tf.Tensor[] } {
  const y = f(...xs);
  const grads = tf.grads((...ins: tf.Tensor[]) => tf.sum(tf.mul(f(...ins), dy)))(xs);
  return { y, grads };
}

function causalMask(t: number, s: number): tf.Tensor2D {
  const pos0 = s - t;
  const vals = new Float32Array(t * s);
  for (let i = 0; i < t; i++) for (let j = 0; j < s; j++) vals[i * s + j] = j <= pos0 + i ? 0 : -1e9;
  return tf.tensor2d(vals, [t, s]);
}

for (const backend of ['cpu', 'wasm'] as const) {
  describe(`fused kernels on ${backend}`, () => {
    let prev: boolean;
    beforeAll(async () => {
      await useBackend(backend);
      prev = setFusedKernels(true);
    });
    afterAll(() => {
      setFusedKernels(prev);
    });

    for (const [t, s, masked] of [
      [12, 12, true],
      [3, 12, true],
      [5, 9, false],
      [256, 256, true], // the bench model's size (head dim 64): the largest reassociation error, ~4e-6
    ] as const) {
      it(`attentionCore matches softmax(q k^T s + mask) v and its gradients (T ${t}, S ${s}${masked ? ', causal' : ''})`, () => {
        const g = t === 256 ? 2 : 6;
        const hd = t === 256 ? 64 : 8;
        const scale = 1 / Math.sqrt(hd);
        tf.tidy(() => {
          const q = tf.randomNormal([g, t, hd], 0, 1, 'float32', 11);
          const k = tf.randomNormal([g, s, hd], 0, 1, 'float32', 12);
          const v = tf.randomNormal([g, s, hd], 0, 1, 'float32', 13);
          const dy = tf.randomNormal([g, t, hd], 0, 1, 'float32', 14);
          const mask = masked ? causalMask(t, s) : undefined;
          const fused = valueAndGrads(
            (a, b, c) => attentionCore(a as tf.Tensor3D, b as tf.Tensor3D, c as tf.Tensor3D, scale, mask),
            [q, k, v],
            dy,
          );
          const reference = valueAndGrads(
            (a, b, c) => {
              let scores = tf.mul(tf.matMul(a, b, false, true), scale);
              if (mask) scores = tf.add(scores, mask);
              return tf.matMul(tf.softmax(scores, -1), c);
            },
            [q, k, v],
            dy,
          );
          expect(maxAbsDiff(fused.y, reference.y)).toBeLessThan(TOL);
          for (let i = 0; i < 3; i++)
            expect(maxAbsDiff(fused.grads[i]!, reference.grads[i]!), `gradient ${'qkv'[i]}`).toBeLessThan(TOL);
          // The gradients are not trivially zero: the comparison means something.
          for (const gr of reference.grads) expect(tf.max(tf.abs(gr)).dataSync()[0]!).toBeGreaterThan(0.05);
        });
      });
    }

    it('rmsNormOp matches x * rsqrt(mean(x^2) + eps) * w and its gradients', () => {
      tf.tidy(() => {
        const x = tf.randomNormal([37, 24], 0, 2, 'float32', 31);
        const w = tf.randomNormal([24], 1, 0.3, 'float32', 32);
        const dy = tf.randomNormal([37, 24], 0, 1, 'float32', 33);
        const eps = 1e-5;
        const fused = valueAndGrads((a, b) => rmsNormOp(a as tf.Tensor2D, b as tf.Tensor1D, eps), [x, w], dy);
        const reference = valueAndGrads(
          (a, b) => tf.mul(tf.mul(a, tf.rsqrt(tf.add(tf.mean(tf.square(a), -1, true), eps))), b),
          [x, w],
          dy,
        );
        expect(maxAbsDiff(fused.y, reference.y)).toBeLessThan(TOL);
        expect(maxAbsDiff(fused.grads[0]!, reference.grads[0]!), 'dx').toBeLessThan(TOL);
        // dw sums 37 rows of O(1) terms, so its float32 rounding is larger.
        expect(maxAbsDiff(fused.grads[1]!, reference.grads[1]!), 'dw').toBeLessThan(1e-4);
        for (const gr of reference.grads) expect(tf.max(tf.abs(gr)).dataSync()[0]!).toBeGreaterThan(0.05);
      });
    });

    it('ropeOp matches x cos + rotate_half(x) sin and its gradient', () => {
      tf.tidy(() => {
        const hd = 16;
        const tables = ropeTables(20, hd, 10000);
        // Sliced inside the differentiated function, as the model does (tfjs disposes such
        // intermediates when the forward pass ends, so the op must save what its backward reads).
        const at = (t: tf.Tensor2D) => tf.slice(t, [8, 0], [12, hd]);
        const x = tf.randomNormal([2, 3, 12, hd], 0, 1, 'float32', 41);
        const dy = tf.randomNormal([2, 3, 12, hd], 0, 1, 'float32', 42);
        const fused = valueAndGrads((a) => ropeOp(a!, at(tables.cos), at(tables.sin)), [x], dy);
        const reference = valueAndGrads(
          (a) => {
            const cos = at(tables.cos);
            const sin = at(tables.sin);
            const x1 = tf.slice(a!, [0, 0, 0, 0], [-1, -1, -1, hd / 2]);
            const x2 = tf.slice(a!, [0, 0, 0, hd / 2], [-1, -1, -1, hd / 2]);
            return tf.add(tf.mul(a!, cos), tf.mul(tf.concat([tf.neg(x2), x1], 3), sin));
          },
          [x],
          dy,
        );
        // One pass rounding each product to float32 as tfjs's mul does: the value is the same bits.
        expect(maxAbsDiff(fused.y, reference.y)).toBe(0);
        expect(maxAbsDiff(fused.grads[0]!, reference.grads[0]!)).toBeLessThan(TOL);
        expect(tf.max(tf.abs(fused.grads[0]!)).dataSync()[0]!).toBeGreaterThan(0.5);
      });
    });

    it('ropeSplitOp matches the head split (reshape, transpose) then RoPE, and its gradient', () => {
      tf.tidy(() => {
        const [b, t, h, hd] = [2, 12, 3, 16];
        const tables = ropeTables(20, hd, 10000);
        const at = (m: tf.Tensor2D) => tf.slice(m, [8, 0], [t, hd]);
        const x = tf.randomNormal([b * t, h * hd], 0, 1, 'float32', 43);
        const dy = tf.randomNormal([b, h, t, hd], 0, 1, 'float32', 44);
        const fused = valueAndGrads(
          (a) => ropeSplitOp(a as tf.Tensor2D, b, t, h, at(tables.cos), at(tables.sin)),
          [x],
          dy,
        );
        const reference = valueAndGrads(
          (a) => ropeOp(tf.transpose(tf.reshape(a!, [b, t, h, hd]), [0, 2, 1, 3]), at(tables.cos), at(tables.sin)),
          [x],
          dy,
        );
        expect(fused.y.shape).toEqual([b, h, t, hd]);
        expect(maxAbsDiff(fused.y, reference.y)).toBe(0);
        expect(maxAbsDiff(fused.grads[0]!, reference.grads[0]!)).toBeLessThan(TOL);
        expect(tf.max(tf.abs(fused.grads[0]!)).dataSync()[0]!).toBeGreaterThan(0.5);
      });
    });

    it('swigluOp matches silu(g) * u and its gradients', () => {
      tf.tidy(() => {
        const g = tf.randomNormal([37, 96], 0, 2, 'float32', 51);
        const u = tf.randomNormal([37, 96], 0, 1, 'float32', 52);
        const dy = tf.randomNormal([37, 96], 0, 1, 'float32', 53);
        const fused = valueAndGrads((a, b) => swigluOp(a as tf.Tensor2D, b as tf.Tensor2D), [g, u], dy);
        const reference = valueAndGrads((a, b) => tf.mul(tf.mul(a!, tf.sigmoid(a!)), b!), [g, u], dy);
        expect(maxAbsDiff(fused.y, reference.y)).toBe(0);
        expect(maxAbsDiff(fused.grads[0]!, reference.grads[0]!), 'dg').toBeLessThan(TOL);
        expect(maxAbsDiff(fused.grads[1]!, reference.grads[1]!), 'du').toBeLessThan(TOL);
        for (const gr of reference.grads) expect(tf.max(tf.abs(gr)).dataSync()[0]!).toBeGreaterThan(0.5);
      });
    });
  });
}
