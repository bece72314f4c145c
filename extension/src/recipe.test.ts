import { describe, expect, it } from 'vitest';
import { diffRows, formatValue, sections } from './recipe';

describe('recipe card', () => {
  it('puts scalars under "recipe", objects in their own sections, and marks defaults', () => {
    const s = sections({
      recipe: { name: 'x', stage: 'pretrain', model: { dim: 64 }, data: { sources: [{ path: 'a.txt' }] } },
      resolved: {
        name: 'x',
        stage: 'pretrain',
        seed: 0,
        model: { dim: 64, layers: 2 },
        data: { sources: [{ path: 'a.txt', weight: 1 }] },
      },
    });
    expect(s.map((x) => x.title)).toEqual(['recipe', 'data', 'model']);
    expect(s[0]!.rows.map((r) => [r.path, r.default])).toEqual([
      ['stage', false],
      ['name', false],
      ['seed', true],
    ]);
    expect(s[2]!.rows).toEqual([
      { path: 'dim', value: '64', default: false },
      { path: 'layers', value: '2', default: true },
    ]);
    expect(s[1]!.rows.find((r) => r.path === 'sources[0].weight')!.default).toBe(true);
  });
  it('formats small numbers in exponent form', () => {
    expect(formatValue(0.0003)).toBe('3.00e-4');
    expect(formatValue(0.003)).toBe('0.003');
    expect(formatValue(['\n'])).toBe('["\\n"]');
  });
  it('groups diff rows by section in recipe order, with before and after', () => {
    const rows = diffRows([
      { path: 'train.lr', kind: 'changed', before: 0.001, after: 0.003 },
      { path: 'model.arch', kind: 'changed', before: 'dense', after: 'moe' },
      { path: 'model.experts', kind: 'added', after: 8 },
      { path: 'eval.every', kind: 'removed', before: 50 },
    ]);
    expect(rows.map((r) => [r.section, r.path, r.kind, r.before, r.after])).toEqual([
      ['model', 'model.arch', 'changed', 'dense', 'moe'],
      ['model', 'model.experts', 'added', '', '8'],
      ['train', 'train.lr', 'changed', '0.001', '0.003'],
      ['eval', 'eval.every', 'removed', '50', ''],
    ]);
  });
});
