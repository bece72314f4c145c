// The batch decoder of both engines: rows with different prompts that join and leave at different
// steps must get, row by row, the logits a one-prompt decode gives, and the two engines must agree.
import { afterAll, describe, expect, it } from 'vitest';
import { modelSpec, type ModelSpec } from '../model/spec.js';
import { initWeights } from '../model/weights.js';
import { ModelSchema } from '../recipe/schema.js';
import type { Engine } from './engine.js';
import { TfjsEngine } from './tfjs/engine.js';
import { TorchEngine } from './torch/engine.js';

const V = 48;
const dense = modelSpec(ModelSchema.parse({ dim: 32, layers: 2, heads: 4, kvHeads: 2, context: 24 }), V);
const moe = modelSpec(
  ModelSchema.parse({ dim: 32, layers: 2, heads: 4, kvHeads: 2, context: 24, arch: 'moe', experts: 4, topK: 2 }),
  V,
);
// Qwen-style attention: q/k/v/o biases, per-head q/k norms, and a sliding window of 4 on layer 1 (the
// prompts and decodes run past it).
const qwen = modelSpec(
  ModelSchema.parse({
    dim: 32,
    layers: 2,
    heads: 4,
    kvHeads: 2,
    context: 24,
    attentionBias: 'all',
    qkNorm: true,
    slidingWindow: 4,
    windowLayers: [1],
  }),
  V,
);
// Larger weights than training's init, so the logits spread and a wrong position or cache shows;
// biases and norm weights off their zeros and ones, so leaving one out shows too.
const weightsOf = (spec: ModelSpec) => {
  const w = initWeights(spec, 11);
  for (const [name, t] of w) {
    if (t.shape.length === 2) for (let i = 0; i < t.data.length; i++) t.data[i]! *= 8;
    else if (/(bias|_norm\.weight)$/.test(name))
      for (let i = 0; i < t.data.length; i++) t.data[i]! += 0.5 * Math.sin(i + 1);
  }
  return w;
};

const PROMPTS = [
  [1, 5, 9, 13, 2],
  [1, 30],
  [1, 7, 7, 7, 20, 21, 22, 40],
];
/** The token fed to a prompt's row at its j-th decode step (teacher forcing, so rows are comparable). */
const tokenAt = (p: number, j: number) => (p * 7 + j * 5 + 3) % V;

/** Logits of a one-prompt decode fed tokenAt: after the prompt, then after each of `steps` tokens. */
async function reference(e: Engine, p: number, steps: number): Promise<Float32Array[]> {
  const { logits, session } = await e.decode(PROMPTS[p]!, 1);
  const out = [logits];
  for (let j = 0; j < steps; j++) out.push(await session.step(Int32Array.of(tokenAt(p, j))));
  session.close();
  return out;
}

const maxDiff = (a: Float32Array, b: Float32Array) => {
  expect(a.length).toBe(b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
};

/**
 * Rows join and leave at different steps: prompt 0 alone for two steps, then prompt 1, then prompt 2
 * as two copies; prompt 0 leaves after step 4. Returns the logits each row saw, by prompt, in order.
 */
async function staggered(e: Engine): Promise<{ logits: Map<number, Float32Array[]>; sizes: number[] }> {
  const d = e.batchDecoder();
  const live: { row: number; p: number; j: number }[] = [];
  const seen = new Map<number, Float32Array[]>();
  const sizes: number[] = [];
  const join = async (p: number, copies = 1) => {
    const { rows, logits } = await d.add(PROMPTS[p]!, copies);
    expect(rows.length).toBe(copies);
    for (const row of rows) {
      live.push({ row, p, j: 0 });
      seen.set(row, [logits]);
    }
  };
  await join(0);
  for (let step = 0; step < 7; step++) {
    if (step === 2) await join(1);
    if (step === 3) await join(2, 2);
    if (step === 5) {
      const i = live.findIndex((x) => x.p === 0);
      d.drop(live[i]!.row);
      d.drop(live[i]!.row); // twice: ignored
      live.splice(i, 1);
    }
    sizes.push(d.size);
    const out = await d.step(
      live.map((x) => x.row),
      Int32Array.from(live.map((x) => tokenAt(x.p, x.j))),
    );
    live.forEach((x, i) => {
      seen.get(x.row)!.push(out.slice(i * V, (i + 1) * V));
      x.j++;
    });
  }
  const byPrompt = new Map<number, Float32Array[]>();
  for (const [row, ls] of seen) {
    const p = row === 0 ? 0 : row === 1 ? 1 : 2;
    if (!byPrompt.has(p)) byPrompt.set(p, ls);
    else expect(maxDiff(byPrompt.get(p)!.at(-1)!, ls.at(-1)!), 'copies of one prompt decode alike').toBe(0);
  }
  // A dropped row cannot step; the decoder goes on.
  await expect(d.step([0], Int32Array.of(1))).rejects.toThrow(/row 0 is not live/);
  d.close();
  expect(d.size).toBe(0);
  return { logits: byPrompt, sizes };
}

const engines: Engine[] = [];
afterAll(async () => {
  await Promise.all(engines.map((e) => e.dispose()));
});

describe.each([
  ['dense', dense],
  ['moe', moe],
  ['qwen-style, windowed', qwen],
])('batch decoder (%s)', (_name, spec) => {
  it('rows of different prompts joining and leaving get the logits of a one-prompt decode, on tfjs and torch alike', async () => {
    const weights = weightsOf(spec);
    const tfjs = await TfjsEngine.create({ backend: 'cpu', spec, weights });
    const torch = await TorchEngine.create({ device: 'cpu', dtype: 'fp32', spec, weights });
    engines.push(tfjs, torch);
    const got = { tfjs: await staggered(tfjs), torch: await staggered(torch) };
    // Rows live per step: 1, 1, 2, 4, 4 (two copies joined), 3 (prompt 0 left), 3.
    expect(got.tfjs.sizes).toEqual([1, 1, 2, 4, 4, 3, 3]);
    expect(got.torch.sizes).toEqual(got.tfjs.sizes);
    let worst = 0;
    for (const [p, steps] of [
      [0, 5],
      [1, 5],
      [2, 4],
    ] as const) {
      const ref = await reference(tfjs, p, steps);
      for (const [kind, g] of Object.entries(got)) {
        const rows = g.logits.get(p)!;
        expect(rows.length, `${kind} prompt ${p}`).toBe(steps + 1);
        rows.forEach((l, j) => {
          const d = maxDiff(l, ref[j]!);
          worst = Math.max(worst, d);
          expect(d, `${kind} prompt ${p} step ${j}`).toBeLessThan(1e-4);
        });
      }
    }
    console.log(
      `[batch-decode] ${_name}: worst |logit difference| against one-prompt decode ${worst.toExponential(2)}`,
    );
  }, 120_000);

  it('refuses an empty prompt, a prompt over the context, a row past the context and mismatched tokens', async () => {
    for (const e of engines.slice(-2)) {
      const d = e.batchDecoder();
      await expect(d.add([])).rejects.toThrow(/prompt is empty/);
      await expect(d.add(Array.from({ length: 25 }, () => 3))).rejects.toThrow(
        /25 prompt tokens exceed the context 24/,
      );
      const { rows } = await d.add(Array.from({ length: 23 }, () => 3));
      await expect(d.step(rows, Int32Array.of(1, 2))).rejects.toThrow(/1 rows but 2 tokens/);
      await d.step(rows, Int32Array.of(1));
      await expect(d.step(rows, Int32Array.of(1))).rejects.toThrow(/at the end of the context \(24\)/);
      d.close();
    }
  }, 60_000);
});
