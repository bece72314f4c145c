import { describe, expect, it } from 'vitest';
import { useBackend } from './backend.js';
import { tf } from './tf.js';
import { tokenNll } from './losses.js';

describe('tokenNll (closed-form gradient)', () => {
  for (const backend of ['cpu', 'wasm'] as const) {
    it(`${backend}: value and gradient match log-softmax autograd within 2e-6; targets outside the vocabulary count 0`, async () => {
      await useBackend(backend);
      tf.tidy(() => {
        const [n, v] = [33, 300];
        const logits = tf.randomNormal([n, v], 0, 3, 'float32', 61) as tf.Tensor2D;
        // Row 5 has no target (-1): it must add nothing and get no gradient, as a one-hot row of zeros would.
        const ids = Array.from({ length: n }, (_, i) => (i === 5 ? -1 : (i * 37) % v));
        const targets = tf.tensor1d(ids, 'int32');
        const onehot = tf.cast(tf.oneHot(targets, v), 'float32');
        const dy = tf.randomUniform([n], 0.5, 1.5, 'float32', 62);
        const plain = (x: tf.Tensor) => tf.neg(tf.sum(tf.mul(tf.logSoftmax(x, -1), onehot), -1));
        const ours = tokenNll(logits, targets);
        const ref = plain(logits);
        expect(tf.max(tf.abs(tf.sub(ours, ref))).dataSync()[0]).toBeLessThan(2e-6);
        const o = ours.dataSync();
        expect(o[5]).toBe(0);
        // -log p of a random target among 300 at logit scale 3: well above 0.
        expect(Math.min(...Array.from(o).filter((_, i) => i !== 5))).toBeGreaterThan(0.1);
        const g1 = tf.grad((x: tf.Tensor) => tf.sum(tf.mul(tokenNll(x as tf.Tensor2D, targets), dy)))(logits);
        const g2 = tf.grad((x: tf.Tensor) => tf.sum(tf.mul(plain(x), dy)))(logits);
        expect(tf.max(tf.abs(tf.sub(g1, g2))).dataSync()[0]).toBeLessThan(2e-6);
        const rows = g1.arraySync() as number[][];
        expect(rows[5]!.every((x) => x === 0)).toBe(true);
        // Each row's gradient sums to 0 (softmax minus one-hot), and the target's entry is negative.
        expect(tf.max(tf.abs(tf.sum(g1, -1))).dataSync()[0]).toBeLessThan(1e-5);
        expect(rows[0]![0]).toBeLessThan(0);
      });
    });
  }
});
