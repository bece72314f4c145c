import { beforeAll, describe, expect, it } from 'vitest';
import { useBackend } from './backend.js';
import { tf } from './tf.js';
import { setFusedKernels } from './kernels.js';
import { Rng } from '../../random.js';
import { AdamW } from './optimizer.js';
import { learningRate } from '../../train/schedule.js';

describe('AdamW', () => {
  beforeAll(async () => {
    await useBackend('cpu');
  });

  it('matches the update rule by hand, with decay decoupled and only where marked', async () => {
    const w = tf.variable(tf.tensor1d([1, -2]));
    const g = tf.variable(tf.tensor1d([0.5, 0.5]));
    const opt = new AdamW(
      new Map([
        ['w', w],
        ['g', g],
      ]),
      new Set(['w']),
      { beta1: 0.9, beta2: 0.99, eps: 1e-8, weightDecay: 0.1 },
    );
    const grads = new Map<string, tf.Tensor>([
      ['w', tf.tensor1d([0.2, -0.4])],
      ['g', tf.tensor1d([0.2, -0.4])],
    ]);
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

describe('AdamW, fused pass (wasm, cpu) and tensor ops', () => {
  // The rule in float64, step by step: what both paths must compute, up to float32 storage.
  function reference(p0: Float32Array, grads: Float32Array[], lr: number, wd: number) {
    const p = Float64Array.from(p0);
    const m = new Float64Array(p.length);
    const v = new Float64Array(p.length);
    grads.forEach((g, s) => {
      const bc1 = 1 - 0.9 ** (s + 1);
      const bc2 = 1 - 0.95 ** (s + 1);
      for (let i = 0; i < p.length; i++) {
        m[i] = 0.9 * m[i]! + 0.1 * g[i]!;
        v[i] = 0.95 * v[i]! + 0.05 * g[i]! * g[i]!;
        p[i] = p[i]! - lr * (m[i]! / bc1 / (Math.sqrt(v[i]! / bc2) + 1e-8)) - lr * wd * p[i]!;
      }
    });
    return p;
  }

  for (const backend of ['wasm', 'cpu'] as const) {
    for (const fused of [true, false]) {
      it(`${backend}, ${fused ? 'fused' : 'tensor ops'}: 6 steps match the rule in float64 within 2e-6`, async () => {
        await useBackend(backend);
        const prev = setFusedKernels(fused);
        try {
          const rng = new Rng(17);
          const n = 3000;
          const p0 = Float32Array.from({ length: n }, () => rng.normal());
          const grads = Array.from({ length: 6 }, () => Float32Array.from({ length: n }, () => rng.normal() * 0.1));
          const w = tf.variable(tf.tensor2d(p0, [60, 50]));
          const opt = new AdamW(new Map([['w', w]]), new Set(['w']), {
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            weightDecay: 0.1,
          });
          for (const g of grads) {
            const gt = tf.tensor2d(g, [60, 50]);
            opt.step(new Map([['w', gt]]), 3e-3);
            gt.dispose();
          }
          const want = reference(p0, grads, 3e-3, 0.1);
          const got = w.dataSync();
          let worst = 0;
          for (let i = 0; i < n; i++) worst = Math.max(worst, Math.abs(got[i]! - want[i]!));
          expect(worst).toBeLessThan(2e-6);
          // The weights moved by about lr per step, so this is not vacuous.
          expect(Math.abs(got[0]! - p0[0]!)).toBeGreaterThan(1e-3);
          expect(opt.m.get('w')!.shape).toEqual([60, 50]);
          w.dispose();
          opt.dispose();
        } finally {
          setFusedKernels(prev);
        }
      });
    }
  }
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
