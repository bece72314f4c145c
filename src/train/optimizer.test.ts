import { beforeAll, describe, expect, it } from 'vitest';
import { useBackend } from '../backend/select.js';
import { tf } from '../backend/tf.js';
import { AdamW } from './optimizer.js';
import { learningRate } from './schedule.js';

describe('AdamW', () => {
  beforeAll(async () => {
    await useBackend('cpu');
  });

  it('matches the update rule by hand, with decay decoupled and only where marked', async () => {
    const w = tf.variable(tf.tensor1d([1, -2]));
    const g = tf.variable(tf.tensor1d([0.5, 0.5]));
    const opt = new AdamW(new Map([['w', w], ['g', g]]), new Set(['w']), { beta1: 0.9, beta2: 0.99, eps: 1e-8, weightDecay: 0.1 });
    const grads = new Map<string, tf.Tensor>([['w', tf.tensor1d([0.2, -0.4])], ['g', tf.tensor1d([0.2, -0.4])]]);
    opt.step(grads, 0.01);
    // Step 1: m̂ = g, v̂ = g², so the Adam step is lr·sign(g) (up to eps); decay adds lr·wd·w.
    const wv = Array.from(await w.data());
    const gv = Array.from(await g.data());
    expect(wv[0]).toBeCloseTo(1 - 0.01 - 0.01 * 0.1 * 1, 6);
    expect(wv[1]).toBeCloseTo(-2 + 0.01 - 0.01 * 0.1 * -2, 6);
    expect(gv[0]).toBeCloseTo(0.5 - 0.01, 6);
    expect(gv[1]).toBeCloseTo(0.5 + 0.01, 6);
    expect(opt.t).toBe(1);
    // Step 2 with the same gradient: m = 0.19·g·(1/0.19), still lr·sign(g) for a constant gradient.
    opt.step(grads, 0.01);
    expect((await g.data())[0]).toBeCloseTo(0.5 - 0.02, 5);
    tf.dispose([...grads.values(), w, g]);
    opt.dispose();
  });
});

describe('learning rate schedule', () => {
  const o = { lr: 1, minLr: 0.1, warmupSteps: 10, steps: 110 };
  it('warms up linearly, peaks, then decays by cosine to minLr', () => {
    expect(learningRate(1, o)).toBeCloseTo(0.1);
    expect(learningRate(10, o)).toBeCloseTo(1);
    expect(learningRate(60, o)).toBeCloseTo(0.55);
    expect(learningRate(110, o)).toBeCloseTo(0.1);
    for (let s = 11; s < 110; s++) expect(learningRate(s + 1, o)).toBeLessThanOrEqual(learningRate(s, o));
  });
});
