import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DataError } from '../errors.js';
import { RecipeSchema, type RecipeInput, type ResolvedRecipe } from '../recipe/schema.js';
import { formatScan, scanData, scanTable } from './scan.js';
import { formatTable } from './table.js';

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'lathe-scan-'));
  await mkdir(join(dir, 'notes'), { recursive: true });
  await writeFile(join(dir, 'notes', 'a.txt'), 'First note about the harbor.\n\nSecond note, with mail to ops@example.com.\n\nShared paragraph across sources.\n');
  await writeFile(join(dir, 'notes', 'b.txt'), 'Third note.\n\nThird note.\n\nx\n');
  await writeFile(
    join(dir, 'chats.jsonl'),
    [
      JSON.stringify({ text: 'Shared paragraph across sources.' }),
      '{"text": 5}',
      JSON.stringify({ messages: [{ role: 'user', content: 'hi' }, { role: 'assistant', content: 'hello there' }] }),
      'not json',
      JSON.stringify({ text: 'Ünïcödé text ✓' }),
    ].join('\n') + '\n',
  );
  await writeFile(join(dir, 'many-bad.jsonl'), Array.from({ length: 1200 }, (_, i) => (i % 2 ? '{"text": 1}' : `{"text": "ok ${i}"}`)).join('\n') + '\n');
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

function recipe(data: Partial<RecipeInput['data']> & Pick<RecipeInput['data'], 'sources'>): ResolvedRecipe {
  return RecipeSchema.parse({ stage: 'pretrain', seed: 7, data: { onError: 'skip', ...data, clean: { minChars: 2, ...data.clean } } });
}

describe('scanData', () => {
  it('reports per source and in total, with cross-source duplicates and rejections', async () => {
    const r = recipe({ sources: [{ path: 'notes', name: 'notes' }, { path: 'chats.jsonl', name: 'chats' }] });
    const rep = await scanData(r, dir);
    const [notes, chats] = rep.sources;
    expect(notes).toMatchObject({ source: 'notes', files: 2, docs: 4, rejected: 0, truncated: false });
    expect(notes!.clean).toMatchObject({ docsIn: 6, docsOut: 4, exactDuplicates: 1, tooShort: 1, pii: { email: 1 } });
    const noteTexts = ['First note about the harbor.', 'Second note, with mail to <EMAIL>.', 'Shared paragraph across sources.', 'Third note.'];
    expect(notes!.bytes).toBe(noteTexts.reduce((a, t) => a + Buffer.byteLength(t), 0));
    // The shared paragraph was already kept from notes: a cross-source duplicate.
    expect(chats).toMatchObject({ source: 'chats', files: 1, docs: 2, rejected: 2 });
    expect(chats!.clean).toMatchObject({ docsIn: 3, docsOut: 2, exactDuplicates: 1 });
    expect(chats!.bytes).toBe(Buffer.byteLength('hi\nhello there') + Buffer.byteLength('Ünïcödé text ✓'));
    expect(rep.totals).toMatchObject({ files: 3, docs: 6, rejected: 2, bytes: notes!.bytes + chats!.bytes });
    expect(rep.totals.clean).toMatchObject({ docsIn: 9, docsOut: 6, exactDuplicates: 2, tooShort: 1 });
    const f = join(dir, 'chats.jsonl');
    expect(rep.rejections).toEqual([
      { source: 'chats', file: f, line: 2, reason: 'field "text" must be a string, got number' },
      { source: 'chats', file: f, line: 4, reason: expect.stringMatching(/^invalid JSON: /) as unknown as string },
    ]);
  });

  it('throws DataError at the first malformed line with onError: fail', async () => {
    const r = recipe({ sources: [{ path: 'notes' }, { path: 'chats.jsonl' }], onError: 'fail' });
    const err = await scanData(r, dir).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(DataError);
    expect((err as DataError).message).toBe(`${join(dir, 'chats.jsonl')}:2: field "text" must be a string, got number`);
  });

  it('keeps the first 1000 rejections but counts all', async () => {
    const rep = await scanData(recipe({ sources: [{ path: 'many-bad.jsonl' }] }), dir);
    expect(rep.sources[0]).toMatchObject({ docs: 600, rejected: 600 });
    const rep2 = await scanData(recipe({ sources: [{ path: 'many-bad.jsonl', name: 'a' }, { path: 'many-bad.jsonl', name: 'b' }] }), dir);
    expect(rep2.totals.rejected).toBe(1200);
    expect(rep2.rejections).toHaveLength(1000);
    expect(rep2.rejections[999]).toMatchObject({ source: 'b', line: 800 });
    expect(rep2.sources[1]).toMatchObject({ docs: 0, clean: { exactDuplicates: 600 } });
    expect(formatScan(rep2)).toMatch(/… and 200 more$/);
  });

  it('stops each source after maxDocsPerSource docs', async () => {
    const rep = await scanData(recipe({ sources: [{ path: 'many-bad.jsonl' }] }), dir, { maxDocsPerSource: 10 });
    expect(rep.sources[0]).toMatchObject({ docs: 10, truncated: true, clean: { docsIn: 10 } });
    expect(rep.sources[0]!.rejected).toBe(9); // the bad lines between the first 10 good ones
  });

  it('formats a table and the rejected lines', async () => {
    const r = recipe({ sources: [{ path: 'notes', name: 'notes' }, { path: 'chats.jsonl', name: 'chats' }] });
    const text = formatScan(await scanData(r, dir));
    const lines = text.split('\n');
    expect(lines[0]).toBe('source  files  docs  bytes  rejected  too short  too long  exact dup  near dup  pii');
    expect(lines[2]).toMatch(/^notes\s+2\s+4\s+\d+\s+0\s+1\s+0\s+1\s+0\s+1$/);
    expect(lines[4]).toMatch(/^total\s+3\s+6\s+\d+\s+2\s+1\s+0\s+2\s+0\s+1$/);
    expect(text).toContain(`  ${join(dir, 'chats.jsonl')}:2: field "text" must be a string, got number`);
    expect(text).toContain('rejected lines: 2');
    expect(text).toContain('PII replaced: email 1, phone 0, iban 0, card 0, ip 0');
  });
});

describe('formatTable', () => {
  it('aligns text left and numbers right, with thousands separators, and is extensible', () => {
    const out = formatTable(
      ['name', 'docs', 'ratio'],
      [
        ['a', 1234567, '0.50'],
        ['longer name', 3, '12.25'],
      ],
    );
    expect(out).toBe(['name              docs  ratio', '-----------  ---------  -----', 'a            1,234,567   0.50', 'longer name          3  12.25'].join('\n'));
  });

  it('lets a caller add columns to the scan table', async () => {
    const rep = await scanData(recipe({ sources: [{ path: 'notes', name: 'notes' }] }), dir);
    const { headers, rows } = scanTable(rep);
    const out = formatTable([...headers, 'tokens'], rows.map((r) => [...r, 42]));
    expect(out.split('\n')[0]!.endsWith('pii  tokens')).toBe(true);
    expect(out.split('\n')[2]!.endsWith('  42')).toBe(true);
  });
});
