import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { scratch } from '../../test/helpers.js';
import { DataError, LatheError } from '../errors.js';
import {
  builtinScorer,
  compilePattern,
  containsScore,
  exactScore,
  expectedAnswers,
  expectedNumbers,
  firstNumber,
  loadModuleScorer,
  numericScore,
  outcomeOf,
  regexScore,
  withinTolerance,
  type ScoredExample,
} from './scorers.js';

const ex = (row: Record<string, unknown>, extra: Partial<ScoredExample> = {}): ScoredExample => ({
  line: 1,
  prompt: String(row.prompt ?? ''),
  expected: row.expected,
  answers: [],
  row,
  ...extra,
});

describe('built-in scorers', () => {
  it('exact compares trimmed text, any of a list', () => {
    expect(exactScore('  42\n', ['42'])).toBe(1);
    expect(exactScore('42', [' 42 '])).toBe(1);
    expect(exactScore('420', ['42'])).toBe(0);
    expect(exactScore('b', ['a', 'b'])).toBe(1);
    expect(exactScore('', ['a'])).toBe(0);
    expect(exactScore('Paris', ['paris'])).toBe(0);
  });

  it('contains finds the answer anywhere', () => {
    expect(containsScore('the answer is 42.', ['42'])).toBe(1);
    expect(containsScore('the answer is 4 2', ['42'])).toBe(0);
    expect(containsScore('x', ['y', 'x'])).toBe(1);
  });

  it('regex matches unanchored unless anchored; /pattern/flags is accepted', () => {
    expect(regexScore('emit 63.44', [compilePattern('\\d+\\.\\d{2}', 'f', 1)])).toBe(1);
    expect(regexScore('emit 63.4', [compilePattern('^\\d+\\.\\d{2}$', 'f', 1)])).toBe(0);
    expect(regexScore('HELLO', [compilePattern('/hello/i', 'f', 1)])).toBe(1);
    // A g flag would make test() stateful across calls; it is dropped.
    const g = compilePattern('/a/g', 'f', 1);
    expect([regexScore('a', [g]), regexScore('a', [g])]).toEqual([1, 1]);
  });

  it('an invalid regex is a DataError naming file:line', () => {
    expect(() => compilePattern('(unclosed', '/s/suite.jsonl', 7)).toThrow(DataError);
    expect(() => compilePattern('(unclosed', '/s/suite.jsonl', 7)).toThrow(
      /^\/s\/suite\.jsonl:7: invalid regex "\(unclosed"/,
    );
  });

  it('numeric reads the first number and compares within an absolute or relative tolerance', () => {
    expect(firstNumber('about 1,234.5 units')).toBe(1234.5);
    expect(firstNumber('-0.3117\n6')).toBe(-0.3117);
    expect(firstNumber('1e3')).toBe(1000);
    expect(firstNumber('none')).toBeUndefined();
    expect(numericScore('x = 3.1416', [Math.PI], 1e-4)).toBe(1);
    expect(numericScore('x = 3.14', [Math.PI], 1e-4)).toBe(0);
    expect(numericScore('102', [100], { abs: 0, rel: 0.05 })).toBe(1);
    expect(numericScore('106', [100], { abs: 0, rel: 0.05 })).toBe(0);
    expect(numericScore('57096', [57096], 0)).toBe(1);
    expect(numericScore('no number', [1], 1)).toBe(0);
    expect(withinTolerance(0.1 + 0.2, 0.3, 0)).toBe(true);
    expect(withinTolerance(1, 2, { abs: 0.5, rel: 0.1 })).toBe(false);
  });

  it('expected answers accept strings, numbers and lists; others name file:line', () => {
    expect(expectedAnswers('a', 'f', 1, 'expected')).toEqual(['a']);
    expect(expectedAnswers([1, 'b'], 'f', 1, 'expected')).toEqual(['1', 'b']);
    expect(() => expectedAnswers({ a: 1 }, 'f.jsonl', 3, 'expected')).toThrow(
      /^f\.jsonl:3: "expected" must be a string/,
    );
    expect(() => expectedAnswers([], 'f.jsonl', 4, 'answer')).toThrow(/^f\.jsonl:4: "answer" is an empty list/);
    expect(expectedNumbers(['1,000', '2.5'], 'f', 1, 'expected')).toEqual([1000, 2.5]);
    expect(() => expectedNumbers(['abc'], 'f.jsonl', 9, 'expected')).toThrow(
      /^f\.jsonl:9: "expected" must be a number/,
    );
  });

  it('builtinScorer wraps them with the parsed example', async () => {
    expect(await builtinScorer('exact').score(' 7 ', ex({}, { answers: ['7'] }))).toEqual({ score: 1 });
    expect(await builtinScorer('numeric', 0.01).score('7.004', ex({}, { numbers: [7] }))).toEqual({ score: 1 });
  });

  it('outcomeOf maps booleans, flags NaN and non-numbers', () => {
    expect(outcomeOf(true)).toEqual({ score: 1 });
    expect(outcomeOf(0.5)).toEqual({ score: 0.5 });
    expect(outcomeOf(NaN)).toMatchObject({ score: 0, error: 'nan' });
    expect(outcomeOf(Infinity)).toMatchObject({ score: 0, error: 'nan' });
    expect(outcomeOf('1')).toMatchObject({ score: 0, error: 'invalid' });
  });
});

