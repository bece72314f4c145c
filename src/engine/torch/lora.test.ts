// LoRA and QLoRA on the torch engine, against the tfjs engine from the same base, adapters and
// batches (cpu, fp32): per-step losses, trained adapters, the base reference, int8 memory; and the
// NF4 path's refusal where CUDA or bitsandbytes is missing.
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ROOT } from '../../../test/helpers.js';
import { initAdapters, loraParamCount, type LoraConfig } from '../../model/lora.js';
import { initWeights } from '../../model/weights.js';
import type { Engine } from '../engine.js';
import { createEngine } from '../index.js';
import { TfjsEngine } from '../tfjs/engine.js';
import { TorchEngine } from './engine.js';
import { enginePython } from './process.js';
import { tinySpec, randomBatch } from '../test/fixtures.js';

const spec = tinySpec();
const optimizer = { beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.1, gradClip: 1 };
const base = initWeights(spec, 3);

const batchOf = (seed: number, b = 4, t = 16) => randomBatch(seed, spec.vocabSize, b, t);
const maxDiff = (a: Float32Array, b: Float32Array) => a.reduce((m, x, i) => Math.max(m, Math.abs(x - b[i]!)), 0);
const rel = (a: number, b: number) => Math.abs(a - b) / Math.max(Math.abs(a), Math.abs(b), 1e-12);

async function both(cfg: LoraConfig): Promise<[Engine, Engine]> {
  const lora = { ...cfg, seed: 4, adapters: initAdapters(spec, cfg, 4) };
  return [
    await TfjsEngine.create({ backend: 'cpu', spec, weights: base, optimizer, lora }),
    await TorchEngine.create({ device: 'cpu', dtype: 'fp32', spec, weights: base, optimizer, lora }),
  ];
}

describe('LoRA on the torch engine, against tfjs (cpu, fp32)', () => {
  for (const quantize of ['none', 'int8'] as const)
    it(`${quantize === 'none' ? 'LoRA' : 'QLoRA int8'}: 8 steps of cross-entropy and DPO agree within 1e-4; adapters, merged weights and the base reference agree`, async () => {
      const cfg: LoraConfig = {
        rank: 4,
        alpha: 8,
        dropout: 0,
        targets: ['q_proj', 'k_proj', 'o_proj', 'up_proj'],
        quantize,
      };
      const [tf, pt] = await both(cfg);
      try {
        let worst = 0;
        for (let s = 0; s < 8; s++) {
          const b = batchOf(s);
          const [a, c] = [
            await tf.forwardBackward(b, { name: 'cross_entropy' }),
            await pt.forwardBackward(b, { name: 'cross_entropy' }),
          ];
          worst = Math.max(worst, rel(a.loss, c.loss));
          expect(rel(a.loss, c.loss), `loss at step ${s}`).toBeLessThan(1e-4);
          const [ga, gc] = [await tf.optimStep(1e-2), await pt.optimStep(1e-2)];
          expect(rel(ga.gradNorm, gc.gradNorm)).toBeLessThan(1e-3);
        }
        // DPO with the base as the reference (adapters off), on both.
        await tf.setReference('base');
        await pt.setReference('base');
        const pairs = batchOf(99, 4);
        pairs.weights = new Float32Array(pairs.inputs.length).fill(1);
        const [ra, rc] = [
          await tf.logprobs(pairs, { sum: true, reference: true }),
          await pt.logprobs(pairs, { sum: true, reference: true }),
        ];
        expect(maxDiff(ra, rc)).toBeLessThan(1e-3);
        const dpo = { name: 'dpo' as const, pairs: 2, reference: ra, beta: 0.1, labelSmoothing: 0 };
        // reference 'engine': each engine computes the same reference log-probs itself.
        for (const [e, r] of [
          [tf, ra],
          [pt, rc],
        ] as const) {
          const [given, own] = [
            await e.forward(pairs, { ...dpo, reference: r }),
            await e.forward(pairs, { ...dpo, reference: 'engine' }),
          ];
          expect(own.loss, e.kind).toBe(given.loss);
          expect(own.values, e.kind).toEqual(given.values);
        }
        const [da, dc] = [await tf.forwardBackward(pairs, dpo), await pt.forwardBackward(pairs, dpo)];
        expect(rel(da.loss, dc.loss)).toBeLessThan(1e-4);
        const [aa, ac] = [(await tf.adapters())!, (await pt.adapters())!];
        expect([...ac.keys()].sort()).toEqual([...aa.keys()].sort());
        for (const [k, v] of aa) expect(maxDiff(v.data, ac.get(k)!.data), k).toBeLessThan(1e-4);
        const [wa, wc] = [await tf.weights(), await pt.weights()];
        expect([...wc.keys()].sort()).toEqual([...wa.keys()].sort());
        for (const [k, v] of wa) expect(maxDiff(v.data, wc.get(k)!.data), k).toBeLessThan(1e-4);
        // Only the adapters have optimizer state; the base is held as asked.
        const [ma, mc] = [await tf.memory(), await pt.memory()];
        expect(mc.optimizer).toBe(2 * 4 * loraParamCount(spec, cfg));
        expect(mc.optimizer).toBe(ma.optimizer);
        expect(mc.weights).toBe(ma.weights);
        console.log(
          `[lora parity] ${quantize}: worst relative loss difference ${worst.toExponential(2)}; base held ${mc.weights} bytes`,
        );
      } finally {
        await tf.dispose();
        await pt.dispose();
      }
    }, 120_000);

  it('NF4 is refused with the reason: on the tfjs engine, on the CPU, and without bitsandbytes', async () => {
    const cfg: LoraConfig = { rank: 4, alpha: 8, dropout: 0, targets: ['q_proj'], quantize: 'nf4' };
    const lora = { ...cfg, seed: 1, adapters: initAdapters(spec, cfg, 1) };
    await expect(createEngine({ backend: 'cpu', spec, weights: base, lora })).rejects.toThrow(
      /train\.lora\.quantize: nf4 runs on the torch engine on CUDA \(bitsandbytes\); on the tfjs engine use int8/,
    );
    await expect(TorchEngine.create({ device: 'cpu', dtype: 'fp32', spec, weights: base, lora })).rejects.toThrow(
      /train\.lora\.quantize nf4: NF4 \(bitsandbytes\) runs on CUDA only; use --device cuda, or quantize int8 on the CPU/,
    );
    // On a CUDA device without bitsandbytes (this venv has none): the install line.
    const r = spawnSync(
      enginePython(),
      ['-c', "import torch; from lathe_torch.lora import check_quantize; check_quantize('nf4', torch.device('cuda'))"],
      { encoding: 'utf8', env: { ...process.env, PYTHONPATH: join(ROOT, 'src', 'engine', 'torch') } },
    );
    expect(r.status).not.toBe(0);
    expect(r.stderr).toMatch(
      /LoraError: train\.lora\.quantize nf4: bitsandbytes is not installed for this Python .*pip install bitsandbytes==\d/,
    );
  }, 60_000);
});
