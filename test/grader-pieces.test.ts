import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parseScore, renderRubric } from '../src/eval/grader.js';
import { readGraderFile } from '../src/recipe/grader-schema.js';
import { validateRecipe } from '../src/runs/recipe.js';
import { scorerOption } from '../src/cli/eval.js';
import { scratch } from './helpers.js';

describe('grader files', () => {
  it('reads a score: the first number (or the pattern group) within [min, max], scaled to [0, 1]', () => {
    const s = (raw: string, score: { pattern?: string; min?: number; max?: number } = {}) =>
      parseScore(raw, { min: 0, max: 1, ...score });
    expect(s('1')).toEqual({ score: 1, answer: 1 });
    expect(s(' 0 because')).toEqual({ score: 0, answer: 0 });
    expect(s('7/10', { min: 1, max: 10 })).toEqual({ score: 6 / 9, answer: 7 });
    expect(s('step 2, score=4', { pattern: 'score=(\\d+)', min: 0, max: 4 })).toEqual({ score: 1, answer: 4 });
    // Out of range, no number, or the pattern missing: no score.
    expect(s('2')).toBeUndefined();
    expect(s('yes')).toBeUndefined();
    expect(s('4', { pattern: 'score=(\\d+)', max: 4 })).toBeUndefined();
  });

  it('fills the rubric from the row; {{ }} are braces; a missing field is named', () => {
    const item = { completion: ' qty', row: { prompt: 'let qty = 1\nemit', n: 3 } };
    expect(renderRubric('{{x}} {prompt}{completion} n={n}', item)).toEqual({ text: '{x} let qty = 1\nemit qty n=3' });
    expect(renderRubric('{completion} vs {expected}', item)).toEqual({ missing: 'expected' });
  });

  it('refuses bad grader files with the file and the field', async () => {
    const dir = await scratch('lathe-grader-file-');
    const put = async (name: string, text: string) => {
      await writeFile(join(dir, name), text);
      return join(dir, name);
    };
    const ok = await put('ok.yaml', 'kind: model\njudge: ../judge\nrubric: "Grade: {completion}"\n');
    expect(readGraderFile(ok).config).toMatchObject({
      judge: '../judge',
      chat: true,
      maxTokens: 8,
      score: { min: 0, max: 1 },
    });
    const noJudge = await put('a.json', JSON.stringify({ kind: 'model', rubric: '{completion}' }));
    expect(() => readGraderFile(noJudge)).toThrow(`${noJudge}: judge:`);
    const badRange = await put(
      'b.json',
      JSON.stringify({ kind: 'model', judge: 'j', rubric: '{completion}', score: { min: 5, max: 1 } }),
    );
    expect(() => readGraderFile(badRange)).toThrow(`${badRange}: score.max: max must be greater than min`);
    const noCompletion = await put('c.json', JSON.stringify({ kind: 'model', judge: 'j', rubric: 'Grade it' }));
    expect(() => readGraderFile(noCompletion)).toThrow(`grader ${noCompletion}: rubric: never shows the output graded`);
    const badPattern = await put(
      'd.json',
      JSON.stringify({ kind: 'model', judge: 'j', rubric: '{completion}', score: { pattern: '(' } }),
    );
    expect(() => readGraderFile(badPattern)).toThrow(`grader ${badPattern}: score.pattern:`);
    const broken = await put('e.json', '{"kind": "model",');
    expect(() => readGraderFile(broken)).toThrow(`grader ${broken}: cannot parse it`);
    expect(() => readGraderFile(join(dir, 'none.json'))).toThrow('no such file');
  });

  it('a reward names one of module and grader; --scorer takes a grader file', () => {
    const grpo = (reward: unknown) =>
      validateRecipe({ stage: 'grpo', from: 'base', data: { sources: [{ path: 'p.jsonl' }] }, reward });
    expect(grpo({ grader: 'grader.json' })).toEqual([]);
    expect(grpo({ module: 'r.mjs', grader: 'grader.json' })).toEqual([
      { path: 'reward', message: 'set only one of module and grader' },
    ]);
    expect(grpo({})).toContainEqual(
      expect.objectContaining({ path: 'reward', message: expect.stringContaining('grader file') }),
    );
    expect(scorerOption('./grader.yaml')).toEqual({ grader: './grader.yaml' });
    expect(scorerOption('./score.mjs#f')).toEqual({ module: './score.mjs', export: 'f' });
  });
});
