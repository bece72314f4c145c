import { afterEach, describe, expect, it } from 'vitest';
import { modelSpec } from './model-spec.js';
import { paramSpecsOf } from '../model/spec.js';
import { ModelSchema } from './schema.js';
import { checkRecipe, modelMemoryLimit, paramCounts } from './validate.js';

const data = { sources: [{ path: 'x.txt' }] };
const issuesOf = (raw: unknown) => {
  const r = checkRecipe(raw);
  return r.ok ? [] : r.issues;
};

describe('model size', () => {
  const saved = process.env.LATHE_MAX_MODEL_GIB;
  afterEach(() => {
    if (saved === undefined) delete process.env.LATHE_MAX_MODEL_GIB;
    else process.env.LATHE_MAX_MODEL_GIB = saved;
  });

  it('counts parameters exactly as the model lays them out (dense and MoE, tied or not)', () => {
    const cases = [
      {},
      { dim: 96, layers: 3, heads: 6, kvHeads: 2, ffnDim: 200, tieEmbeddings: false },
      { arch: 'moe', dim: 64, layers: 2, heads: 4, experts: 4, topK: 2 },
    ];
    for (const c of cases) {
      const m = ModelSchema.parse(c);
      const spec = modelSpec(m, 777);
      const exact = paramSpecsOf(spec).reduce((a, p) => a + p.shape.reduce((x, y) => x * y, 1), 0);
      expect(paramCounts(m, 777).total).toBe(exact);
    }
  });

  it('model.dim 1e6 is refused with the parameter estimate, the limit and how to change it', () => {
    delete process.env.LATHE_MAX_MODEL_GIB;
    const issues = issuesOf({ stage: 'pretrain', data, model: { dim: 1_000_000, heads: 4 } });
    expect(issues.map((i) => i.path)).toEqual(['model', 'model']);
    expect(issues[0]!.message).toBe(
      'its largest tensor has 2.67e+12 values, over the 4294967296 one tensor can hold (the longest typed array); lower model.dim or model.ffnDim',
    );
    expect(issues[1]!.message).toMatch(
      /^about 2\.40e\+13 parameters \(embeddings 1\.02e\+9, attention 8\.00e\+12, MLP 1\.60e\+13\) need at least 349\.3 TiB to train \(16 bytes a parameter: fp32 weights, gradients and two AdamW moments\), over the limit of [\d.]+ GiB \(this machine's memory; set LATHE_MAX_MODEL_GIB to another number of GiB\); lower model\.dim, model\.layers or model\.ffnDim$/,
    );
  });

  it('the limit follows LATHE_MAX_MODEL_GIB; MoE experts count and are named', () => {
    process.env.LATHE_MAX_MODEL_GIB = '0.01';
    expect(modelMemoryLimit().bytes).toBe(0.01 * 2 ** 30);
    // 8 experts of 3·512·1376 plus the trunk: about 1.85e7 parameters, 282 MiB of training state.
    const moe = { stage: 'pretrain', data, model: { arch: 'moe', dim: 512, layers: 1, heads: 8 } };
    expect(issuesOf(moe)).toEqual([
      {
        path: 'model',
        message:
          'about 1.85e+7 parameters (embeddings 524288, attention 1.05e+6, experts 1.69e+7) need at least 282.1 MiB to train (16 bytes a parameter: fp32 weights, gradients and two AdamW moments), over the limit of 10.2 MiB (LATHE_MAX_MODEL_GIB); lower model.dim, model.layers, model.ffnDim or model.experts',
      },
    ]);
    process.env.LATHE_MAX_MODEL_GIB = '1';
    expect(issuesOf(moe)).toEqual([]);
    // A model from a base is the base's: nothing to check here; pipelines check their first stage.
    process.env.LATHE_MAX_MODEL_GIB = '0.01';
    expect(issuesOf({ stage: 'sft', data, from: 'run' })).toEqual([]);
    expect(issuesOf({ stage: 'pipeline', stages: [moe] }).map((i) => i.path)).toEqual(['stages[0].model']);
  });

  it('the default model fits', () => {
    delete process.env.LATHE_MAX_MODEL_GIB;
    expect(issuesOf({ stage: 'pretrain', data })).toEqual([]);
  });
});
