import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { scratch } from '../../test/helpers.js';
import { DataError, LatheError } from '../errors.js';
import { parseSuiteConfig, type SuiteInput } from '../recipe/eval-schema.js';
import { loadSuite, splitDocuments } from './suite.js';

async function suiteFile(lines: string[], name = 's.jsonl'): Promise<{ dir: string; path: string }> {
  const dir = await scratch();
  const path = join(dir, name);
  await writeFile(path, lines.join('\n') + '\n');
  return { dir, path };
}

const cfg = (over: Partial<SuiteInput> & { path: string }) => parseSuiteConfig({ name: 's', ...over });

describe('loadSuite', () => {
  it('streams rows in order with their lines; blank lines are skipped; limit keeps the first n', async () => {
    const { dir } = await suiteFile([
      '{"prompt":"a","expected":"1"}',
      '',
      '{"prompt":"b","expected":2,"id":7}',
      '{"prompt":"c","expected":["x","y"]}',
    ]);
    const s = await loadSuite(cfg({ path: 's.jsonl' }), dir);
    expect(s.kind).toBe('generation');
    expect(s.examples.map((e) => [e.line, e.prompt, e.answers])).toEqual([
      [1, 'a', ['1']],
      [3, 'b', ['2']],
      [4, 'c', ['x', 'y']],
    ]);
    expect(s.examples[1]!.row).toEqual({ prompt: 'b', expected: 2, id: 7 });
    expect(s.scorer!.name).toBe('exact');
    const two = await loadSuite(cfg({ path: 's.jsonl', limit: 2 }), dir);
    expect(two.examples.map((e) => e.prompt)).toEqual(['a', 'b']);
  });

  it('bad lines name file:line: invalid JSON, not an object, missing or non-string prompt, missing expected', async () => {
    const cases: [string, RegExp][] = [
      ['{"prompt": "x", "expected": "y"', /:2: invalid JSON/],
      ['["prompt"]', /:2: each line must be a JSON object like \{"prompt": "\.\.\.", "expected": "\.\.\."\}/],
      ['{"expected": "y"}', /:2: missing "prompt" \(a string\)/],
      ['{"prompt": 5, "expected": "y"}', /:2: "prompt" must be a string, got 5/],
      ['{"prompt": "x"}', /:2: missing "expected" \(the expected answer for the exact scorer\)/],
      ['{"prompt": "x", "expected": null}', /:2: "expected" must be a string, a number or a list of them, got null/],
    ];
    for (const [bad, msg] of cases) {
      const { dir, path } = await suiteFile(['{"prompt":"ok","expected":"1"}', bad]);
      const err = await loadSuite(cfg({ path: 's.jsonl' }), dir).catch((e: unknown) => e);
      expect(err, bad).toBeInstanceOf(DataError);
      expect((err as DataError).file).toBe(path);
      expect((err as DataError).line).toBe(2);
      expect((err as Error).message, bad).toMatch(msg);
      expect((err as Error).message.startsWith(`${path}:2: `)).toBe(true);
    }
  });

  it('the field option, regex and numeric answers are checked at load, with file:line', async () => {
    const { dir, path } = await suiteFile(['{"prompt":"a","answer":"\\\\d+"}', '{"prompt":"b","answer":"(oops"}']);
    await expect(loadSuite(cfg({ path: 's.jsonl', scorer: 'regex', field: 'answer' }), dir)).rejects.toThrow(
      `${path}:2: invalid regex "(oops"`,
    );
    await expect(loadSuite(cfg({ path: 's.jsonl', scorer: 'regex' }), dir)).rejects.toThrow(
      `${path}:1: missing "expected"`,
    );
    const n = await suiteFile(['{"prompt":"a","expected":"1,200"}', '{"prompt":"b","expected":"twelve"}']);
    await expect(loadSuite(cfg({ path: 's.jsonl', scorer: 'numeric' }), n.dir)).rejects.toThrow(
      `${n.path}:2: "expected" must be a number for the numeric scorer, got "twelve"`,
    );
    const ok = await suiteFile(['{"prompt":"a","expected":"1,200"}', '{"prompt":"b","expected":[3, "4.5"]}']);
    const s = await loadSuite(cfg({ path: 's.jsonl', scorer: 'numeric' }), ok.dir);
    expect(s.examples.map((e) => e.numbers)).toEqual([[1200], [3, 4.5]]);
  });

  it('custom scorers do not need expected; a missing file or an empty suite is a LatheError', async () => {
    const { dir } = await suiteFile(['{"prompt":"a","tests":["t1"]}']);
    await writeFile(join(dir, 'score.mjs'), 'export default () => 1;\n');
    const s = await loadSuite(cfg({ path: 's.jsonl', scorer: { module: 'score.mjs' } }), dir);
    expect(s.examples[0]!.row.tests).toEqual(['t1']);
    expect(await s.scorer!.score('x', s.examples[0]!)).toEqual({ score: 1 });
    await s.close();
    await expect(loadSuite(cfg({ path: 'nope.jsonl' }), dir)).rejects.toThrow(
      /suite "s": nope\.jsonl is not a file \(resolved to .*nope\.jsonl\)/,
    );
    const empty = await suiteFile(['', '  ']);
    const err = await loadSuite(cfg({ path: 's.jsonl' }), empty.dir).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(LatheError);
    expect((err as Error).message).toMatch(/has no examples/);
  });

  it('perplexity suites read a text file as documents', async () => {
    expect(splitDocuments('a\nb\n\n c \r\n\r\nd', 'paragraph')).toEqual(['a\nb', 'c', 'd']);
    expect(splitDocuments('a\nb\n\nc', 'line')).toEqual(['a', 'b', 'c']);
    expect(splitDocuments('a\n\nb\n', 'file')).toEqual(['a\n\nb']);
    const { dir } = await suiteFile(['let x = 1', 'emit x', '', 'let y = 2', 'emit y'], 'c.txt');
    const s = await loadSuite(cfg({ path: 'c.txt', scorer: 'perplexity' }), dir);
    expect(s.kind).toBe('perplexity');
    expect(s.docs).toEqual(['let x = 1\nemit x', 'let y = 2\nemit y']);
  });
});
