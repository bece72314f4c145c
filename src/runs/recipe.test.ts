import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { RecipeError } from '../errors.js';
import { diff, formatDiff, load, pretrain, schema, validate, type Recipe } from './recipe.js';
import { lockRecipe, verifyLockId } from '../recipe/lock.js';

const data = { sources: [{ path: 'train.jsonl' }] };

describe('recipe validation', () => {
  it('lists every error with its path and a fix hint, and no stack', () => {
    const issues = validate({
      stage: 'pretrain',
      data,
      model: { dim: 256, heads: 6, dimm: 3 },
      train: { lr: -1, steps: 'x' },
    });
    const byPath = Object.fromEntries(issues.map((i) => [i.path, i.message]));
    expect(byPath['model.heads']).toBe(
      '6 does not divide model.dim 256; pick heads from the divisors of 256, or set model.headDim',
    );
    expect(byPath['model.dimm']).toMatch(/unknown field; did you mean "dim"\?/);
    expect(byPath['train.lr']).toMatch(/must be > 0, got -1/);
    expect(byPath['train.steps']).toMatch(/expected number, got "x"/);
    expect(issues.length).toBe(4);
    for (const i of issues) expect(i.message).not.toMatch(/\bat .*\.ts:\d+/);
  });

  it('names a missing stage and unknown stage', () => {
    expect(validate({ data })[0]).toMatchObject({ path: 'stage' });
    expect(validate({ stage: 'finetune', data })[0]!.message).toMatch(/must be one of "pretrain".*"finetune"/);
    expect(validate({ stage: 'pretrain' })).toEqual([{ path: 'data', message: 'is required (expected object)' }]);
  });

  it('fills every default and accepts snake_case keys', () => {
    const r = pretrain({ data, model: { dim: 64, heads: 4 }, train: { fim_rate: 0.5 } } as never);
    expect(r.config.train.fimRate).toBe(0.5);
    expect(r.config.model.kvHeads).toBeUndefined();
    expect(r.config.model.layers).toBe(2);
    expect(r.config.data.clean.pii.email).toBe(true);
    expect(r.config.data.sources[0]!.weight).toBe(1);
    expect(() => pretrain({ data, model: { heads: 3 } })).toThrow(RecipeError);
  });

  it('exposes a JSON Schema that documents fields', () => {
    const s = schema() as { oneOf?: unknown[]; anyOf?: unknown[] };
    const text = JSON.stringify(s);
    expect(text).toContain('"$schema"');
    expect(text).toContain('Hidden size.');
    expect(text).toContain('"additionalProperties":false');
  });

  it('diffs two recipes field by field, defaults included', () => {
    const a = pretrain({ data, model: { dim: 128 } });
    const b = pretrain({ data: { sources: [{ path: 'train.jsonl', weight: 2 }] }, model: { dim: 256, heads: 4 } });
    const d = diff(a, b);
    expect(d).toEqual([
      { path: 'data.sources[0].weight', kind: 'changed', before: 1, after: 2 },
      { path: 'model.dim', kind: 'changed', before: 128, after: 256 },
    ]);
    expect(formatDiff(d)).toBe('~ data.sources[0].weight: 1 → 2\n~ model.dim: 128 → 256');
    expect(diff(a, a)).toEqual([]);
  });
});

