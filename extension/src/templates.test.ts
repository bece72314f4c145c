import { join, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { starterRecipe as coreStarter } from '../../src/cli/init.js';
import { checkRecipe } from '../../src/recipe/validate.js';
import { recipeNotebook, relativePath, starterRecipe, STAGES, DEFAULT_DATA, DEFAULT_REWARD } from './templates';

const repo = resolve(__dirname, '..', '..');

describe('recipe templates', () => {
  it('compute relative paths between workspace folders', () => {
    expect(relativePath('', 'examples/a.jsonl')).toBe('examples/a.jsonl');
    expect(relativePath('notebooks', 'examples/a.jsonl')).toBe('../examples/a.jsonl');
    expect(relativePath('a/b', 'a/c/d')).toBe('../c/d');
  });
  for (const stage of STAGES)
    it(`${stage}: matches \`lathe init\` and validates against the recipe schema`, () => {
      const dir = 'notebooks';
      const opts = stage === 'grpo' || stage === 'online-dpo' ? { reward: DEFAULT_REWARD } : {};
      const ours = starterRecipe({ stage, data: [DEFAULT_DATA[stage]], notebookDir: dir, ...opts });
      const base = join(repo, dir);
      const reward = opts.reward ? join(repo, opts.reward.split('#')[0]!) + '#' + opts.reward.split('#')[1] : undefined;
      const core = coreStarter(stage, [join(repo, DEFAULT_DATA[stage])], base, undefined, reward ? { reward } : {});
      expect(ours).toEqual(JSON.parse(JSON.stringify(core)));
      const checked = checkRecipe(ours);
      expect(checked.ok, JSON.stringify(checked)).toBe(true);
    });
  it('writes a lathe-kernel notebook whose recipe cell calls the stage factory', () => {
    const nb = recipeNotebook({
      stage: 'online-dpo',
      data: ['d/p.jsonl'],
      notebookDir: 'work',
      reward: 'r.ts#score',
    }) as { cells: { source: string }[]; metadata: { kernelspec: { name: string } } };
    expect(nb.metadata.kernelspec.name).toBe('lathe');
    const cell = nb.cells[2]!.source;
    expect(cell).toMatch(/^const r = recipe\.onlineDpo\(\{/);
    expect(cell).toContain('path: "../d/p.jsonl"');
    expect(cell).toContain('module: "../r.ts"');
    expect(cell).not.toContain('stage:');
  });
});
