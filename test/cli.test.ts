import { existsSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { lathe, scratch, tallySlice, tinyRecipe } from './helpers.js';

describe('lathe CLI', () => {
  it('every verb has --help', () => {
    for (const verb of [
      ['init'],
      ['validate'],
      ['recipe', 'schema'],
      ['data', 'inspect'],
      ['train'],
      ['resume'],
      ['reproduce'],
      ['generate'],
      ['eval'],
      ['compare'],
      ['export'],
    ]) {
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
    await writeFile(
      join(dir, 'bad.json'),
      JSON.stringify({ ...tinyRecipe(data), model: { dim: 256, heads: 6 }, train: { lr: 'fast' } }),
    );
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
    await writeFile(
      join(dir, 'broken.json'),
      JSON.stringify({
        ...tinyRecipe(join(dir, 'broken.jsonl')),
        data: { sources: [{ path: 'broken.jsonl' }], onError: 'fail' },
      }),
    );
    const broken = lathe(['train', join(dir, 'broken.json'), '--out', join(dir, 'broken-run')]);
    expect(broken.status).toBe(2);
    expect(broken.stderr).toMatch(/broken\.jsonl:2: invalid JSON/);
  });

  it('validate names the field or file:line for inputs that used to be internal errors', async () => {
    const dir = await scratch();
    const data = await tallySlice(dir, 20);
    const recipe = tinyRecipe(data);
    await writeFile(join(dir, 'huge.json'), JSON.stringify({ ...recipe, model: { dim: 1e6, heads: 4 } }));
    const huge = lathe(['validate', join(dir, 'huge.json')], { env: { LATHE_MAX_MODEL_GIB: '64' } });
    expect(huge.status).toBe(2);
    expect(huge.stderr).toContain('model: about 2.40e+13 parameters (embeddings 3.20e+8, attention 8.00e+12, MLP');
    expect(huge.stderr).toContain('over the limit of 64.0 GiB (LATHE_MAX_MODEL_GIB); lower model.dim');
    expect(huge.stderr).not.toMatch(/internal error|\n\s+at /);
    const nine = (a: string) => `[${Array(9).fill(`*${a}`).join(', ')}]`;
    const bomb = [
      'stage: pretrain',
      `data: {sources: [{path: ${JSON.stringify(data)}}]}`,
      `x0: &a [${Array(9).fill('"lol"').join(', ')}]`,
      `x1: &b ${nine('a')}`,
      `x2: &c ${nine('b')}`,
      `x3: &d ${nine('c')}`,
    ].join('\n');
    await writeFile(join(dir, 'bomb.yaml'), bomb);
    const b = lathe(['validate', join(dir, 'bomb.yaml')]);
    expect(b.status).toBe(2);
    expect(b.stderr).toContain(`${join(dir, 'bomb.yaml')}:6: invalid YAML: alias *c: 2 uses of an anchor`);
    expect(b.stderr).not.toMatch(/internal error|Excessive alias count/);
    await writeFile(
      join(dir, 'nan.yaml'),
      `stage: pretrain\ndata: {sources: [{path: ${JSON.stringify(data)}}]}\ntrain: {lr: .nan, steps: .inf}\n`,
    );
    const nan = lathe(['validate', join(dir, 'nan.yaml')]);
    expect(nan.status).toBe(2);
    expect(nan.stderr).toContain('train.lr: NaN is not allowed; write a finite number');
    expect(nan.stderr).toContain('train.steps: Infinity is not allowed; write a finite number');
    expect(nan.stderr).not.toContain('null');
  });

  it('recipe schema prints a JSON Schema', () => {
    const r = lathe(['recipe', 'schema']);
    expect(r.status).toBe(0);
    const s = JSON.parse(r.stdout);
    expect(s.$schema).toMatch(/json-schema/);
  });

  it('init writes a recipe that validates; data inspect reports sources, duplicates, PII and rejected lines', async () => {
    const dir = await scratch();
    const lines = [
      '{"text":"call alice@example.com about the 1.2 release"}',
      '{"text":"dup line here"}',
      '{"text":"dup line here"}',
      '{"txt":"wrong field"}',
      '{"text": "card 4111 1111 1111 1111 ok"}',
    ];
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
    expect(lathe(['init', 'pretrain', '--data', join(dir, 'nope.jsonl'), '--out', join(dir, 'r2.json')]).status).toBe(
      2,
    );
  });

  it('train, resume after --stop-after, reproduce (0 when identical, 1 with the step when not), generate', async () => {
    const dir = await scratch();
    const data = await tallySlice(dir, 400);
    await writeFile(
      join(dir, 'r.json'),
      JSON.stringify(tinyRecipe(data, { train: { steps: 12, batchSize: 4, warmupSteps: 2, checkpointEvery: 4 } })),
    );
    const run = join(dir, 'run');
    const t = lathe(['train', join(dir, 'r.json'), '--out', run, '--stop-after', '6']);
    expect(t.status, t.stderr).toBe(0);
    expect(t.stdout).toMatch(/interrupted at step 6\/12/);
    expect(existsSync(join(run, 'checkpoints', '6', 'model.safetensors'))).toBe(true);
    const r = lathe(['resume', run, '--json']);
    expect(r.status, r.stderr).toBe(0);
    const lines = r.stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l));
    expect(lines.filter((l) => l.step !== undefined).map((l) => l.step)).toEqual([
      1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,
    ]);
    expect(lines.at(-1).summary.status).toBe('completed');
    for (const f of ['recipe.lock.json', 'metrics.jsonl', 'events.jsonl', 'summary.json', 'checkpoints/12/state.json'])
      expect(existsSync(join(run, f)), f).toBe(true);

    const same = lathe(['reproduce', run, '--out', join(dir, 'rep1')]);
    expect(same.status, same.stdout + same.stderr).toBe(0);
    const metrics = (await readFile(join(run, 'metrics.jsonl'), 'utf8'))
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l));
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

  it('init writes runnable recipes for every stage (--from a run, --reward module#export); train, inspect and bad input exit cleanly', async () => {
    const dir = await scratch();
    const data = await tallySlice(dir, 300);
    await writeFile(
      join(dir, 'base.json'),
      JSON.stringify(
        tinyRecipe(data, { backend: 'wasm', train: { steps: 6, batchSize: 4, warmupSteps: 1, checkpointEvery: 0 } }),
      ),
    );
    const base = join(dir, 'base');
    expect(lathe(['train', join(dir, 'base.json'), '--out', base]).status).toBe(0);
    const chat = [
      '{"messages":[{"role":"user","content":"hi"},{"role":"assistant","content":"let px = 1"}]}',
      '{"messages":[{"role":"assistant","content":"out of order"}]}',
    ];
    for (let i = 0; i < 20; i++)
      chat.push(
        JSON.stringify({
          messages: [
            { role: 'user', content: `q${i}` },
            { role: 'assistant', content: `emit px${i}` },
          ],
        }),
      );
    await writeFile(join(dir, 'chat.jsonl'), chat.join('\n') + '\n');
    const prompts = Array.from({ length: 20 }, (_, i) =>
      JSON.stringify({ prompt: `let px = ${i}\nemit`, expected: String(i) }),
    );
    await writeFile(join(dir, 'prompts.jsonl'), prompts.join('\n') + '\n');
    await writeFile(
      join(dir, 'reward.mjs'),
      'export const score = (completion, example) => (completion.trim() === "px" ? 1 : 0);\n',
    );

    // sft --from a run: the model comes from it, so the recipe has no model section.
    const i1 = lathe([
      'init',
      'sft',
      '--data',
      join(dir, 'chat.jsonl'),
      '--from',
      base,
      '--out',
      join(dir, 'sft.json'),
    ]);
    expect(i1.status, i1.stderr).toBe(0);
    const sftRecipe = JSON.parse(await readFile(join(dir, 'sft.json'), 'utf8'));
    expect(sftRecipe).toMatchObject({
      stage: 'sft',
      from: 'base',
      data: { sources: [{ path: 'chat.jsonl' }], onError: 'skip' },
    });
    expect(sftRecipe.model).toBeUndefined();
    expect(lathe(['validate', join(dir, 'sft.json')]).status).toBe(0);
    const inspect = lathe(['data', 'inspect', join(dir, 'sft.json')]);
    expect(inspect.status, inspect.stderr).toBe(0);
    expect(inspect.stdout).toMatch(/chat\.jsonl:2: messages\[0\]\.role is "assistant" where "user" is expected/);
    const t = lathe([
      'train',
      join(dir, 'sft.json'),
      '--steps',
      '2',
      '--backend',
      'wasm',
      '--out',
      join(dir, 'sft-run'),
      '--json',
    ]);
    expect(t.status, t.stderr).toBe(0);
    const lines = t.stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l));
    expect(lines.filter((l) => l.stage === 'sft').map((l) => l.step)).toEqual([1, 2]);
    expect(lines.at(-1).summary.status).toBe('completed');

    // grpo with module#export; online-dpo with a judge model; every init validates.
    expect(
      lathe([
        'init',
        'grpo',
        '--data',
        join(dir, 'prompts.jsonl'),
        '--from',
        base,
        '--reward',
        `${join(dir, 'reward.mjs')}#score`,
        '--out',
        join(dir, 'grpo.json'),
      ]).status,
    ).toBe(0);
    expect(JSON.parse(await readFile(join(dir, 'grpo.json'), 'utf8')).reward).toEqual({
      module: 'reward.mjs',
      export: 'score',
    });
    expect(lathe(['validate', join(dir, 'grpo.json')]).status).toBe(0);
    const g = lathe([
      'train',
      join(dir, 'grpo.json'),
      '--steps',
      '1',
      '--backend',
      'wasm',
      '--out',
      join(dir, 'grpo-run'),
    ]);
    expect(g.status, g.stderr).toBe(0);
    expect(
      lathe([
        'init',
        'online-dpo',
        '--data',
        join(dir, 'prompts.jsonl'),
        '--from',
        base,
        '--judge-model',
        base,
        '--out',
        join(dir, 'odpo.json'),
      ]).status,
    ).toBe(0);
    expect(lathe(['validate', join(dir, 'odpo.json')]).status).toBe(0);
    expect(lathe(['init', 'dpo', '--data', join(dir, 'prompts.jsonl'), '--out', join(dir, 'dpo.json')]).status).toBe(0);
    expect(JSON.parse(await readFile(join(dir, 'dpo.json'), 'utf8')).model).toMatchObject({ dim: 128 });

    // Bad input exits 2 with the reason.
    const noReward = lathe(['init', 'grpo', '--data', join(dir, 'prompts.jsonl'), '--out', join(dir, 'x.json')]);
    expect(noReward.status).toBe(2);
    expect(noReward.stderr).toMatch(/init grpo: pass --reward <module>\[#export\]/);
    const noBase = lathe([
      'init',
      'sft',
      '--data',
      join(dir, 'chat.jsonl'),
      '--from',
      join(dir, 'nope'),
      '--out',
      join(dir, 'y.json'),
    ]);
    expect(noBase.status).toBe(2);
    expect(noBase.stderr).toMatch(/--from .*nope: not a directory/);
    await writeFile(
      join(dir, 'bad-grpo.json'),
      JSON.stringify({
        ...JSON.parse(await readFile(join(dir, 'grpo.json'), 'utf8')),
        reward: { module: 'missing.mjs' },
      }),
    );
    const missing = lathe(['validate', join(dir, 'bad-grpo.json')]);
    expect(missing.status).toBe(2);
    expect(missing.stderr).toMatch(/reward\.module: missing\.mjs does not exist/);
    // A reward that always throws: the run stops with a checkpoint and says why (exit 1), no stack.
    await writeFile(join(dir, 'reward.mjs'), 'export const score = () => { throw new Error("no answer"); };\n');
    const broken = lathe([
      'train',
      join(dir, 'grpo.json'),
      '--steps',
      '2',
      '--backend',
      'wasm',
      '--out',
      join(dir, 'grpo-broken'),
    ]);
    expect(broken.status).toBe(1);
    expect(broken.stderr).toMatch(
      /error: reward\.module .*reward\.mjs#score: \d+ of \d+ completions failed at step 1 .*threw Error: no answer .*stopped with a checkpoint at step 0/,
    );
    expect(broken.stderr).not.toMatch(/\n\s+at /);
    expect(existsSync(join(dir, 'grpo-broken', 'checkpoints', '0', 'state.json'))).toBe(true);
  });
});
