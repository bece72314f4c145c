import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createWriteStream } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DataError, LatheError } from '../errors.js';
import { SourceSchema, type SourceConfig } from '../recipe/schema.js';
import { resolveSourceFiles } from '../recipe/files.js';
import {
  firstInvalidUtf8,
  readSource,
  readSourceBatches,
  type Doc,
  type ReadSourceOptions,
  type Rejection,
} from './sources.js';

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'lathe-sources-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

function src(over: Partial<SourceConfig> & { path?: string } = {}): SourceConfig {
  return SourceSchema.parse({ path: 'x', ...over });
}

async function put(name: string, content: string | Uint8Array): Promise<string> {
  const p = join(dir, name);
  await mkdir(join(p, '..'), { recursive: true });
  await writeFile(p, content);
  return p;
}

async function readAll(
  s: SourceConfig,
  files: string[],
  opts: Partial<ReadSourceOptions> = {},
): Promise<{ docs: Doc[]; rejections: Rejection[] }> {
  const rejections: Rejection[] = [];
  const docs: Doc[] = [];
  for await (const d of readSource(s, files, {
    source: 's',
    onError: 'skip',
    onReject: (r) => rejections.push(r),
    ...opts,
  }))
    docs.push(d);
  return { docs, rejections };
}

async function failMessage(s: SourceConfig, files: string[], opts: Partial<ReadSourceOptions> = {}): Promise<string> {
  try {
    await readAll(s, files, { onError: 'fail', ...opts });
  } catch (e) {
    expect(e).toBeInstanceOf(DataError);
    return (e as DataError).message;
  }
  throw new Error('expected a DataError');
}

