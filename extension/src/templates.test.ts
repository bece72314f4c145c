import { join, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { starterRecipe as initStarter } from '../../src/cli/init.js';
import { STAGES as SCHEMA_STAGES } from '../../src/recipe/schema.js';
import { STARTER_LORA, STARTER_MODEL, STARTER_PRESETS } from '../../src/recipe/starters.js';
import { checkRecipe } from '../../src/recipe/validate.js';
import {
  DEFAULT_DATA,
  DEFAULT_REWARD,
  OPEN_MODEL_STAGES,
  openModelLabel,
  recipeNotebook,
  relativePath,
  STAGES,
  starterRecipe,
} from './templates';

const repo = resolve(__dirname, '..', '..');

describe('recipe templates', () => {
  it('compute relative paths between workspace folders', () => {
    expect(relativePath('', 'examples/a.jsonl')).toBe('examples/a.jsonl');
    expect(relativePath('notebooks', 'examples/a.jsonl')).toBe('../examples/a.jsonl');
    expect(relativePath('a/b', 'a/c/d')).toBe('../c/d');
  });
  it('offer every stage of the recipe schema, in its order', () => {
    expect(STAGES).toEqual(SCHEMA_STAGES);
  });
  for (const stage of STAGES)
    it(`${stage}: reads the same preset as \`lathe init\`, and validates against the recipe schema`, () => {
      const dir = 'notebooks';
      const opts = stage === 'grpo' || stage === 'online-dpo' ? { reward: DEFAULT_REWARD } : {};
      const ours = starterRecipe({ stage, data: [DEFAULT_DATA[stage]], notebookDir: dir, ...opts });
      const base = join(repo, dir);
      const reward = opts.reward ? join(repo, opts.reward.split('#')[0]!) + '#' + opts.reward.split('#')[1] : undefined;
      const init = initStarter(stage, [join(repo, DEFAULT_DATA[stage])], base, undefined, reward ? { reward } : {});
      expect(ours).toEqual(JSON.parse(JSON.stringify(init)));
      // Both are the preset (src/recipe/starters.ts), filled in: schedule, evaluation and model come from it.
      const preset = STARTER_PRESETS[stage];
      for (const r of [ours, init]) {
        expect(r.train).toEqual(preset.train);
        expect(r.eval).toEqual(preset.eval);
        expect(r).toMatchObject({ data: preset.data, ...STARTER_MODEL });
      }
      const checked = checkRecipe(ours);
      expect(checked.ok, JSON.stringify(checked)).toBe(true);
    });
  it('start post-training from a base model when given one, as `lathe init --from` does', () => {
    const ours = starterRecipe({ stage: 'sft', data: ['d/sft.jsonl'], notebookDir: 'work', from: 'runs/base' });
    const init = initStarter('sft', [join(repo, 'd/sft.jsonl')], join(repo, 'work'), undefined, {
      from: join(repo, 'runs/base'),
    });
    expect(ours).toEqual(init);
    expect(ours).toMatchObject({ from: '../runs/base' });
    expect(ours).not.toHaveProperty('model');
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

describe('templates from an open model', () => {
  it('offer every post-training stage with LoRA on the base, as `lathe init --from --lora` does', () => {
    expect(OPEN_MODEL_STAGES).toEqual(['sft', 'dpo', 'online-dpo', 'grpo']);
    expect(openModelLabel('sft')).toBe('SFT from an open model (LoRA)');
    for (const stage of OPEN_MODEL_STAGES) {
      const reward = stage === 'grpo' || stage === 'online-dpo' ? { reward: DEFAULT_REWARD } : {};
      const ours = starterRecipe({
        stage,
        data: [DEFAULT_DATA[stage]],
        notebookDir: 'nb',
        from: 'models/qwen',
        lora: true,
        ...reward,
      });
      const init = initStarter(stage, [join(repo, DEFAULT_DATA[stage])], join(repo, 'nb'), undefined, {
        from: join(repo, 'models/qwen'),
        lora: true,
        ...(reward.reward ? { reward: join(repo, 'examples/tally/reward.ts') + '#programReward' } : {}),
      });
      expect(ours).toEqual(JSON.parse(JSON.stringify(init)));
      expect(ours).toMatchObject({
        from: '../models/qwen',
        train: { lora: STARTER_LORA, lr: 2 * STARTER_PRESETS[stage].train.lr },
      });
      expect(checkRecipe(ours).ok).toBe(true);
    }
  });
  it('writes a notebook that trains the adapters and exports them for PEFT and merged', () => {
    const nb = recipeNotebook({
      stage: 'sft',
      data: ['d/c.jsonl'],
      notebookDir: 'w',
      from: 'models/qwen',
      lora: true,
    }) as {
      cells: { source: string }[];
    };
    expect(nb.cells[0]!.source).toMatch(/^# SFT from an open model \(LoRA\)/);
    expect(nb.cells[1]!.source).toContain("import { recipe, runs, exporter } from 'lathe'");
    expect(nb.cells[2]!.source).toMatch(/lora: \{\n\s+rank: 16/);
    expect(nb.cells.at(-1)!.source).toContain('exporter.exportPeft(run.dir.path');
    expect(nb.cells.at(-1)!.source).toContain('{ merge: true }');
  });
});