describe('custom module scorers', () => {
  it('run in their own process: sync, async and boolean results; throws, NaN, hangs (async and sync) are counted, not fatal', async () => {
    const dir = await scratch();
    await writeFile(
      join(dir, 'score.mjs'),
      [
        'export default (c, ex) => (c.trim() === ex.expected ? 1 : 0);',
        'export const asyncScore = async (c, ex) => { await new Promise((r) => setTimeout(r, 5)); return c.length / 10; };',
        'export const bool = (c) => c.includes("ok");',
        'export function throws() { throw new Error("checker exploded"); }',
        'export const nan = () => NaN;',
        'export const hangs = () => new Promise(() => {});',
        'export const spins = () => { for (;;) {} };',
        'export const wrongType = () => "1";',
        'export const mutates = (c, ex) => { ex.expected = "changed"; return 1; };',
        'export const sees = (c, ex) => (ex.extra === 42 && ex.prompt === "p" ? 1 : 0);',
      ].join('\n'),
    );
    const row = { prompt: 'p', expected: 'yes', extra: 42 };
    const load = (exp?: string, timeoutMs = 300) =>
      loadModuleScorer({ module: 'score.mjs', export: exp ?? 'default' }, { baseDir: dir, timeoutMs });
    const def = await load();
    expect(def.name).toBe('score.mjs');
    expect(await def.score(' yes ', ex(row))).toEqual({ score: 1 });
    expect(await def.score('no', ex(row))).toEqual({ score: 0 });
    // release() stops the process; the next call starts it again.
    def.release!();
    expect(await def.score('yes', ex(row))).toEqual({ score: 1 });
    await def.close();
    await expect(def.score('yes', ex(row))).rejects.toThrow(/closed/);
    const a = await load('asyncScore');
    expect(a.name).toBe('score.mjs#asyncScore');
    expect(await a.score('12345', ex(row))).toEqual({ score: 0.5 });
    await a.close();
    const b = await load('bool');
    expect((await b.score('ok!', ex(row))).score).toBe(1);
    await b.close();

    const t = await load('throws');
    expect(await t.score('x', ex(row))).toEqual({
      score: 0,
      error: 'threw',
      message: expect.stringMatching(/^Error: checker exploded \(at .*score\.mjs:4:\d+\)$/),
    });
    await t.close();
    const n = await load('nan');
    expect(await n.score('x', ex(row))).toMatchObject({ score: 0, error: 'nan' });
    await n.close();
    const w = await load('wrongType');
    expect(await w.score('x', ex(row))).toMatchObject({ score: 0, error: 'invalid' });
    await w.close();
    const s = await load('sees');
    expect((await s.score('x', ex(row))).score).toBe(1);
    await s.close();

    for (const name of ['hangs', 'spins']) {
      const h = await load(name, 200);
      const t0 = performance.now();
      expect(await h.score('x', ex(row))).toMatchObject({ score: 0, error: 'timeout' });
      expect(performance.now() - t0).toBeLessThan(3000);
      // The process restarts: the next example is scored (and times out) again, not stuck.
      expect(await h.score('y', ex(row))).toMatchObject({ error: 'timeout' });
      await h.close();
    }
    // The scorer gets a copy: mutating it does not change the suite's row.
    const m = await load('mutates');
    await m.score('x', ex(row));
    expect(row.expected).toBe('yes');
    await m.close();
  });

  it('a missing module, a missing export, or a module that fails to import is a clear LatheError', async () => {
    const dir = await scratch();
    await writeFile(join(dir, 'ok.mjs'), 'export const a = () => 1;\nexport const b = 2;\n');
    await writeFile(join(dir, 'broken.mjs'), 'export const a = (;\n');
    await expect(loadModuleScorer({ module: 'nope.mjs', export: 'default' }, { baseDir: dir })).rejects.toThrow(
      /scorer module nope\.mjs: not found/,
    );
    await expect(loadModuleScorer({ module: 'ok.mjs', export: 'default' }, { baseDir: dir })).rejects.toThrow(
      /has no function export "default" \(exports: a, b\)/,
    );
    await expect(loadModuleScorer({ module: 'ok.mjs', export: 'b' }, { baseDir: dir })).rejects.toThrow(LatheError);
    await expect(loadModuleScorer({ module: 'broken.mjs', export: 'a' }, { baseDir: dir })).rejects.toThrow(
      /scorer module broken\.mjs#a: cannot be imported: SyntaxError: Unexpected token/,
    );
  });

  it('resolves relative to the recipe folder, then the suite file folder', async () => {
    const dir = await scratch();
    const suites = join(dir, 'suites');
    await import('node:fs/promises').then((fs) => fs.mkdir(suites));
    await writeFile(join(suites, 'near.mjs'), 'export default () => 1;\n');
    const s = await loadModuleScorer(
      { module: 'near.mjs', export: 'default' },
      { baseDir: dir, suiteFile: join(suites, 'x.jsonl') },
    );
    expect((await s.score('', ex({}))).score).toBe(1);
    await s.close();
  });

  it('TypeScript modules are compiled on load and run in the host like JS ones', async () => {
    const dir = await scratch();
    await writeFile(
      join(dir, 'score.ts'),
      'export function score(c: string, ex: { expected: string }): number {\n  return c === ex.expected ? 1 : 0;\n}\nexport const hangs = (): Promise<number> => new Promise(() => {});\n',
    );
    const s = await loadModuleScorer({ module: 'score.ts', export: 'score' }, { baseDir: dir });
    expect((await s.score('a', ex({ expected: 'a' }))).score).toBe(1);
    const h = await loadModuleScorer({ module: 'score.ts', export: 'hangs' }, { baseDir: dir, timeoutMs: 100 });
    expect(await h.score('a', ex({}))).toMatchObject({ error: 'timeout' });
  });
});
