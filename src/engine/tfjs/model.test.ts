import { beforeAll, describe, expect, it } from 'vitest';
import { tf } from './tf.js';
import { useBackend } from './backend.js';
import { generate } from '../sample.js';
import { initWeights } from '../../model/weights.js';
import { TfjsEngine } from './engine.js';
import { LanguageModel } from './model.js';
import { tinySpec } from '../test/fixtures.js';

const base = tinySpec({ vocabSize: 50, tieEmbeddings: false });

for (const backend of ['cpu', 'wasm'] as const) {
  describe(`model on ${backend}`, () => {
    beforeAll(async () => {
      await useBackend(backend);
    });

    for (const arch of ['dense', 'moe'] as const) {
      it(`${arch}: KV-cached decoding gives the same logits as a full pass, and is causal`, async () => {
        const m = LanguageModel.init({ ...base, arch }, 3);
        const ids = [1, 7, 3, 9, 4, 2, 8];
        const full = tf.tidy(() => m.forward(tf.tensor2d([ids], [1, 7], 'int32')).logits);
        const fullData = await full.array();
        const cache = m.newCache();
        const step: number[][] = [];
        for (let t = 0; t < ids.length; t++) {
          const l = tf.tidy(() => m.forward(tf.tensor2d([[ids[t]!]], [1, 1], 'int32'), { cache, pos0: t }).logits);
          step.push((await l.array())[0]!);
          l.dispose();
        }
        for (let t = 0; t < ids.length; t++)
          for (let v = 0; v < 50; v++) expect(step[t]![v]!).toBeCloseTo(fullData[t]![v]!, 4);
        // Changing a later token must not change earlier logits.
        const other = tf.tidy(() => m.forward(tf.tensor2d([[1, 7, 3, 9, 4, 2, 5]], [1, 7], 'int32')).logits);
        const o = await other.array();
        for (let t = 0; t < 6; t++) expect(o[t]![0]!).toBeCloseTo(fullData[t]![0]!, 5);
        expect(Math.abs(o[6]![0]! - fullData[6]![0]!)).toBeGreaterThan(0);
        for (const c of cache) {
          c.k?.dispose();
          c.v?.dispose();
        }
        full.dispose();
        other.dispose();
        m.dispose();
      });

      it(`${arch}: every parameter gets a finite, non-zero gradient`, () => {
        const m = LanguageModel.init({ ...base, arch }, 5);
        const vars = [...m.params.values()];
        const { grads, value } = tf.variableGrads(() => {
          const { logits, router } = m.forward(
            tf.tensor2d(
              [
                [1, 2, 3, 4, 5, 6],
                [6, 5, 4, 3, 2, 1],
              ],
              [2, 6],
              'int32',
            ),
          );
          let loss = tf.mean(tf.square(logits)) as tf.Scalar;
          for (const r of router) loss = tf.add(loss, tf.add(r.balance, r.z));
          return loss;
        }, vars);
        expect(Number.isFinite(value.dataSync()[0])).toBe(true);
        for (const [name, v] of m.params) {
          const g = grads[v.name];
          if (!g) throw new Error(`no gradient for ${name}`);
          const n = tf.norm(g).dataSync()[0]!;
          expect(Number.isFinite(n), name).toBe(true);
          // An expert that no token in this tiny batch chose legitimately gets zero.
          if (!name.includes('.experts.')) expect(n, name).toBeGreaterThan(0);
        }
        tf.dispose(grads);
        value.dispose();
        m.dispose();
      });
    }

    it('generation is deterministic under a seed, greedy equals argmax, and stop tokens stop', async () => {
      const m = await TfjsEngine.create({ backend, spec: base, weights: initWeights(base, 11) });
      const a = await generate(m, [1, 2], { maxTokens: 8, temperature: 0.9, topK: 10, topP: 0.9, seed: 4 });
      const b = await generate(m, [1, 2], { maxTokens: 8, temperature: 0.9, topK: 10, topP: 0.9, seed: 4 });
      expect(a).toEqual(b);
      expect(a.length).toBe(8);
      const g = await generate(m, [1, 2], { maxTokens: 1, temperature: 0 });
      const last = Array.from((await m.logits([1, 2])).subarray(base.vocabSize));
      expect(g[0]).toBe(last.indexOf(Math.max(...last)));
      const stopAt = a[3]!;
      const c = await generate(m, [1, 2], {
        maxTokens: 8,
        temperature: 0.9,
        topK: 10,
        topP: 0.9,
        seed: 4,
        stop: [stopAt],
      });
      expect(c).toEqual(a.slice(0, a.indexOf(stopAt)));
      // The context bounds the output: 16 positions, 2 used by the prompt.
      expect((await generate(m, [1, 2], { maxTokens: 100, seed: 1 })).length).toBe(14);
      await m.dispose();
    });
  });
}