describe('txt', () => {
  it('splits by line, skipping blank lines, with CRLF', async () => {
    const f = await put('lines.txt', 'alpha\r\n\r\nbeta \r\n   \ngamma');
    const { docs, rejections } = await readAll(src({ split: 'line' }), [f]);
    expect(docs.map((d) => [d.text, d.line])).toEqual([
      ['alpha', 1],
      ['beta ', 3],
      ['gamma', 5],
    ]);
    expect(docs[0]).toMatchObject({ source: 's', file: f });
    expect(rejections).toEqual([]);
  });

  it('splits by paragraph; doc.line is the first line', async () => {
    const f = await put('para.txt', '\n\none\ntwo\r\n\r\n\r\nthree\n  \nfour\nfive\n');
    const { docs } = await readAll(src({ split: 'paragraph' }), [f]);
    expect(docs.map((d) => [d.text, d.line])).toEqual([
      ['one\ntwo', 3],
      ['three', 7],
      ['four\nfive', 9],
    ]);
  });

  it('reads a whole file as one doc, keeping inner blank lines', async () => {
    const f = await put('whole.txt', '\ufeffa\r\n\r\nb\n\n');
    const { docs } = await readAll(src({ split: 'file' }), [f]);
    expect(docs.map((d) => [d.text, d.line])).toEqual([['a\n\nb', 1]]);
  });

  it('strips a BOM only at the start of the file', async () => {
    const f = await put('bom.txt', '\ufeffone\n\ufefftwo\n');
    const { docs } = await readAll(src({ split: 'line' }), [f]);
    expect(docs.map((d) => d.text)).toEqual(['one', '\ufefftwo']);
  });

  it('decodes multibyte characters split across chunk boundaries', async () => {
    const line = 'héllo wörld — 日本語テキスト 😀 ∑';
    const text = Array.from({ length: 200 }, (_, i) => `${i} ${line}`).join('\n');
    const f = await put('multi.txt', text);
    for (const hwm of [1, 2, 3, 5, 7, 16]) {
      const { docs, rejections } = await readAll(src({ split: 'line' }), [f], { highWaterMark: hwm });
      expect(rejections).toEqual([]);
      expect(docs.length).toBe(200);
      expect(docs[137]!.text).toBe(`137 ${line}`);
      expect(docs.every((d, i) => d.text === `${i} ${line}` && d.line === i + 1)).toBe(true);
    }
  });

  it('invalid UTF-8: fail throws file:line, skip rejects the line and reads on', async () => {
    const bytes = Buffer.concat([
      Buffer.from('good one\nbad '),
      Buffer.from([0xff, 0xfe]),
      Buffer.from('\ngood two\n'),
    ]);
    const f = await put('bad-utf8.txt', bytes);
    expect(await failMessage(src({ split: 'line' }), [f])).toBe(
      `${f}:2: invalid UTF-8 (byte 0xff at byte 5 of the line)`,
    );
    const { docs, rejections } = await readAll(src({ split: 'line' }), [f]);
    expect(docs.map((d) => d.text)).toEqual(['good one', 'good two']);
    expect(rejections).toEqual([
      { source: 's', file: f, line: 2, reason: 'invalid UTF-8 (byte 0xff at byte 5 of the line)' },
    ]);
  });

  it('invalid UTF-8 inside a paragraph rejects that paragraph at the bad line', async () => {
    const bytes = Buffer.concat([Buffer.from('p1\n\np2 a\np2 '), Buffer.from([0xc3, 0x28]), Buffer.from('\n\np3\n')]);
    const f = await put('bad-para.txt', bytes);
    const { docs, rejections } = await readAll(src({ split: 'paragraph' }), [f]);
    expect(docs.map((d) => [d.text, d.line])).toEqual([
      ['p1', 1],
      ['p3', 6],
    ]);
    expect(rejections.map((r) => [r.line, r.reason])).toEqual([[4, 'invalid UTF-8 (byte 0xc3 at byte 4 of the line)']]);
    expect(await failMessage(src({ split: 'paragraph' }), [f])).toMatch(new RegExp(`^${escape(f)}:4: invalid UTF-8`));
  });

  it('an empty file is an error at line 1', async () => {
    const e = await put('empty.txt', '');
    const blank = await put('blank.txt', '\n  \n\r\n');
    const ok = await put('ok.txt', 'x\n');
    expect(await failMessage(src(), [e])).toBe(`${e}:1: file is empty`);
    expect(await failMessage(src(), [blank])).toBe(`${blank}:1: file is empty (only blank lines)`);
    const { docs, rejections } = await readAll(src(), [e, ok, blank]);
    expect(docs.map((d) => d.text)).toEqual(['x']);
    expect(rejections.map((r) => `${r.file}:${r.line}: ${r.reason}`)).toEqual([
      `${e}:1: file is empty`,
      `${blank}:1: file is empty (only blank lines)`,
    ]);
  });

  it('unknown extensions are an error naming the file, before reading anything', async () => {
    const f = await put('notes.md', 'hello');
    const ok = await put('fine.txt', 'hello');
    const iter = readSource(src(), [ok, f], { source: 's', onError: 'skip' });
    await expect(iter.next()).rejects.toThrow(LatheError);
    await expect(readAll(src(), [f])).rejects.toThrow(`${f}: cannot tell the format from the extension ".md"`);
    // An explicit format reads any extension.
    expect((await readAll(src({ format: 'txt', split: 'line' }), [f])).docs.map((d) => d.text)).toEqual(['hello']);
  });

  it('a missing file is a LatheError naming it', async () => {
    const f = join(dir, 'nope.txt');
    await expect(readAll(src(), [f])).rejects.toThrow(`${f}: cannot read: ENOENT`);
  });

  it('closes the file when the consumer stops early', async () => {
    const f = await put('many.txt', Array.from({ length: 1000 }, (_, i) => `l${i}`).join('\n'));
    let n = 0;
    for await (const d of readSource(src({ split: 'line' }), [f], {
      source: 's',
      onError: 'fail',
      highWaterMark: 64,
    })) {
      if (++n === 3) {
        expect(d.text).toBe('l2');
        break;
      }
    }
    expect(n).toBe(3);
  });
});