describe('recipe files and locks', () => {
  it('loads YAML and JSON, reporting syntax errors at file:line', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'lathe-recipe-'));
    await writeFile(join(dir, 'train.jsonl'), '{"text":"hello"}\n');
    await writeFile(
      join(dir, 'r.yaml'),
      'stage: pretrain\ndata:\n  sources:\n    - path: train.jsonl\nmodel:\n  dim: 64\n',
    );
    const r = (await load(join(dir, 'r.yaml'))) as Recipe;
    expect(r.config.model.dim).toBe(64);
    expect(r.baseDir).toBe(dir);
    await writeFile(join(dir, 'bad.json'), '{\n  "stage": "pretrain",\n  "data": {\n    "sources": [,]\n  }\n}\n');
    await expect(load(join(dir, 'bad.json'))).rejects.toThrow(/bad\.json:4: invalid JSON/);
    await writeFile(join(dir, 'bad.yaml'), 'stage: pretrain\ndata:\n  sources: [\n');
    await expect(load(join(dir, 'bad.yaml'))).rejects.toThrow(/bad\.yaml:\d+: invalid YAML/);
    await writeFile(
      join(dir, 'wrong.yaml'),
      'stage: pretrain\ndata:\n  sources:\n    - path: train.jsonl\nmodel:\n  heads: 5\n',
    );
    await expect(load(join(dir, 'wrong.yaml'))).rejects.toThrow(
      /wrong\.yaml: recipe has 1 error:\n {2}model\.heads: 5 does not divide model\.dim 128/,
    );
  });

  it('locks defaults, data hashes, version, backend and seed; the hash is the identity', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'lathe-lock-'));
    await writeFile(join(dir, 'train.jsonl'), '{"text":"hello"}\n');
    const r = pretrain({ data, seed: 7 }, { baseDir: dir });
    const lock = await lockRecipe(r.config, { baseDir: dir, backend: 'cpu' });
    expect(lock.seed).toBe(7);
    expect(lock.backend).toBe('cpu');
    expect(lock.lathe).toMatch(/^\d+\.\d+\.\d+/);
    expect(lock.recipe.train.steps).toBe(200);
    expect(lock.data[0]!.files[0]).toMatchObject({
      path: join(dir, 'train.jsonl'),
      bytes: 17,
      sha256: expect.stringMatching(/^[0-9a-f]{64}$/),
    });
    expect(verifyLockId(lock)).toBe(true);
    const again = await lockRecipe(r.config, { baseDir: dir, backend: 'cpu' });
    expect(again.id).toBe(lock.id);
    await writeFile(join(dir, 'train.jsonl'), '{"text":"hello!"}\n');
    const changed = await lockRecipe(r.config, { baseDir: dir, backend: 'cpu' });
    expect(changed.id).not.toBe(lock.id);
    expect((await lockRecipe(r.config, { baseDir: dir, backend: 'wasm' })).id).not.toBe(changed.id);
    expect(verifyLockId({ ...lock, seed: 8 })).toBe(false);
    await expect(
      lockRecipe(pretrain({ data: { sources: [{ path: 'nope/*.jsonl' }] } }).config, { baseDir: dir, backend: 'cpu' }),
    ).rejects.toThrow(/data\.sources\[0\]\.path: nope\/\*\.jsonl matches no data files/);
  });
});

