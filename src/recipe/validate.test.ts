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

describe('train.lora', () => {
  it('resolves defaults (PEFT-like: rank 8, alpha 16, q_proj and v_proj, full-precision base) on every stage', () => {
    for (const stage of ['pretrain', 'sft', 'dpo', 'online-dpo', 'grpo']) {
      const extra =
        stage === 'grpo'
          ? { reward: { module: 'r.mjs' } }
          : stage === 'online-dpo'
            ? { judge: { reward: { module: 'r.mjs' } } }
            : {};
      const r = checkRecipe({ stage, data, ...extra, train: { lora: {} } });
      expect(r.ok, JSON.stringify(r)).toBe(true);
      expect((r as { recipe: { train: { lora: unknown } } }).recipe.train.lora).toEqual({
        rank: 8,
        alpha: 16,
        dropout: 0,
        targets: ['q_proj', 'v_proj'],
        quantize: 'none',
      });
    }
  });

  it('refuses bad fields with errors that name them', () => {
    const issues = issuesOf({
      stage: 'sft',
      data,
      engine: 'tfjs',
      model: { arch: 'dense' },
      train: {
        lora: { rank: 0, alpha: -1, dropout: 1, targets: ['q_proj', 'w1', 'q_proj', 'qkv'], quantize: 'nf4', rnak: 4 },
      },
    });
    const at = Object.fromEntries(issues.map((i) => [i.path, i.message]));
    expect(at['train.lora.rank']).toBe('must be >= 1, got 0');
    expect(at['train.lora.alpha']).toBe('must be > 0, got -1');
    expect(at['train.lora.dropout']).toBe('must be < 1, got 1');
    expect(at['train.lora.targets[3]']).toMatch(/^must be one of "q_proj", "k_proj", .*"w3", got "qkv"$/);
    expect(at['train.lora.rnak']).toBe('unknown field; did you mean "rank"?');
    expect(at['train.lora.targets[1]']).toBe(
      '"w1" is not a projection of a dense model; choose from q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj',
    );
    expect(at['train.lora.targets[2]']).toBe('"q_proj" is listed twice');
    expect(at['train.lora.quantize']).toBe(
      'nf4 runs on the torch engine on CUDA (bitsandbytes), not on the tfjs engine; set engine "torch" and device "cuda", or use int8',
    );
    expect(issuesOf({ stage: 'sft', data, train: { lora: { targets: [] } } })).toEqual([
      { path: 'train.lora.targets', message: 'add at least one projection, e.g. ["q_proj", "v_proj"]' },
    ]);
    // LoRA trains in one process (the torch engine's ranks replicate or shard whole models).
    expect(
      issuesOf({ stage: 'sft', data, from: 'base', engine: 'torch', resources: { gpus: 2 }, train: { lora: {} } }),
    ).toEqual([
      {
        path: 'train.lora',
        message:
          'trains in one process, but resources ask for 2 ranks; drop resources.gpus/nodes, or drop train.lora to train all weights on several ranks',
      },
    ]);
    // The base's architecture decides when the model comes from `from`: checked when the run starts.
    expect(issuesOf({ stage: 'sft', data, from: 'base', train: { lora: { targets: ['w1'] } } })).toEqual([]);
    expect(
      issuesOf({ stage: 'sft', data, model: { arch: 'moe' }, train: { lora: { targets: ['w1', 'q_proj'] } } }),
    ).toEqual([]);
  });
});