function escape(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

describe('jsonl', () => {
  it('reads the text field (default and custom) and keeps the row', async () => {
    const f = await put('a.jsonl', '{"text":"one","id":1}\r\n\r\n  \n{"text":"two","meta":{"k":true}}\n');
    const { docs, rejections } = await readAll(src(), [f]);
    expect(rejections).toEqual([]);
    expect(docs.map((d) => [d.text, d.line])).toEqual([
      ['one', 1],
      ['two', 4],
    ]);
    expect(docs[1]!.row).toEqual({ text: 'two', meta: { k: true } });
    const g = await put('b.json', '{"body":"x"}\n');
    expect((await readAll(src({ field: 'body' }), [g])).docs.map((d) => d.text)).toEqual(['x']);
  });

  it('reads chat rows: text is the contents joined, messages validated and typed', async () => {
    const row = {
      messages: [
        { role: 'system', content: 'be brief' },
        { role: 'user', content: 'hi' },
        { role: 'assistant', content: 'hello', weight: 0 },
        { role: 'tool', content: '{}' },
        { role: 'assistant', content: 'done', weight: 1 },
      ],
      id: 'c1',
    };
    const f = await put('chat.jsonl', JSON.stringify(row) + '\n');
    const { docs } = await readAll(src(), [f]);
    expect(docs).toHaveLength(1);
    expect(docs[0]!.text).toBe('be brief\nhi\nhello\n{}\ndone');
    expect(docs[0]!.messages).toEqual(row.messages);
    expect(docs[0]!.row).toEqual(row);
  });

  it('reads chat rows with tool calls (OpenAI / Mistral format): calls kept, text holds them', async () => {
    const call = { id: 'c1', type: 'function', function: { name: 'lookup', arguments: '{"q": "tally"}' } };
    const row = {
      messages: [
        { role: 'user', content: 'find it' },
        { role: 'assistant', content: null, tool_calls: [call] },
        { role: 'tool', tool_call_id: 'c1', name: 'lookup', content: 'found' },
        { role: 'assistant', content: 'here', weight: 1 },
      ],
    };
    const f = await put('tool-chat.jsonl', JSON.stringify(row) + '\n');
    const { docs, rejections } = await readAll(src(), [f]);
    expect(rejections).toEqual([]);
    expect(docs[0]!.messages).toEqual([
      { role: 'user', content: 'find it' },
      { role: 'assistant', content: '', tool_calls: [call] },
      { role: 'tool', tool_call_id: 'c1', name: 'lookup', content: 'found' },
      { role: 'assistant', content: 'here', weight: 1 },
    ]);
    expect(docs[0]!.text).toBe(
      'find it\n<tool_call>{"id": "c1", "name": "lookup", "arguments": {"q": "tally"}}</tool_call>\nfound\nhere',
    );
  });

  const bad: [string, string][] = [
    ['{"text": "ok"', 'invalid JSON: '],
    ['[1, 2]', 'expected a JSON object, got array'],
    ['"just a string"', 'expected a JSON object, got string'],
    ['{"body": "x", "id": 3}', 'missing field "text" (and no "messages"); fields present: body, id'],
    ['{"text": 5}', 'field "text" must be a string, got number'],
    ['{"text": null}', 'field "text" must be a string, got null'],
    ['{"messages": "hi"}', 'messages must be an array, got string'],
    ['{"messages": []}', 'messages is empty'],
    [
      '{"messages": [{"role": "user", "content": "a"}, {"role": "bot", "content": "b"}]}',
      'messages[1].role "bot" is not one of system, user, assistant, tool',
    ],
    ['{"messages": [{"content": "a"}]}', 'messages[0].role is missing'],
    ['{"messages": [{"role": "user", "content": 3}]}', 'messages[0].content must be a string, got number'],
    [
      '{"messages": [{"role": "assistant", "content": "a", "weight": 0.5}]}',
      'messages[0].weight must be 0 or 1, got 0.5',
    ],
    ['{"messages": ["hi"]}', 'messages[0] must be an object, got string'],
    [
      '{"messages": [{"role": "user", "content": "a", "weight": 1}, {"role": "assistant", "content": "b"}]}',
      'messages[0].weight is only for assistant messages (0 leaves a reply out of the loss); a user message is never trained on, so remove it',
    ],
    [
      '{"messages": [{"role": "user", "content": "a", "tool_calls": []}]}',
      'messages[0].tool_calls belong to assistant messages, not user',
    ],
    [
      '{"messages": [{"role": "user", "content": "a", "lang": "en"}]}',
      'messages[0].lang is not a field of a user message; allowed: role, content',
    ],
    ['{"messages": [{"role": "assistant", "content": null}]}', 'messages[0].content must be a string, got null'],
    [
      '{"messages": [{"role": "assistant", "content": "", "tool_calls": {"name": "f"}}]}',
      'messages[0].tool_calls must be an array, got object',
    ],
    [
      '{"messages": [{"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "f", "arguments": "{x: 1}"}}]}]}',
      'messages[0].tool_calls[0].function.arguments is not valid JSON (',
    ],
    [
      '{"messages": [{"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "", "arguments": "{}"}}]}]}',
      'messages[0].tool_calls[0].function.name must be a non-empty string, got ""',
    ],
    [
      '{"messages": [{"role": "assistant", "content": "", "tool_calls": [{"type": "code", "function": {"name": "f", "arguments": "{}"}}]}]}',
      'messages[0].tool_calls[0].type must be "function", got "code"',
    ],
    [
      '{"messages": [{"role": "tool", "content": "r", "tool_call_id": 7}]}',
      'messages[0].tool_call_id must be a non-empty string, got 7',
    ],
  ];
  for (const [line, reason] of bad) {
    it(`rejects ${line} at its file:line in both modes`, async () => {
      const f = await put(
        `bad-${bad.findIndex((b) => b[0] === line)}.jsonl`,
        `{"text":"first"}\n\n${line}\n{"text":"last"}\n`,
      );
      const msg = await failMessage(src(), [f]);
      expect(msg.startsWith(`${f}:3: ${reason}`)).toBe(true);
      const { docs, rejections } = await readAll(src(), [f]);
      expect(docs.map((d) => d.text)).toEqual(['first', 'last']);
      expect(rejections).toHaveLength(1);
      expect(rejections[0]).toMatchObject({ source: 's', file: f, line: 3 });
      expect(rejections[0]!.reason.startsWith(reason)).toBe(true);
    });
  }

  it('includes the parser message for bad JSON, with a hint for pretty-printed .json', async () => {
    const f = await put('pretty.json', '[\n  {"text": "a"}\n]\n');
    const msg = await failMessage(src(), [f]);
    expect(msg).toMatch(/:1: invalid JSON: .+ \(expected one JSON object per line/);
    const g = await put('trunc.jsonl', '{"text": "a",\n');
    expect(await failMessage(src(), [g])).toMatch(new RegExp(`^${escape(g)}:1: invalid JSON: \\S+`));
  });

  it('invalid UTF-8 in a JSONL line names the line', async () => {
    const f = await put(
      'u.jsonl',
      Buffer.concat([Buffer.from('{"text":"a"}\n{"text":"'), Buffer.from([0xe2, 0x82]), Buffer.from('"}\n')]),
    );
    expect(await failMessage(src(), [f])).toBe(`${f}:2: invalid UTF-8 (byte 0xe2 at byte 10 of the line)`);
  });

  it('requireText false passes rows without the field', async () => {
    const f = await put('dpo.jsonl', '{"prompt":"p","chosen":"c","rejected":"r"}\n{"text": 3}\n');
    const { docs, rejections } = await readAll(src(), [f], { requireText: false });
    expect(docs).toEqual([
      { text: '', source: 's', file: f, line: 1, row: { prompt: 'p', chosen: 'c', rejected: 'r' } },
    ]);
    expect(rejections.map((r) => [r.line, r.reason])).toEqual([[2, 'field "text" must be a string, got number']]);
  });

  it('an empty JSONL file is an error', async () => {
    const f = await put('empty.jsonl', '');
    expect(await failMessage(src(), [f])).toBe(`${f}:1: file is empty`);
  });
});

describe('csv', () => {
  it('reads the named column with record line numbers, multi-line fields and CRLF', async () => {
    const f = await put(
      'a.csv',
      'id,body,extra\r\n1,hello,x\r\n\r\n2,"multi\r\nline, quoted ""text""",y\r\n3,third,z\r\n',
    );
    const { docs, rejections } = await readAll(src({ field: 'body' }), [f]);
    expect(rejections).toEqual([]);
    expect(docs.map((d) => [d.text, d.line])).toEqual([
      ['hello', 2],
      ['multi\nline, quoted "text"', 4],
      ['third', 6],
    ]);
    expect(docs[0]!.row).toEqual({ id: '1', body: 'hello', extra: 'x' });
  });

  it('a missing column is an error at file:1 listing the columns', async () => {
    const f = await put('nocol.csv', 'id,body\n1,a\n');
    const reason = 'column "text" not found; columns present: "id", "body"';
    expect(await failMessage(src(), [f])).toBe(`${f}:1: ${reason}`);
    const ok = await put('ok.csv', 'text\nfine\n');
    const { docs, rejections } = await readAll(src(), [f, ok]);
    expect(docs.map((d) => d.text)).toEqual(['fine']);
    expect(rejections).toEqual([{ source: 's', file: f, line: 1, reason }]);
  });

  it('a record with the wrong number of fields is rejected at its line', async () => {
    const f = await put('cols.csv', 'id,text\n1,a\n2,b,extra\n3,c\n');
    expect(await failMessage(src(), [f])).toMatch(new RegExp(`^${escape(f)}:3: invalid CSV: Invalid Record Length`));
    const { docs, rejections } = await readAll(src(), [f]);
    expect(docs.map((d) => [d.text, d.line])).toEqual([
      ['a', 2],
      ['c', 4],
    ]);
    expect(rejections.map((r) => r.line)).toEqual([3]);
  });

  it('an unclosed quote: every record it swallowed is reported lost, each at its line', async () => {
    const f = await put('quote.csv', 'id,text\n1,a\n2,"never closed\n3,c\n\n4,d\n');
    expect(await failMessage(src(), [f])).toBe(
      `${f}:3: invalid CSV: a quote opened in this record is never closed (the file ends inside it)`,
    );
    const { docs, rejections } = await readAll(src(), [f]);
    expect(docs.map((d) => d.text)).toEqual(['a']);
    const lost = 'invalid CSV: record lost: this line was read into the malformed record at line 3';
    expect(rejections.map((r) => [r.line, r.reason])).toEqual([
      [3, 'invalid CSV: a quote opened in this record is never closed (the file ends inside it)'],
      [4, lost],
      [6, lost], // the blank line 5 held no record
    ]);
  });

  it('a bad closing quote: the records read into it before a later quote closes it are reported', async () => {
    // csv-parse stays inside the quoted field after line 3's error, up to the quote on line 5.
    const f = await put('closing.csv', 'text,n\na,1\n"b" x,2\nc,3\n"d",4\ne,5\n');
    const { docs, rejections } = await readAll(src(), [f], { highWaterMark: 5 });
    expect(docs.map((d) => [d.text, d.line])).toEqual([
      ['a', 2],
      ['e', 6],
    ]);
    expect(rejections.map((r) => r.line)).toEqual([3, 4, 5]);
    expect(rejections[0]!.reason).toMatch(/^invalid CSV: Invalid Closing Quote: got " " at line 3/);
    expect(rejections[1]!.reason).toBe(
      'invalid CSV: record lost: this line was read into the malformed record at line 3',
    );
    expect(await failMessage(src(), [f])).toMatch(new RegExp(`^${escape(f)}:3: invalid CSV: Invalid Closing Quote`));
  });

  it('a record past the size limit: the rest of the file is reported lost, line by line', async () => {
    const rows = Array.from({ length: 30 }, (_, i) => `r${i},${i}`);
    const f = await put('huge.csv', ['text,n', 'a,1', '"open,2', ...rows].join('\n') + '\n');
    const { docs, rejections } = await readAll(src(), [f], { csvMaxRecordChars: 40, highWaterMark: 16 });
    expect(docs.map((d) => d.text)).toEqual(['a']);
    expect(rejections.map((r) => r.line)).toEqual(Array.from({ length: 31 }, (_, i) => 3 + i));
    expect(rejections[0]!.reason).toBe(
      'invalid CSV: this record runs on past 40 characters; a quote opened in it is likely never closed',
    );
    expect(rejections.at(-1)!.reason).toMatch(/record lost: this line was read into the malformed record at line 3$/);
  });

  it('invalid UTF-8 rejects the record that spans the bad line', async () => {
    const f = await put(
      'u.csv',
      Buffer.concat([Buffer.from('id,text\n1,a\n2,"x\ny'), Buffer.from([0xff]), Buffer.from('"\n3,c\n')]),
    );
    expect(await failMessage(src(), [f])).toBe(`${f}:4: invalid UTF-8 (byte 0xff at byte 2 of the line)`);
    const { docs, rejections } = await readAll(src(), [f], { highWaterMark: 3 });
    expect(docs.map((d) => [d.text, d.line])).toEqual([
      ['a', 2],
      ['c', 5],
    ]);
    expect(rejections.map((r) => [r.line, r.reason])).toEqual([[4, 'invalid UTF-8 (byte 0xff at byte 2 of the line)']]);
  });

  it('empty and header-only files are errors', async () => {
    const e = await put('empty.csv', '');
    const h = await put('header.csv', 'text\n');
    expect(await failMessage(src(), [e])).toBe(`${e}:1: file is empty`);
    expect(await failMessage(src(), [h])).toBe(`${h}:2: the CSV has a header row but no records`);
  });

  it('requireText false passes rows when the column is missing', async () => {
    const f = await put('pairs.csv', 'prompt,chosen\np,c\n');
    const { docs, rejections } = await readAll(src(), [f], { requireText: false });
    expect(rejections).toEqual([]);
    expect(docs).toEqual([{ text: '', source: 's', file: f, line: 2, row: { prompt: 'p', chosen: 'c' } }]);
  });

  it('reads multibyte text across tiny chunks', async () => {
    const f = await put('mb.csv', 'text\n"日本語, 😀"\nñandú\n');
    const { docs } = await readAll(src(), [f], { highWaterMark: 1 });
    expect(docs.map((d) => d.text)).toEqual(['日本語, 😀', 'ñandú']);
  });
});

describe('ordering of docs and faults', () => {
  it('fail mode yields the docs before the bad line, then throws', async () => {
    const f = await put('order.jsonl', '{"text":"a"}\n{"text":"b"}\n{oops\n{"text":"c"}\n');
    const seen: string[] = [];
    const err = await (async () => {
      for await (const d of readSource(src(), [f], { source: 's', onError: 'fail' })) seen.push(d.text);
    })().catch((e: unknown) => e);
    expect(seen).toEqual(['a', 'b']);
    expect((err as DataError).line).toBe(3);
  });

  it('skip mode reports rejections in file order with the docs', async () => {
    const f = await put('order2.jsonl', '{"text":"a"}\n5\n{"text":"b"}\n6\n');
    const events: string[] = [];
    for await (const d of readSource(src(), [f], {
      source: 's',
      onError: 'skip',
      onReject: (r) => events.push(`reject ${r.line}`),
    }))
      events.push(d.text);
    expect(events).toEqual(['a', 'reject 2', 'b', 'reject 4']);
  });

  it('readSourceBatches yields the same docs in arrays', async () => {
    const f = await put('batches.txt', Array.from({ length: 500 }, (_, i) => `line ${i}`).join('\n'));
    const batches: Doc[][] = [];
    for await (const b of readSourceBatches(src({ split: 'line' }), [f], {
      source: 's',
      onError: 'fail',
      highWaterMark: 256,
    }))
      batches.push(b);
    expect(batches.length).toBeGreaterThan(10);
    expect(batches.flat().map((d) => d.text)).toEqual(Array.from({ length: 500 }, (_, i) => `line ${i}`));
    const g = await put('batches.jsonl', '{"text":"a"}\n{"text":1}\n{"text":"b"}\n');
    const got: string[] = [];
    const err = await (async () => {
      for await (const b of readSourceBatches(src(), [g], { source: 's', onError: 'fail' }))
        got.push(...b.map((d) => d.text));
    })().catch((e: unknown) => e);
    expect(got).toEqual(['a']);
    expect((err as DataError).message).toBe(`${g}:2: field "text" must be a string, got number`);
  });
});

describe('folders and globs', () => {
  it('reads every file that resolveSourceFiles finds, in sorted order', async () => {
    await put('tree/a/one.txt', 'one\n');
    await put('tree/b/two.jsonl', '{"text":"two"}\n');
    await put('tree/b/three.csv', 'text\nthree\n');
    await put('tree/readme.md', 'not data');
    const s = src({ path: 'tree', split: 'line' });
    const files = await resolveSourceFiles(s, dir);
    expect(files.map((f) => f.slice(dir.length + 1))).toEqual([
      'tree/a/one.txt',
      'tree/b/three.csv',
      'tree/b/two.jsonl',
    ]);
    expect((await readAll(s, files)).docs.map((d) => d.text)).toEqual(['one', 'three', 'two']);
    const g = src({ path: 'tree/**/*.{txt,jsonl}', split: 'line' });
    const gf = await resolveSourceFiles(g, dir);
    expect((await readAll(g, gf)).docs.map((d) => d.text)).toEqual(['one', 'two']);
  });
});

describe('firstInvalidUtf8', () => {
  it('finds the first bad byte', () => {
    expect(firstInvalidUtf8(Buffer.from('héllo'))).toBe(-1);
    expect(firstInvalidUtf8(Buffer.from([0x61, 0xc0, 0x80]))).toBe(1); // overlong
    expect(firstInvalidUtf8(Buffer.from([0xed, 0xa0, 0x80]))).toBe(0); // surrogate
    expect(firstInvalidUtf8(Buffer.from([0x61, 0x62, 0xe2, 0x82]))).toBe(2); // truncated
    expect(firstInvalidUtf8(Buffer.from([0xf4, 0x90, 0x80, 0x80]))).toBe(0); // > U+10FFFF
  });
});

describe('bounded memory and speed', () => {
  it('streams a ~200 MB file with bounded RSS and counts every line', async () => {
    const f = join(dir, 'big.txt');
    const line = 'The quick brown fox jumps over the lazy dog; naïve café — 12345 '; // with multibyte characters
    const lineBytes = Buffer.byteLength(line) + 1;
    const block = Buffer.from(Array.from({ length: 1000 }, () => line).join('\n') + '\n');
    const blocks = Math.ceil((200 * 1024 * 1024) / block.length);
    await new Promise<void>((resolve, reject) => {
      const ws = createWriteStream(f);
      let i = 0;
      const write = (): void => {
        while (i < blocks) {
          i++;
          if (!ws.write(block)) return void ws.once('drain', write);
        }
        ws.end();
      };
      ws.on('finish', resolve).on('error', reject);
      write();
    });
    const expected = blocks * 1000;
    const bytes = expected * lineBytes;
    global.gc?.();
    const rss0 = process.memoryUsage().rss;
    let peak = rss0;
    let n = 0;
    let chars = 0;
    const t0 = performance.now();
    for await (const d of readSource(src({ split: 'line' }), [f], { source: 's', onError: 'fail' })) {
      n++;
      chars += d.text.length;
      if ((n & 0xffff) === 0) peak = Math.max(peak, process.memoryUsage().rss);
    }
    const secs = (performance.now() - t0) / 1000;
    peak = Math.max(peak, process.memoryUsage().rss);
    await rm(f);
    expect(n).toBe(expected);
    expect(chars).toBe(expected * line.length);
    const growth = (peak - rss0) / 2 ** 20;
    const mbps = bytes / 2 ** 20 / secs;
    console.log(
      `read ${(bytes / 2 ** 20).toFixed(0)} MB in ${secs.toFixed(2)} s: ${mbps.toFixed(0)} MB/s, ${(n / secs / 1e6).toFixed(2)} M lines/s; RSS growth ${growth.toFixed(0)} MB`,
    );
    expect(growth).toBeLessThan(150);
    expect(mbps).toBeGreaterThan(50);
  });
});
