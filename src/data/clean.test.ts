import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { CleanSchema, SourceSchema, type CleanConfig } from '../recipe/schema.js';
import { Cleaner, diffCleanCounts, emptyCleanCounts, hash64, Hash64Set, copyCleanCounts } from './clean.js';
import { formatInspect, type InspectReport } from './inspect.js';
import { readSource, type Doc } from './sources.js';

function cfg(over: Partial<Omit<CleanConfig, 'pii'>> & { pii?: Partial<CleanConfig['pii']> } = {}): CleanConfig {
  return CleanSchema.parse(over);
}

let line = 0;
function doc(text: string, extra: Partial<Doc> = {}): Doc {
  return { text, source: 's', file: 'f.txt', line: ++line, ...extra };
}

function kept(r: ReturnType<Cleaner['clean']>): Doc {
  if (!('doc' in r)) throw new Error(`dropped: ${r.reason}`);
  return r.doc;
}

describe('Cleaner', () => {
  it('normalizes to NFC and counts docs changed', () => {
    const c = new Cleaner(cfg());
    expect(kept(c.clean(doc('cafe\u0301 and nai\u0308ve'))).text).toBe('café and naïve');
    expect(kept(c.clean(doc('already café'))).text).toBe('already café');
    expect(c.counts.nfcChanged).toBe(1);
    const off = new Cleaner(cfg({ nfc: false }));
    expect(kept(off.clean(doc('cafe\u0301'))).text).toBe('cafe\u0301');
    expect(off.counts.nfcChanged).toBe(0);
  });

  it('strips control characters except tab and newline, and lone surrogates', () => {
    const c = new Cleaner(cfg());
    expect(kept(c.clean(doc('a\u0000b\u0007c\r\n\td\u0085e\u007f'))).text).toBe('abc\n\tde');
    expect(c.counts.controlCharsRemoved).toBe(5);
    expect(kept(c.clean(doc('x\ud800y\udc00z 😀'))).text).toBe('xyz 😀');
    expect(c.counts.controlCharsRemoved).toBe(7);
    const off = new Cleaner(cfg({ stripControl: false }));
    expect(kept(off.clean(doc('a\u0007b\ud800'))).text).toBe('a\u0007b');
    expect(off.counts.controlCharsRemoved).toBe(1);
  });

  it('scrubs PII before the length filters and dedupe', () => {
    const c = new Cleaner(cfg({ minChars: 7 }));
    // "a@b.io" is 6 characters, "<EMAIL>" is 7: scrubbing happens first.
    expect(kept(c.clean(doc('a@b.io'))).text).toBe('<EMAIL>');
    expect(kept(c.clean(doc('mail jane@example.com or call 555-123-4567'))).text).toBe('mail <EMAIL> or call <PHONE>');
    // Differs only in the address: a duplicate once scrubbed.
    expect(c.clean(doc('mail john@example.org or call 555-987-6543'))).toEqual({ reason: 'exact_duplicate' });
    expect(c.counts.pii).toEqual({ email: 3, phone: 2, iban: 0, card: 0, ip: 0 });
    const noPii = new Cleaner(cfg({ pii: { email: false, phone: false, iban: false, card: false, ip: false } }));
    expect(kept(noPii.clean(doc('a@b.io'))).text).toBe('a@b.io');
  });

  it('drops docs outside minChars/maxChars, measured in code points without surrounding whitespace', () => {
    const c = new Cleaner(cfg({ minChars: 3, maxChars: 5 }));
    expect(c.clean(doc('ab'))).toEqual({ reason: 'too_short' });
    expect(c.clean(doc('  ab \n'))).toEqual({ reason: 'too_short' });
    expect(c.clean(doc('\u0000\u0001abc'.slice(0, 3)))).toEqual({ reason: 'too_short' });
    expect(kept(c.clean(doc('😀😀😀😀😀'))).text).toBe('😀😀😀😀😀'); // 10 code units, 5 code points
    expect(c.clean(doc('abcdef'))).toEqual({ reason: 'too_long' });
    expect(kept(c.clean(doc(' abcde ')))).toBeTruthy();
    expect(c.counts).toMatchObject({ docsIn: 6, docsOut: 2, tooShort: 3, tooLong: 1 });
    const empty = new Cleaner(cfg());
    expect(empty.clean(doc('   '))).toEqual({ reason: 'too_short' });
  });

  it('removes exact duplicates (after normalization) unless dedupe is none', () => {
    const c = new Cleaner(cfg());
    kept(c.clean(doc('café')));
    expect(c.clean(doc('cafe\u0301'))).toEqual({ reason: 'exact_duplicate' });
    expect(c.clean(doc('café'))).toEqual({ reason: 'exact_duplicate' });
    kept(c.clean(doc('café ')));
    expect(c.counts).toMatchObject({ docsIn: 4, docsOut: 2, exactDuplicates: 2 });
    const none = new Cleaner(cfg({ dedupe: 'none' }));
    kept(none.clean(doc('x')));
    kept(none.clean(doc('x')));
  });

  it('removes near duplicates only with dedupe: near', () => {
    const base =
      'The committee met on Tuesday to review the annual budget, approve the new hiring plan, and discuss the schedule for the spring product launch in three regional markets.';
    const variant = base.replace('Tuesday', 'Thursday'); // shingle Jaccard 0.92
    const near = new Cleaner(cfg({ dedupe: 'near' }), 1337);
    kept(near.clean(doc(base)));
    expect(near.clean(doc(variant))).toEqual({ reason: 'near_duplicate' });
    expect(near.clean(doc(base))).toEqual({ reason: 'exact_duplicate' });
    kept(near.clean(doc('An unrelated note about quarterly tax filings and the auditor visit next month.')));
    expect(near.counts).toMatchObject({ docsIn: 4, docsOut: 2, exactDuplicates: 1, nearDuplicates: 1 });
    const exact = new Cleaner(cfg({ dedupe: 'exact' }));
    kept(exact.clean(doc(base)));
    kept(exact.clean(doc(variant)));
  });

  it('cleans chat messages and rebuilds the text; roles are part of identity', () => {
    const c = new Cleaner(cfg());
    const messages = [
      { role: 'user' as const, content: 'my mail is jane@example.com\u0007' },
      { role: 'assistant' as const, content: 'noted, cafe\u0301', weight: 1 },
    ];
    const row = { messages };
    const out = kept(c.clean(doc('ignored', { messages, row })));
    expect(out.messages).toEqual([
      { role: 'user', content: 'my mail is <EMAIL>' },
      { role: 'assistant', content: 'noted, café', weight: 1 },
    ]);
    expect(out.text).toBe('my mail is <EMAIL>\nnoted, café');
    expect(out.row).toBe(row); // passed through
    expect(messages[0]!.content).toBe('my mail is jane@example.com\u0007'); // input not mutated
    expect(c.counts).toMatchObject({ nfcChanged: 1, controlCharsRemoved: 1, pii: { email: 1 } });
    const swapped = messages.map((m) => ({
      ...m,
      role: m.role === 'user' ? ('assistant' as const) : ('user' as const),
    }));
    kept(c.clean(doc('', { messages: swapped })));
    expect(c.clean(doc('', { messages }))).toEqual({ reason: 'exact_duplicate' });
  });

  it('locates the first control character removed at its file:line', async () => {
    const c = new Cleaner(cfg());
    kept(c.clean({ text: 'clean', source: 's', file: 'a.txt', line: 1 }));
    expect(c.counts.firstControlChar).toBeUndefined();
    // A paragraph that starts at line 10: the character is on its third line.
    kept(c.clean({ text: 'one\ntwo\nth\u0007ree', source: 's', file: 'b.txt', line: 10 }));
    kept(c.clean({ text: 'x\u0000', source: 's', file: 'c.txt', line: 1 }));
    expect(c.counts.firstControlChar).toEqual({ file: 'b.txt', line: 12 });
    expect(c.counts.controlCharsRemoved).toBe(2);
    // A JSONL or CSV row is one place, whatever newlines its text holds.
    const r = new Cleaner(cfg());
    kept(r.clean({ text: 'a\nb\u0001', source: 's', file: 'r.jsonl', line: 4, row: { text: 'a\nb\u0001' } }));
    expect(r.counts.firstControlChar).toEqual({ file: 'r.jsonl', line: 4 });
    // A tool call's arguments are cleaned too.
    const t = new Cleaner(cfg());
    const messages = [
      { role: 'user' as const, content: 'q' },
      {
        role: 'assistant' as const,
        content: '',
        tool_calls: [{ function: { name: 'f', arguments: '{"a": "x\u0007"}' } }],
      },
    ];
    const out = kept(t.clean({ text: '', source: 's', file: 'c.jsonl', line: 7, messages, row: { messages } }));
    expect(out.messages![1]!.tool_calls![0]!.function.arguments).toBe('{"a": "x"}');
    expect(out.text).toBe('q\n<tool_call>{"name": "f", "arguments": {"a": "x"}}</tool_call>');
    expect(t.counts.firstControlChar).toEqual({ file: 'c.jsonl', line: 7 });
    // cleanText on its own takes the place from its caller.
    const s = new Cleaner(cfg());
    s.cleanText('ok');
    s.cleanText('bad\u0000', true, { file: 'p.jsonl', line: 9 });
    expect(s.counts.firstControlChar).toEqual({ file: 'p.jsonl', line: 9 });
    // The report says where.
    const rep = {
      sources: [],
      clean: c.counts,
      rejected: 0,
      rejections: [],
      vocabSize: 300,
      tokensPerStep: 1,
      steps: 1,
    };
    expect(formatInspect(rep as InspectReport)).toContain('2 control characters removed (the first at b.txt:12)');
  });

  it('locates it in a whole .txt file read from disk, blank lines before it counted', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'lathe-clean-'));
    try {
      const f = join(dir, 'doc.txt');
      await writeFile(f, '\n\nfirst\n\nsecond\nthi\u0007rd\n');
      const c = new Cleaner(cfg());
      for await (const d of readSource(SourceSchema.parse({ path: f, split: 'file' }), [f], {
        source: 's',
        onError: 'fail',
      }))
        expect(kept(c.clean(d)).text).toBe('first\n\nsecond\nthird');
      expect(c.counts.firstControlChar).toEqual({ file: f, line: 6 });
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('cleanText cleans and counts a single string', () => {
    const c = new Cleaner(cfg());
    expect(c.cleanText('ip 10.0.0.1\u0000 cafe\u0301')).toBe('ip <IP> café');
    expect(c.counts).toMatchObject({ nfcChanged: 1, controlCharsRemoved: 1, pii: { ip: 1 }, docsIn: 0 });
  });

  it('counts can be copied and diffed', () => {
    const c = new Cleaner(cfg());
    const before = copyCleanCounts(c.counts);
    c.clean(doc('a@b.io'));
    c.clean(doc('a@b.io'));
    const d = diffCleanCounts(c.counts, before);
    expect(d).toEqual({
      ...emptyCleanCounts(),
      docsIn: 2,
      docsOut: 1,
      exactDuplicates: 1,
      pii: { email: 2, phone: 0, iban: 0, card: 0, ip: 0 },
    });
    expect(JSON.parse(JSON.stringify(c.counts))).toEqual(c.counts);
  });
});

