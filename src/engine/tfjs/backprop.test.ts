import { afterAll, describe, expect, it } from 'vitest';
import { LanguageModel } from './model.js';
import { setLeanBackprop } from './backprop.js';
import { useBackend } from './backend.js';
import { tf } from './tf.js';
import { tinySpec } from '../test/fixtures.js';

const spec = tinySpec();

/** Gradients of a small model's loss, and the peak of live tensor bytes while computing them. */
function gradsAndPeak(arch: 'dense' | 'moe'): { loss: number; grads: number[][]; peakBytes: number } {
  const m = LanguageModel.init({ ...spec, arch }, 3);
  const ids = tf.tensor2d(
    Array.from({ length: 48 }, (_, i) => (i * 5 + 1) % 64),
    [3, 16],
    'int32',
  );
  const engine = tf.engine() as unknown as { runKernelFunc: (...a: unknown[]) => unknown };
  const run = engine.runKernelFunc;
  let peakBytes = 0;
  engine.runKernelFunc = (...a: unknown[]) => {
    const r = run.apply(engine, a);
    peakBytes = Math.max(peakBytes, tf.memory().numBytes);
    return r;
  };
  try {
    const { value, grads } = tf.variableGrads(() => {
      const { logits, router } = m.forward(ids);
      let loss = tf.mean(tf.square(logits)) as tf.Scalar;
      for (const r of router) loss = tf.add(loss, r.balance);
      return loss;
    }, [...m.params.values()]);
    const out = {
      loss: value.dataSync()[0]!,
      grads: [...m.params.values()].map((v) => Array.from(grads[v.name]!.dataSync())),
      peakBytes,
    };
    tf.dispose([value, ...Object.values(grads), ids]);
    return out;
  } finally {
    engine.runKernelFunc = run;
    m.dispose();
  }
}

describe('lean backward pass', () => {
  const prev = setLeanBackprop(true);
  afterAll(() => {
    setLeanBackprop(prev);
  });

  for (const backend of ['cpu', 'wasm'] as const) {
    for (const arch of ['dense', 'moe'] as const) {
      it(`${backend} ${arch}: the same gradient bits as tfjs's own pass, with a lower peak and no leak`, async () => {
        await useBackend(backend);
        setLeanBackprop(false);
        const stock = gradsAndPeak(arch);
        // Counted after a first pass: the model keeps a causal mask and rotation tables cached.
        const before = tf.memory().numTensors;
        setLeanBackprop(true);
        const lean = gradsAndPeak(arch);
        expect(lean.loss).toBe(stock.loss);
        expect(lean.grads).toEqual(stock.grads);
        expect(lean.peakBytes).toBeLessThan(stock.peakBytes * 0.9);
        expect(tf.memory().numTensors).toBe(before);
      });
    }
  }

  it("keeps the caller's dy and leaves nested (second-order) gradients to tfjs", async () => {
    await useBackend('cpu');
    const x = tf.tensor1d([0.5, -1, 2]);
    const dy = tf.tensor1d([1, 2, 3]);
    const [g] = tf.grads((a: tf.Tensor) => tf.mul(tf.square(a), 3))([x], dy);
    expect(Array.from(g!.dataSync())).toEqual([3, -12, 36]); // 6 x dy
    expect(dy.isDisposed).toBe(false);
    // d2/dx2 of x^3 is 6x.
    const second = tf.grad((a: tf.Tensor) => tf.grad((b: tf.Tensor) => tf.sum(tf.pow(b, 3)))(a))(x);
    expect(Array.from(second.dataSync())).toEqual([3, -6, 12]);
    tf.dispose([x, dy, g!, second]);
  });
});
