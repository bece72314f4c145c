import { describe, expect, it } from 'vitest';
import { recipePathFields, toClient, toWorker, within, type Relocation } from './paths.js';

const r: Relocation = { clientBaseDir: '/home/ana/project', inputs: '/state/jobs/j1/inputs', dataRoot: '/data' };

describe('worker paths', () => {
  it('within is lexical containment, not a string prefix', () => {
    expect(within('/data', '/data')).toBe(true);
    expect(within('/data', '/data/a/b')).toBe(true);
    expect(within('/data', '/database/x')).toBe(false);
    expect(within('/data', '/data/../etc')).toBe(false);
    expect(within('/data', '/data/..foo')).toBe(true);
  });

  it('maps client files under inputs/ (same layout), others under _abs/, worker: paths to data-root, and back', () => {
    const cases: [string, string][] = [
      ['/home/ana/project/data/a.jsonl', '/state/jobs/j1/inputs/data/a.jsonl'],
      ['/tmp/other/b.txt', '/state/jobs/j1/inputs/_abs/tmp/other/b.txt'],
      ['worker:corpus/c.jsonl', '/data/corpus/c.jsonl'],
      ['data/*.jsonl', 'data/*.jsonl'],
    ];
    for (const [client, worker] of cases) {
      expect(toWorker(client, r, 'x')).toBe(worker);
      expect(toClient(worker, r)).toBe(client);
    }
  });

  it('refuses paths that leave data-root or inputs, naming the field', () => {
    expect(() => toWorker('worker:../etc/passwd', r, 'data.sources[0].path')).toThrow(
      /^data.sources\[0\].path: worker:..\/etc\/passwd leaves the worker's --data-root$/,
    );
    expect(() => toWorker('worker:/etc/passwd', r, 'f')).toThrow(/not absolute/);
    expect(() => toWorker('../../etc/passwd', r, 'eval.suites[0].path')).toThrow(
      /eval.suites\[0\].path: ..\/..\/etc\/passwd leaves the recipe's folder/,
    );
    expect(() => toWorker('worker:x', { ...r, dataRoot: undefined }, 'f')).toThrow(/started without --data-root/);
  });

  it('refuses a NUL byte in any path with a path error naming the field (no file system call sees it)', () => {
    for (const p of ['/home/ana/project/a\u0000b.jsonl', 'worker:corpus/a\u0000', 'data/\u0000.jsonl']) {
      let err: unknown;
      try {
        toWorker(p, r, 'data[0].files[0]');
      } catch (e) {
        err = e;
      }
      expect(err, p).toMatchObject({
        code: 'path',
        message: expect.stringMatching(/^data\[0\]\.files\[0\]: .* contains a NUL byte$/),
      });
    }
  });

  it('finds every path a recipe names, in stages too', () => {
    const recipe = {
      stage: 'pipeline',
      stages: [
        {
          stage: 'pretrain',
          data: { sources: [{ path: 'a.jsonl' }, { path: ['b.jsonl', 'worker:c.jsonl'] }] },
          tokenizer: { path: 'tok.json' },
          eval: { suites: [{ name: 's', path: 's.jsonl', scorer: { module: 'score.mjs' } }] },
        },
        { stage: 'grpo', data: { sources: [{ path: 'p.jsonl' }] }, reward: { module: 'reward.mjs' } },
      ],
    };
    const fields = recipePathFields(recipe);
    expect(fields.map((f) => [f.where, f.kind, f.value])).toEqual([
      ['stages[0].data.sources[0].path', 'data', 'a.jsonl'],
      ['stages[0].data.sources[1].path[0]', 'data', 'b.jsonl'],
      ['stages[0].data.sources[1].path[1]', 'data', 'worker:c.jsonl'],
      ['stages[0].tokenizer.path', 'file', 'tok.json'],
      ['stages[0].eval.suites[0].path', 'file', 's.jsonl'],
      ['stages[0].eval.suites[0].scorer.module', 'scorer', 'score.mjs'],
      ['stages[1].data.sources[0].path', 'data', 'p.jsonl'],
      ['stages[1].reward.module', 'file', 'reward.mjs'],
    ]);
    fields[2]!.set('/data/c.jsonl');
    expect(recipe.stages[0]!.data.sources[1]!.path).toEqual(['b.jsonl', '/data/c.jsonl']);
  });
});
