import { existsSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { lathe, scratch, tallySlice, tinyRecipe } from './helpers.js';

describe('lathe CLI', () => {
  it('every verb has --help', () => {
    for (const verb of [['init'], ['validate'], ['recipe', 'schema'], ['data', 'inspect'], ['train'], ['resume'], ['reproduce'], ['generate'], ['eval'], ['compare'], ['export']]) {
      const r = lathe([...verb, '--help']);
      expect(r.status, verb.join(' ')).toBe(0);
      expect(r.stdout).toMatch(/^Usage: lathe /);
    }
  });

  it('validate exits 0 on a good recipe, 2 with every error on a bad one, never a stack', async () => {
    const dir = await scratch();
    const data = await tallySlice(dir, 50);
    await writeFile(join(dir, 'good.json'), JSON.stringify(tinyRecipe(data)));
    expect(lathe(['validate', join(dir, 'good.json')]).status).toBe(0);
    await writeFile(join(dir, 'bad.json'), JSON.stringify({ ...tinyRecipe(data), model: { dim: 256, heads: 6 }, train: { lr: 'fast' } }));
    const bad = lathe(['validate', join(dir, 'bad.json')]);
    expect(bad.status).toBe(2);
    expect(bad.stderr).toContain('model.heads: 6 does not divide model.dim 256');
    expect(bad.stderr).toContain('train.lr: expected number, got "fast"');
    expect(bad.stderr).not.toMatch(/\n\s+at /);
    await writeFile(join(dir, 'missing.json'), JSON.stringify(tinyRecipe(join(dir, 'nope.jsonl'))));
    const missing = lathe(['validate', join(dir, 'missing.json')]);
    expect(missing.status).toBe(2);
    expect(missing.stderr).toMatch(/data\.sources\[0\]\.path: .*nope\.jsonl does not exist/);
    expect(lathe(['train', join(dir, 'good.json'), '--steps', 'many']).status).toBe(2);
    // Malformed data with onError: fail stops with file:line, exit 2.
    await writeFile(join(dir, 'broken.jsonl'), '{"text":"ok"}\n{"text": "unterminated\n');
    await writeFile(join(dir, 'broken.json'), JSON.stringify({ ...tinyRecipe(join(dir, 'broken.jsonl')), data: { sources: [{ path: 'broken.jsonl' }], onError: 'fail' } }));
    const broken = lathe(['train', join(dir, 'broken.json'), '--out', join(dir, 'broken-run')]);
    expect(broken.status).toBe(2);
    expect(broken.stderr).toMatch(/broken\.jsonl:2: invalid JSON/);
  });

  it('recipe schema prints a JSON Schema', () => {
    const r = lathe(['recipe', 'schema']);
    expect(r.status).toBe(0);
    const s = JSON.parse(r.stdout);
    expect(s.$schema).toMatch(/json-schema/);
  });

  it('init writes a recipe that validates; data inspect reports sources, duplicates, PII and rejected lines', async () => {
    const dir = await scratch();
    const lines = ['{"text":"call alice@example.com about the 1.2 release"}', '{"text":"dup line here"}', '{"text":"dup line here"}', '{"txt":"wrong field"}', '{"text": "card 4111 1111 1111 1111 ok"}'];
    for (let i = 0; i < 40; i++) lines.push(JSON.stringify({ text: `let px${i} = ${i}.5\nemit px${i}` }));
    await writeFile(join(dir, 'mixed.jsonl'), lines.join('\n') + '\n');
    const init = lathe(['init', 'pretrain', '--data', join(dir, 'mixed.jsonl'), '--out', join(dir, 'recipe.json')]);
    expect(init.status, init.stderr).toBe(0);
    const recipe = JSON.parse(await readFile(join(dir, 'recipe.json'), 'utf8'));
    expect(recipe.data.sources[0].path).toBe('mixed.jsonl');
    expect(lathe(['validate', join(dir, 'recipe.json')]).status).toBe(0);
    const inspect = lathe(['data', 'inspect', join(dir, 'recipe.json'), '--json']);
    expect(inspect.status, inspect.stderr).toBe(0);
    const rep = JSON.parse(inspect.stdout);
    expect(rep.clean.exactDuplicates).toBe(1);
    expect(rep.clean.pii.email).toBe(1);
    expect(rep.clean.pii.card).toBe(1);
    expect(rep.rejected).toBe(1);
    expect(rep.rejections[0]).toMatchObject({ file: join(dir, 'mixed.jsonl'), line: 4 });
    expect(rep.sources[0].docs + rep.sources[0].heldOutDocs).toBe(43);
    expect(rep.sources[0].epochs).toBeGreaterThan(1);
    const text = lathe(['data', 'inspect', join(dir, 'recipe.json')]);
    expect(text.stdout).toMatch(/mixed\.jsonl:4: /);
    expect(lathe(['init', 'pretrain', '--data', join(dir, 'nope.jsonl'), '--out', join(dir, 'r2.json')]).status).toBe(2);
  });

  it('train, resume after --stop-after, reproduce (0 when identical, 1 with the step when not), generate', async () => {
    const dir = await scratch();
    const data = await tallySlice(dir, 400);
    await writeFile(join(dir, 'r.json'), JSON.stringify(tinyRecipe(data, { train: { steps: 12, batchSize: 4, warmupSteps: 2, checkpointEvery: 4 } })));
    const run = join(dir, 'run');
    const t = lathe(['train', join(dir, 'r.json'), '--out', run, '--stop-after', '6']);
    expect(t.status, t.stderr).toBe(0);
    expect(t.stdout).toMatch(/interrupted at step 6\/12/);
    expect(existsSync(join(run, 'checkpoints', '6', 'model.safetensors'))).toBe(true);
    const r = lathe(['resume', run, '--json']);
    expect(r.status, r.stderr).toBe(0);
    const lines = r.stdout.trim().split('\n').map((l) => JSON.parse(l));
    expect(lines.filter((l) => l.step !== undefined).map((l) => l.step)).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
    expect(lines.at(-1).summary.status).toBe('completed');
    for (const f of ['recipe.lock.json', 'metrics.jsonl', 'events.jsonl', 'summary.json', 'checkpoints/12/state.json']) expect(existsSync(join(run, f)), f).toBe(true);

    const same = lathe(['reproduce', run, '--out', join(dir, 'rep1')]);
    expect(same.status, same.stdout + same.stderr).toBe(0);
    const metrics = (await readFile(join(run, 'metrics.jsonl'), 'utf8')).trim().split('\n').map((l) => JSON.parse(l));
    metrics[8].loss += 1e-6;
    await writeFile(join(run, 'metrics.jsonl'), metrics.map((m) => JSON.stringify(m)).join('\n') + '\n');
    const diff = lathe(['reproduce', run, '--out', join(dir, 'rep2')]);
    expect(diff.status).toBe(1);
    expect(diff.stdout).toMatch(/diverged at step 9: loss/);

    const g = lathe(['generate', run, '--prompt', 'let ', '--max-tokens', '10', '--seed', '1']);
    expect(g.status, g.stderr).toBe(0);
    const g2 = lathe(['generate', run, '--prompt', 'let ', '--max-tokens', '10', '--seed', '1']);
    expect(g2.stdout).toBe(g.stdout);
  });
});
