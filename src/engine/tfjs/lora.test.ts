import { beforeAll, describe, expect, it } from 'vitest';
import { initAdapters, loraParamCount, mergeAdapters, type LoraConfig } from '../../model/lora.js';
import { initWeights, type Weights } from '../../model/weights.js';
import { quantizeInt8 } from '../../export/quantize.js';
import { Rng } from '../../random.js';
import { useBackend } from './backend.js';
import { TfjsEngine } from './engine.js';
import { tf } from './tf.js';
import { tinySpec, randomBatch } from '../test/fixtures.js';

const spec = tinySpec();
const opt = { beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.1, gradClip: 1 };
const cfg: LoraConfig = { rank: 4, alpha: 8, dropout: 0, targets: ['q_proj', 'v_proj', 'down_proj'], quantize: 'none' };

const batchOf = (seed: number, b = 4, t = 16) => randomBatch(seed, spec.vocabSize, b, t);

const maxDiff = (a: Float32Array, b: Float32Array) => a.reduce((m, x, i) => Math.max(m, Math.abs(x - b[i]!)), 0);

function lora(c: LoraConfig = cfg, adapters?: Weights) {
  return { ...c, seed: 11, adapters: adapters ?? initAdapters(spec, c, 11) };
}

/** Random non-zero adapters (B is zero at init, which would hide a wrong product). */
function randomAdapters(c: LoraConfig): Weights {
  const rng = new Rng(99);
  const a = initAdapters(spec, c, 5);
  for (const t of a.values()) for (let i = 0; i < t.data.length; i++) t.data[i] = (rng.next() - 0.5) * 0.2;
  return a;
}

describe('LoRA on the tfjs engine (cpu)', () => {
  const base = initWeights(spec, 3);
  const ids = [1, 5, 9, 2, 33, 7, 12, 40];
  beforeAll(async () => {
    await useBackend('cpu');
  });

  it('starts at the base exactly; adapters on give the merged model; adapters off give the base', async () => {
    const plain = await TfjsEngine.create({ backend: 'cpu', spec, weights: base });
    const fresh = await TfjsEngine.create({ backend: 'cpu', spec, weights: base, lora: lora() });
    const want = await plain.logits(ids);
    expect(maxDiff(await fresh.logits(ids), want)).toBe(0);
    const adapters = randomAdapters(cfg);
    const adapted = await TfjsEngine.create({ backend: 'cpu', spec, weights: base, lora: lora(cfg, adapters) });
    const merged = await TfjsEngine.create({
      backend: 'cpu',
      spec,
      weights: mergeAdapters(spec, base, adapters, cfg),
    });
    const [a, m] = [await adapted.logits(ids), await merged.logits(ids)];
    expect(maxDiff(a, want)).toBeGreaterThan(1e-2);
    expect(maxDiff(a, m)).toBeLessThan(1e-5);
    // weights() is the merged model; the reference 'base' is the base, with no second copy held.
    expect(
      maxDiff(
        (await adapted.weights()).get('model.layers.1.mlp.down_proj.weight')!.data,
        mergeAdapters(spec, base, adapters, cfg).get('model.layers.1.mlp.down_proj.weight')!.data,
      ),
    ).toBeLessThan(1e-6);
    const before = tf.memory().numBytes;
    await adapted.setReference('base');
    expect(tf.memory().numBytes).toBe(before);
    const b = batchOf(1);
    const [ref, basePlain] = [await adapted.logprobs(b, { reference: true }), await plain.logprobs(b)];
    expect(maxDiff(ref, basePlain)).toBe(0);
    expect(maxDiff(await adapted.logprobs(b), basePlain)).toBeGreaterThan(1e-3);
    for (const e of [plain, fresh, adapted, merged]) await e.dispose();
  });

  it('trains the adapters alone: loss falls, the base stays, optimizer state covers only the adapters', async () => {
    const e = await TfjsEngine.create({ backend: 'cpu', spec, weights: base, lora: lora(), optimizer: opt });
    const b = batchOf(2);
    const first = (await e.forwardBackward(b, { name: 'cross_entropy' })).loss;
    await e.optimStep(1e-2);
    let last = first;
    for (let s = 0; s < 20; s++) {
      last = (await e.forwardBackward(b, { name: 'cross_entropy' })).loss;
      await e.optimStep(1e-2);
    }
    expect(last).toBeLessThan(first - 0.3);
    const st = (await e.optimizerState())!;
    const n = loraParamCount(spec, cfg);
    expect([...st.m.keys()].sort()).toEqual([...(await e.adapters())!.keys()].sort());
    expect([...st.m.values()].reduce((a, w) => a + w.data.length, 0)).toBe(n);
    const mem = await e.memory();
    expect(mem.optimizer).toBe(2 * 4 * n);
    expect(mem.adapters).toBe(4 * n);
    // The base did not move: with the adapters off, the engine is the base model still.
    await e.setReference('base');
    const plain = await TfjsEngine.create({ backend: 'cpu', spec, weights: base });
    expect(maxDiff(await e.logprobs(b, { reference: true }), await plain.logprobs(b))).toBe(0);
    await e.dispose();
    await plain.dispose();
  });

  it('dropout masks follow (seed, step, micro-batch): two engines agree to the bit', async () => {
    const c = { ...cfg, dropout: 0.3 };
    const run = async () => {
      const e = await TfjsEngine.create({ backend: 'cpu', spec, weights: base, lora: lora(c), optimizer: opt });
      const losses: number[] = [];
      for (let s = 0; s < 3; s++) {
        losses.push((await e.forwardBackward(batchOf(s), { name: 'cross_entropy' })).loss);
        await e.optimStep(1e-2);
      }
      const a = await e.adapters();
      await e.dispose();
      return { losses, a };
    };
    const [x, y] = [await run(), await run()];
    expect(y.losses).toEqual(x.losses);
    for (const [k, v] of x.a!) expect(Array.from(y.a!.get(k)!.data)).toEqual(Array.from(v.data));
  });

  it('QLoRA int8: the projections are held as int8 (about a quarter of their bytes) and compute as the dequantized model', async () => {
    const q = { ...cfg, quantize: 'int8' as const };
    const fp = await TfjsEngine.create({ backend: 'cpu', spec, weights: base, lora: lora(), optimizer: opt });
    const i8 = await TfjsEngine.create({ backend: 'cpu', spec, weights: base, lora: lora(q), optimizer: opt });
    const [mf, mq] = [await fp.memory(), await i8.memory()];
    const proj = [...base].filter(([n]) => /_proj\.weight$/.test(n)).reduce((a, [, w]) => a + w.data.length, 0);
    // float32 -> one byte a value plus a float32 scale a row.
    expect(mf.weights - mq.weights).toBeGreaterThan(proj * 3 - proj / 8);
    const dq = await TfjsEngine.create({ backend: 'cpu', spec, weights: quantizeInt8(base).weights });
    expect(maxDiff(await i8.logits(ids), await dq.logits(ids))).toBeLessThan(1e-5);
    // It trains like the full-precision base.
    const b = batchOf(4);
    let [lf, lq] = [0, 0];
    for (let s = 0; s < 15; s++) {
      lf = (await fp.forwardBackward(b, { name: 'cross_entropy' })).loss;
      lq = (await i8.forwardBackward(b, { name: 'cross_entropy' })).loss;
      await fp.optimStep(1e-2);
      await i8.optimStep(1e-2);
    }
    expect(Math.abs(lf - lq)).toBeLessThan(0.05);
    for (const e of [fp, i8, dq]) await e.dispose();
  });
});
