import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { BYTE_TO_CHAR } from './bytes.js';
import { pretokenize } from './pretokenize.js';
import { englishLikeCorpus } from './test/corpus.js';
import { trainBpe } from './train.js';
import { Tokenizer } from './tokenizer.js';

/** Straightforward O(merges x corpus) BPE used as the reference for the incremental trainer. */
function referenceMerges(texts: string[], newTokens: number, minFrequency: number): Array<[string, string]> {
  const counts = new Map<string, number>();
  for (const t of texts) for (const w of pretokenize(t)) counts.set(w, (counts.get(w) ?? 0) + 1);
  // Symbols are Latin-1 strings of raw bytes, so `<` compares them byte-wise.
  const words = [...counts].map(([w, c]) => ({
    syms: Array.from(Buffer.from(w, 'utf8'), (b) => String.fromCharCode(b)),
    c,
  }));
  const tokens = new Set<string>();
  for (let b = 0; b < 256; b++) tokens.add(String.fromCharCode(b));
  const merges: Array<[string, string]> = [];
  let added = 0;
  while (added < newTokens) {
    const pairs = new Map<string, { a: string; b: string; n: number }>();
    for (const { syms, c } of words) {
      for (let i = 0; i + 1 < syms.length; i++) {
        const key = JSON.stringify([syms[i], syms[i + 1]]);
        const e = pairs.get(key) ?? { a: syms[i]!, b: syms[i + 1]!, n: 0 };
        e.n += c;
        pairs.set(key, e);
      }
    }
    let best: { a: string; b: string; n: number } | undefined;
    for (const e of pairs.values()) {
      if (!best || e.n > best.n || (e.n === best.n && (e.a < best.a || (e.a === best.a && e.b < best.b)))) best = e;
    }
    if (!best || best.n < Math.max(1, minFrequency)) break;
    for (const w of words) {
      const out: string[] = [];
      for (let i = 0; i < w.syms.length; i++) {
        if (i + 1 < w.syms.length && w.syms[i] === best.a && w.syms[i + 1] === best.b) {
          out.push(best.a + best.b);
          i++;
        } else out.push(w.syms[i]!);
      }
      w.syms = out;
    }
    if (!tokens.has(best.a + best.b)) {
      tokens.add(best.a + best.b);
      added++;
    }
    merges.push([best.a, best.b]);
  }
  const spell = (raw: string): string => Array.from(raw, (ch) => BYTE_TO_CHAR[ch.charCodeAt(0)]!).join('');
  return merges.map(([a, b]) => [spell(a), spell(b)]);
}

describe('trainBpe', () => {
  it('learns the expected merges on a tiny corpus, breaking ties lexicographically', async () => {
    const { merges, bytesRead, distinctWords } = await trainBpe(['ab ab ab ab cd cd cd'], { vocabSize: 256 + 10 });
    expect(merges).toEqual([
      ['a', 'b'],
      ['\u0120', 'ab'],
      ['\u0120', 'c'],
      ['\u0120c', 'd'],
    ]);
    expect(bytesRead).toBe(20);
    expect(distinctWords).toBe(3);
  });

  it('matches a naive reference implementation exactly', async () => {
    const alphabet = fc.constantFrom('a', 'b', 'c', ' ', '  ', 'é', '\n', 'ab', "'s", '1', '🤗');
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.string({ unit: alphabet, maxLength: 25 }), { maxLength: 40 }),
        fc.integer({ min: 0, max: 40 }),
        fc.integer({ min: 0, max: 3 }),
        async (texts, newTokens, minFrequency) => {
          const { merges } = await trainBpe(texts, { vocabSize: 256 + newTokens, minFrequency });
          expect(merges).toEqual(referenceMerges(texts, newTokens, minFrequency));
        },
      ),
      { seed: 7, numRuns: 150 },
    );
  });

  it('is deterministic and accepts sync and async iterables alike', async () => {
    const corpus = englishLikeCorpus(1, 2000);
    const a = await trainBpe(corpus, { vocabSize: 600 });
    const b = await trainBpe(corpus, { vocabSize: 600 });
    async function* stream(): AsyncGenerator<string> {
      for (const line of corpus) yield line;
    }
    const c = await trainBpe(stream(), { vocabSize: 600 });
    expect(a.merges).toHaveLength(344);
    expect(b.merges).toEqual(a.merges);
    expect(c.merges).toEqual(a.merges);
  });

  it('stops at maxBytes, cutting at a character boundary', async () => {
    const texts = ['héllo wörld ', 'more text that is never read'];
    // "héllo w" is 8 UTF-8 bytes; adding "ö" would make 10 > 9, so reading stops mid-text at 8.
    const r = await trainBpe(texts, { vocabSize: 300, maxBytes: 9, minFrequency: 1 });
    expect(r.bytesRead).toBe(8);
    const full = await trainBpe(['héllo w'], { vocabSize: 300, minFrequency: 1 });
    expect(r.merges).toEqual(full.merges);
    expect((await trainBpe(texts, { vocabSize: 300, maxBytes: 0 })).merges).toEqual([]);
  });

  it('respects minFrequency', async () => {
    const r = await trainBpe(['abc abd'], { vocabSize: 1000, minFrequency: 3 });
    expect(r.merges).toEqual([]);
    const r1 = await trainBpe(['abc abd'], { vocabSize: 1000, minFrequency: 2 });
    expect(r1.merges).toEqual([['a', 'b']]);
  });

  it('never merges across or into special tokens', async () => {
    const texts = Array.from({ length: 50 }, () => 'x<|end|>y<|end|><|end|>');
    const r = await trainBpe(texts, { vocabSize: 300, specialTokens: ['<|end|>'] });
    expect(r.merges).toEqual([]);
  });

  it('rejects impossible sizes and non-string input', async () => {
    await expect(trainBpe(['a'], { vocabSize: 100 })).rejects.toThrow(
      'vocabSize 100 is smaller than the 256 base tokens',
    );
    await expect(trainBpe([42 as unknown as string], { vocabSize: 300 })).rejects.toThrow('input item 0 is number');
  });
});

describe('Tokenizer.train', () => {
  it('produces exactly vocabSize tokens and compresses English-like text', async () => {
    const tok = await Tokenizer.train(englishLikeCorpus(2, 5000), { vocabSize: 1024 });
    expect(tok.vocabSize).toBe(1024);
    expect(tok.toJSON()).toMatchObject({ model: { type: 'BPE' } });
    const heldOut = englishLikeCorpus(3, 500).join('');
    const ids = tok.encode(heldOut);
    const tokensPerByte = ids.length / Buffer.byteLength(heldOut, 'utf8');
    expect(tokensPerByte).toBeLessThan(0.5);
    expect(tokensPerByte).toBeGreaterThan(0.1);
    expect(tok.decode(ids)).toBe(heldOut);
  });

  it('stops early (smaller vocab) when the corpus runs out of pairs', async () => {
    const tok = await Tokenizer.train(['abab abab'], { vocabSize: 5000 });
    expect(tok.vocabSize).toBeLessThan(5000);
    expect(tok.vocabSize).toBeGreaterThan(266);
  });
});
