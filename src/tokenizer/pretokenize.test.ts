import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { PRETOKENIZE_REGEX, pretokenize } from './pretokenize.js';
import { TRICKY_STRINGS } from './test/corpus.js';

const piece = fc.oneof(
  fc.string({ unit: 'grapheme', maxLength: 6 }),
  fc.string({ unit: 'binary', maxLength: 6 }),
  fc.string({ unit: 'binary-ascii', maxLength: 6 }),
  fc.constantFrom(
    ' ',
    '  ',
    '\n',
    '\t',
    '\r\n',
    '\u00a0',
    '\u0085',
    '\ufeff',
    '\u3000',
    '\u1680',
    "'s",
    "'ll",
    "'",
    'x',
    '7',
    '\ud800',
    '\udc00',
  ),
  fc.string({ unit: fc.constantFrom(' ', '\n', '\t', '\u2003', '\u0085'), minLength: 2, maxLength: 30 }),
);
const text = fc.array(piece, { maxLength: 12 }).map((parts) => parts.join(''));

describe('pretokenize', () => {
  it('splits like GPT-2', () => {
    expect(pretokenize('Hello my friend, how is your day going?')).toEqual([
      'Hello',
      ' my',
      ' friend',
      ',',
      ' how',
      ' is',
      ' your',
      ' day',
      ' going',
      '?',
    ]);
    expect(pretokenize('Hello there       dear')).toEqual(['Hello', ' there', '      ', ' dear']);
    expect(pretokenize('Hello there\nHello there')).toEqual(['Hello', ' there', '\n', 'Hello', ' there']);
    expect(pretokenize("I'm you'll we've 'S")).toEqual(['I', "'m", ' you', "'ll", ' we', "'ve", " '", 'S']);
    expect(pretokenize('abc123 45!! ?')).toEqual(['abc', '123', ' 45', '!!', ' ?']);
    expect(pretokenize('a\t\tb  ')).toEqual(['a', '\t', '\t', 'b', '  ']);
    expect(pretokenize('i⭢j 🤗🤗')).toEqual(['i', '⭢', 'j', ' 🤗🤗']);
    expect(pretokenize('')).toEqual([]);
  });

  it("uses HF's whitespace class: U+0085 is space, U+FEFF is not", () => {
    expect(pretokenize('a\u0085\u0085b')).toEqual(['a', '\u0085', '\u0085', 'b']);
    expect(pretokenize('a\ufeff\ufeffb')).toEqual(['a', '\ufeff\ufeff', 'b']);
    // U+10940 became a letter in Unicode 17; HF's Oniguruma still calls it "other".
    expect(pretokenize('a\u{10940}')).toEqual(['a', '\u{10940}']);
  });

  it('scanner agrees with the reference regex and tiles the input', () => {
    fc.assert(
      fc.property(text, (s) => {
        const pieces = pretokenize(s);
        expect(pieces.join('')).toBe(s);
        expect(pieces).toEqual(s.match(PRETOKENIZE_REGEX) ?? []);
      }),
      { seed: 1234, numRuns: 2000 },
    );
    for (const s of TRICKY_STRINGS) expect(pretokenize(s)).toEqual(s.match(PRETOKENIZE_REGEX) ?? []);
  });
});