describe('post-training recipes', () => {
  const rows = { sources: [{ path: 'rows.jsonl' }] };
  const reward = { module: 'reward.mjs' };

  it('has one typed, defaulted config per stage (TRL style) and factories for each', async () => {
    const { sft, dpo, onlineDpo, grpo, pipeline } = await import('./recipe.js');
    const s = sft({ data: rows });
    expect(s.config.train).toMatchObject({ steps: 100, packing: true, assistantOnly: true, lr: 1e-3 });
    expect(s.config.data).toMatchObject({ onError: 'fail', valFraction: 0.1, dedupe: true });
    expect(dpo({ data: rows, train: { label_smoothing: 0.1 } as never }).config.train).toMatchObject({
      beta: 0.1,
      labelSmoothing: 0.1,
    });
    expect(onlineDpo({ data: rows, judge: { reward } }).config.train).toMatchObject({
      samplesPerPrompt: 4,
      maxNewTokens: 32,
      temperature: 1,
      stop: [],
    });
    const g = grpo({ data: rows, reward });
    expect(g.config.train).toMatchObject({
      groupSize: 8,
      innerSteps: 2,
      clipEpsilon: 0.2,
      beta: 0.04,
      scaleRewards: true,
    });
    expect(g.config.reward).toEqual({
      module: 'reward.mjs',
      export: 'default',
      timeoutMs: 5000,
      loadTimeoutMs: 30_000,
      memoryMb: 1024,
      network: false,
      onError: 'skip',
      maxErrorRate: 0.5,
    });
    const p = pipeline([pretrain({ data }), s, g]);
    expect(p.config.stages.map((x) => x.stage)).toEqual(['pretrain', 'sft', 'grpo']);
    expect(p.config.train.steps).toBe(200 + 100 + 50);
    const text = JSON.stringify(schema());
    for (const doc of [
      'Group relative policy optimisation',
      'Completions sampled per prompt',
      'Strength of the implicit KL constraint',
      'Compute the loss on assistant tokens only',
      'Several stages in order',
    ])
      expect(text).toContain(doc);
  });

  it('reports cross-field errors with fixes, in stages and in pipelines', () => {
    const byPath = (xs: { path: string; message: string }[]) => Object.fromEntries(xs.map((i) => [i.path, i.message]));
    expect(
      byPath(validate({ stage: 'grpo', data: rows, reward: { module: 'reward.py' }, train: { warmupSteps: 60 } })),
    ).toEqual({
      'reward.module': '"reward.py" is not a JavaScript or TypeScript module; name a .js, .mjs, .cjs, .ts or .mts file',
      'train.warmupSteps': '60 exceeds train.steps 50; lower it or raise steps',
    });
    expect(validate({ stage: 'grpo', data: rows })).toEqual([
      { path: 'reward', message: 'is required (expected object)' },
    ]);
    expect(byPath(validate({ stage: 'online-dpo', data: rows, judge: {} }))).toEqual({
      judge: 'set judge.reward ({"module": "reward.mjs"}) or judge.model (a reward-model run directory)',
    });
    expect(byPath(validate({ stage: 'online-dpo', data: rows, judge: { reward, model: 'runs/rm' } }))).toEqual({
      judge: 'set only one of judge.reward and judge.model',
    });
    expect(byPath(validate({ stage: 'sft', from: 'runs/base', model: { dim: 64 }, data: rows }))).toEqual({
      model: 'comes from the base model named by from; remove model, or remove from to train a fresh model',
    });
    expect(byPath(validate({ stage: 'grpo', data: rows, reward, model: { context: 32 } }))).toEqual({
      'train.maxNewTokens': '32 leaves no room for the prompt in model.context 32; lower it',
    });
    const nested = byPath(
      validate({
        stage: 'pipeline',
        stages: [
          { stage: 'pretrain', data },
          { stage: 'sft', data: rows, train: { lrr: 1 } },
          { stage: 'rlhf', data: rows },
        ],
      }),
    );
    expect(nested['stages[1].train.lrr']).toBe('unknown field; did you mean "lr"?');
    expect(nested['stages[2].stage']).toBe('must be one of "pretrain", "sft", "dpo", "online-dpo", "grpo", got "rlhf"');
    // A pipeline from a model may open with continued pre-training, which keeps the base's architecture.
    expect(byPath(validate({ stage: 'pipeline', from: 'runs/x', stages: [{ stage: 'pretrain', data }] }))).toEqual({});
    expect(
      byPath(
        validate({ stage: 'pipeline', from: 'runs/x', stages: [{ stage: 'pretrain', data, model: { dim: 64 } }] }),
      ),
    ).toEqual({
      'stages[0].model': 'comes from the base model named by from; remove model, or remove from to train a fresh model',
    });
    expect(validate({ stage: 'pipeline', stages: [] })).toEqual([
      { path: 'stages', message: 'add at least one stage' },
    ]);
  });

  it('loads pipeline files; a lock pins the reward module and the base model', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'lathe-post-recipe-'));
    await writeFile(join(dir, 'rows.jsonl'), '{"prompt":"p"}\n');
    await writeFile(join(dir, 'train.jsonl'), '{"text":"hello"}\n');
    await writeFile(join(dir, 'reward.mjs'), 'export default () => 1;\n');
    await writeFile(
      join(dir, 'p.yaml'),
      'stage: pipeline\nstages:\n  - stage: pretrain\n    data: {sources: [{path: train.jsonl}]}\n  - stage: grpo\n    data: {sources: [{path: rows.jsonl}]}\n    reward: {module: reward.mjs}\n',
    );
    const p = await load(join(dir, 'p.yaml'));
    expect(p.stage).toBe('pipeline');
    const lock = await p.lock({ backend: 'cpu', steps: 3 });
    expect('stages' in lock && lock.stages[1]!.reward).toMatchObject({
      path: join(dir, 'reward.mjs'),
      export: 'default',
      sha256: expect.stringMatching(/^[0-9a-f]{64}$/),
    });
    expect(lock.recipe.train.steps).toBe(6);
    const { grpo } = await import('./recipe.js');
    await expect(
      grpo({ data: rows, reward: { module: 'missing.mjs' } }, { baseDir: dir }).lock({ backend: 'cpu' }),
    ).rejects.toThrow(/reward\.module: missing\.mjs does not exist/);
    await expect(
      grpo({ from: 'nowhere', data: rows, reward }, { baseDir: dir }).lock({ backend: 'cpu' }),
    ).rejects.toThrow(/^from: nowhere does not exist/);
    // The bundled example pipeline locks: its data and the Tally reward module resolve.
    const example = await load(fileURLToPath(new URL('../../examples/recipes/tally-pipeline.json', import.meta.url)));
    const exLock = await example.lock({ backend: 'cpu' });
    expect('stages' in exLock && exLock.stages.map((s) => s.recipe.stage)).toEqual(['pretrain', 'sft', 'dpo', 'grpo']);
  });
});
