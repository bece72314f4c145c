import { describe, expect, it } from 'vitest';
import { LatheError } from '../errors.js';
import { parseRecipeText } from './parse.js';
import { checkRecipe } from './validate.js';

function parseError(text: string, file = 'r.yaml'): string {
  try {
    parseRecipeText(text, file);
  } catch (e) {
    expect(e).toBeInstanceOf(LatheError);
    return (e as Error).message;
  }
  throw new Error('expected a LatheError');
}

describe('parseRecipeText: YAML aliases', () => {
  it('refuses an alias bomb at the file:line of the alias that blows up', () => {
    const lol = `[${Array(9).fill('"lol"').join(', ')}]`;
    const nine = (a: string) => `[${Array(9).fill(`*${a}`).join(', ')}]`;
    const bomb = [
      'stage: pretrain',
      `a: &a ${lol}`,
      `b: &b ${nine('a')}`,
      `c: &c ${nine('b')}`,
      `d: &d ${nine('c')}`,
      `e: &e ${nine('d')}`,
    ].join('\n');
    expect(parseError(bomb)).toBe(
      'r.yaml:5: invalid YAML: alias *c: 2 uses of an anchor that holds 90 alias references make 180 alias copies, over the limit of 100 (aliases nested in aliases grow exponentially, as in a "billion laughs" attack); write the values out',
    );
  });

  it('refuses too many uses of one anchor, a missing anchor and a cycle, each at its line', () => {
    const many = ['a: &x 1', ...Array.from({ length: 101 }, (_, i) => `k${i}: *x`)].join('\n');
    expect(parseError(many)).toBe(
      'r.yaml:102: invalid YAML: alias *x: 101 uses of one anchor, over the limit of 100 (a guard against alias bombs); write the values out',
    );
    expect(parseError('stage: sft\nfrom: *base\n')).toBe(
      'r.yaml:2: invalid YAML: alias *base names no anchor before it',
    );
    expect(parseError('stage: sft\nx: &loop\n  - *loop\n')).toBe(
      'r.yaml:3: invalid YAML: alias *loop is inside the node it names (a cycle); a recipe must be plain data',
    );
  });

  it('still reads ordinary aliases', () => {
    const text = 'train: &t\n  lr: 0.001\n  steps: 5\nstages:\n  - train: *t\n  - train: *t\n';
    expect(parseRecipeText(text, 'p.yaml')).toEqual({
      train: { lr: 0.001, steps: 5 },
      stages: [{ train: { lr: 0.001, steps: 5 } }, { train: { lr: 0.001, steps: 5 } }],
    });
  });
});

describe('YAML .nan and .inf', () => {
  it('are refused naming the field: NaN is not allowed, Infinity is not allowed', () => {
    const raw = parseRecipeText(
      'stage: pretrain\ndata:\n  sources: [{path: x.txt}]\ntrain:\n  lr: .nan\n  steps: .inf\n  warmupSteps: -.inf\n',
      'r.yaml',
    );
    const res = checkRecipe(raw);
    expect(res.ok).toBe(false);
    expect(res.ok ? [] : res.issues).toEqual([
      { path: 'train.steps', message: 'Infinity is not allowed; write a finite number' },
      { path: 'train.lr', message: 'NaN is not allowed; write a finite number' },
      { path: 'train.warmupSteps', message: '-Infinity is not allowed; write a finite number' },
    ]);
  });

  it('are named where a string is expected too', () => {
    const res = checkRecipe({ stage: 'pretrain', data: { sources: [{ path: 'x', name: NaN }] }, seed: Infinity });
    expect(res.ok ? [] : res.issues).toEqual([
      { path: 'seed', message: 'Infinity is not allowed; write a finite number' },
      { path: 'data.sources[0].name', message: 'NaN is not allowed; expected string' },
    ]);
  });
});