describe('hash64 and Hash64Set', () => {
  it('has no collisions on 300k distinct strings and finds every repeat', () => {
    const set = new Hash64Set();
    let added = 0;
    for (let i = 0; i < 300_000; i++) {
      const [hi, lo] = hash64(`doc ${i} ${i % 7 === 0 ? 'x' : ''}`);
      if (set.add(hi, lo)) added++;
    }
    expect(added).toBe(300_000);
    expect(set.size).toBe(300_000);
    for (let i = 0; i < 300_000; i += 1000) {
      const [hi, lo] = hash64(`doc ${i} ${i % 7 === 0 ? 'x' : ''}`);
      expect(set.add(hi, lo)).toBe(false);
    }
    expect(hash64('ab')).not.toEqual(hash64('ba'));
    expect(hash64('a')).not.toEqual(hash64('a\u0000'));
    expect(hash64('')).toEqual(hash64(''));
  });
});

// Speed is printed here, not asserted (a loaded CI machine is no clock); the bench measures it.
describe('a large batch', () => {
  it('cleans 20k docs with and without near dedupe, counting every PII hit', () => {
    let s = 1;
    const r = (): number => (s = (Math.imul(s, 1103515245) + 12345) >>> 0) / 4294967296;
    // A 5000-word vocabulary drawn with a skew toward common words, like running text.
    const vocab = Array.from({ length: 5000 }, () =>
      Array.from({ length: 2 + Math.floor(r() * 8) }, () => String.fromCharCode(97 + Math.floor(r() * 26))).join(''),
    );
    const docs = Array.from({ length: 20_000 }, (_, i) => {
      const n = 40 + Math.floor(r() * 120);
      const ws = Array.from({ length: n }, () => vocab[Math.floor(Math.pow(r(), 3) * vocab.length)]);
      if (i % 50 === 0) ws.push('contact ops@example.com or 555-123-4567');
      return ws.join(' ') + ` #${i}`;
    });
    const mb = docs.reduce((a, d) => a + Buffer.byteLength(d), 0) / 2 ** 20;
    const rates: Record<string, number> = {};
    for (const dedupe of ['exact', 'near'] as const) {
      const c = new Cleaner(cfg({ dedupe }), 7);
      const t0 = performance.now();
      for (const d of docs) c.clean(doc(d));
      const secs = (performance.now() - t0) / 1000;
      rates[dedupe] = docs.length / secs;
      console.log(
        `clean (dedupe ${dedupe}): ${(docs.length / secs).toFixed(0)} docs/s, ${(mb / secs).toFixed(1)} MB/s (${((mb * 1024) / docs.length).toFixed(2)} KB/doc)`,
      );
      expect(c.counts.pii.email).toBe(400);
    }
    console.log(`clean rates (docs/s): ${JSON.stringify(rates)}`);
  });
});
