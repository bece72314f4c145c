import { afterAll, describe, expect, it } from 'vitest';
// The bench's model specs and training settings, so this is the model `npm run bench` times.
import { MODELS, TRAIN } from '../../../bench/configs.mjs';
import { setNativeKernels } from './native-kernels.js';
import { useBackend } from './backend.js';
import { tf } from './tf.js';
import { Rng } from '../../random.js';
import { lmLoss } from './losses.js';
import { AdamW } from './optimizer.js';
import { fusedKernels, setFusedKernels } from './kernels.js';
import { LanguageModel } from './model.js';
import type { ModelSpec } from '../../model/spec.js';

// The loss curve of the bench models with Lathe's fused kernels against the plain tfjs ops they
// replace (LATHE_FUSED_KERNELS=0), on wasm: same seed, same batches, the bench's AdamW and
// clipping. Shorter sequences than the bench's 256 keep it quick on two cores; the kernels do not
// depend on the length (kernels.test.ts checks them at 256). Measured: the curves differ by at
// most 3e-6 over these steps (LATHE_SHOW_CURVES=1 prints them); the tolerance is 5e-5 on losses
// of ~8.4.
const TOL = 5e-5;

async function lossCurve(
  spec: ModelSpec,
  fused: boolean,
  steps: number,
  batch: number,
  seq: number,
  native = true,
): Promise<number[]> {
  const prev = setFusedKernels(fused);
  const prevNative = setNativeKernels(native);
  const model = LanguageModel.init(spec, TRAIN.seed);
  const decay = new Set(model.paramSpecs.filter((p) => p.decay).map((p) => p.name));
  const opt = new AdamW(model.params, decay, TRAIN);
  const names = new Map([...model.params].map(([name, v]) => [v.name, name]));
  const rng = new Rng(99);
  const losses: number[] = [];
  try {
    for (let s = 0; s < steps; s++) {
      const toks = Int32Array.from({ length: batch * (seq + 1) }, () => rng.int(spec.vocabSize));
      const inputs = new Int32Array(batch * seq);
      const targets = new Int32Array(batch * seq);
      for (let b = 0; b < batch; b++) {
        inputs.set(toks.subarray(b * (seq + 1), b * (seq + 1) + seq), b * seq);
        targets.set(toks.subarray(b * (seq + 1) + 1, (b + 1) * (seq + 1)), b * seq);
      }
      const { value, grads } = tf.variableGrads(
        () => lmLoss(model, { inputs, targets, batch, seq }).total,
        [...model.params.values()],
      );
      losses.push((await value.data())[0]!);
      const g = new Map(Object.entries(grads).map(([k, t]) => [names.get(k)!, t]));
      const norm = tf.tidy(() => tf.sqrt(tf.addN([...g.values()].map((t) => tf.sum(tf.square(t))))).dataSync()[0]!);
      if (norm > TRAIN.gradClip) for (const [k, t] of g) g.set(k, tf.mul(t, TRAIN.gradClip / norm));
      opt.step(g, TRAIN.lr);
      tf.dispose([value, ...Object.values(grads), ...g.values()]);
    }
  } finally {
    opt.dispose();
    model.dispose();
    setFusedKernels(prev);
    setNativeKernels(prevNative);
  }
  return losses;
}

describe('bench models: fused kernels against plain tfjs ops (wasm)', () => {
  const prev = fusedKernels();
  afterAll(() => {
    setFusedKernels(prev);
  });

  for (const [name, steps] of [
    ['small-dense', 5],
    ['small-moe', 3],
  ] as const) {
    it(`${name}: the loss curve matches within ${TOL}`, async () => {
      await useBackend('wasm');
      const spec = MODELS[name] as ModelSpec;
      const plain = await lossCurve(spec, false, steps, 2, 64);
      const fused = await lossCurve(spec, true, steps, 2, 64);
      if (process.env.LATHE_SHOW_CURVES)
        console.log(name, { plain, fused, maxDiff: Math.max(...plain.map((p, s) => Math.abs(p - fused[s]!))) });
      for (let s = 0; s < steps; s++)
        expect(Math.abs(fused[s]! - plain[s]!), `step ${s + 1}: ${fused[s]} vs ${plain[s]}`).toBeLessThan(TOL);
      // The curve moves, so agreement is not trivial: later losses differ from the first.
      expect(Math.max(...plain.slice(1).map((l) => Math.abs(l - plain[0]!)))).toBeGreaterThan(1e-3);
    });
  }
});

// The same for the native kernels (onnxruntime-node's GEMM, exp and row sums; engine/tfjs/native.ts)
// against tfjs-wasm's own kernels, with the fused ops on in both: the products sum in another
// order, so the curves drift apart by rounding only. Measured: at most 1.6e-5 apart (dense) and
// 1.9e-6 (MoE) over these steps; the tolerance is 2e-4 on losses of ~8.4.
const NATIVE_TOL = 2e-4;

describe("bench models: native kernels against tfjs-wasm's own (wasm)", () => {
  for (const [name, steps] of [
    ['small-dense', 5],
    ['small-moe', 3],
  ] as const) {
    it(`${name}: the loss curve matches within ${NATIVE_TOL}`, async () => {
      await useBackend('wasm');
      const spec = MODELS[name] as ModelSpec;
      const own = await lossCurve(spec, true, steps, 2, 64, false);
      const native = await lossCurve(spec, true, steps, 2, 64, true);
      if (process.env.LATHE_SHOW_CURVES)
        console.log(name, { own, native, maxDiff: Math.max(...own.map((p, s) => Math.abs(p - native[s]!))) });
      for (let s = 0; s < steps; s++)
        expect(Math.abs(native[s]! - own[s]!), `step ${s + 1}: ${native[s]} vs ${own[s]}`).toBeLessThan(NATIVE_TOL);
      expect(Math.max(...own.slice(1).map((l) => Math.abs(l - own[0]!)))).toBeGreaterThan(1e-3);
    });
  }
});
