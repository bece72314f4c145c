import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { RecipeError } from '../errors.js';
import { diff, formatDiff, load, pretrain, schema, validate, type Recipe } from './index.js';
import { lockRecipe, verifyLockId } from './lock.js';

const data = { sources: [{ path: 'train.jsonl' }] };

describe('recipe validation', () => {
  it('lists every error with its path and a fix hint, and no stack', () => {
    const issues = validate({ stage: 'pretrain', data, model: { dim: 256, heads: 6, dimm: 3 }, train: { lr: -1, steps: 'x' } });
    const byPath = Object.fromEntries(issues.map((i) => [i.path, i.message]));
    expect(byPath['model.heads']).toBe('6 does not divide model.dim 256; pick heads from the divisors of 256');
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
    await writeFile(join(dir, 'r.yaml'), 'stage: pretrain\ndata:\n  sources:\n    - path: train.jsonl\nmodel:\n  dim: 64\n');
    const r = (await load(join(dir, 'r.yaml'))) as Recipe;
    expect(r.config.model.dim).toBe(64);
    expect(r.baseDir).toBe(dir);
    await writeFile(join(dir, 'bad.json'), '{\n  "stage": "pretrain",\n  "data": {\n    "sources": [,]\n  }\n}\n');
    await expect(load(join(dir, 'bad.json'))).rejects.toThrow(/bad\.json:4: invalid JSON/);
    await writeFile(join(dir, 'bad.yaml'), 'stage: pretrain\ndata:\n  sources: [\n');
    await expect(load(join(dir, 'bad.yaml'))).rejects.toThrow(/bad\.yaml:\d+: invalid YAML/);
    await writeFile(join(dir, 'wrong.yaml'), 'stage: pretrain\ndata:\n  sources:\n    - path: train.jsonl\nmodel:\n  heads: 5\n');
    await expect(load(join(dir, 'wrong.yaml'))).rejects.toThrow(/wrong\.yaml: recipe has 1 error:\n {2}model\.heads: 5 does not divide model\.dim 128/);
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
    expect(lock.data[0]!.files[0]).toMatchObject({ path: join(dir, 'train.jsonl'), bytes: 17, sha256: expect.stringMatching(/^[0-9a-f]{64}$/) });
    expect(verifyLockId(lock)).toBe(true);
    const again = await lockRecipe(r.config, { baseDir: dir, backend: 'cpu' });
    expect(again.id).toBe(lock.id);
    await writeFile(join(dir, 'train.jsonl'), '{"text":"hello!"}\n');
    const changed = await lockRecipe(r.config, { baseDir: dir, backend: 'cpu' });
    expect(changed.id).not.toBe(lock.id);
    expect((await lockRecipe(r.config, { baseDir: dir, backend: 'wasm' })).id).not.toBe(changed.id);
    expect(verifyLockId({ ...lock, seed: 8 })).toBe(false);
    await expect(lockRecipe(pretrain({ data: { sources: [{ path: 'nope/*.jsonl' }] } }).config, { baseDir: dir, backend: 'cpu' })).rejects.toThrow(
      /data\.sources\[0\]\.path: nope\/\*\.jsonl matches no data files/,
    );
  });
});
