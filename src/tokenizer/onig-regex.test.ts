/**
 * Oniguruma patterns run as JavaScript RegExps, against HF `tokenizers` 0.22.1 (a Split
 * pre-tokenizer, which runs Oniguruma): real tokenizer patterns and syntax corner cases on random
 * text, character classes over sampled code points, and what is refused.
 */
import { describe, expect, it } from 'vitest';
import { OnigRegex } from './onig-regex.js';
import { splitTiles } from './pre-tokenizers.js';
import { hfComponents, type ComponentCase } from './test/python.js';
import { propertyTexts, sampledCodePoints } from './test/unicode-texts.js';

const PATTERNS = [
  // GPT-2, Llama 3, Qwen2, o200k (Phi-4, ...), DeepSeek-V3-like, Mistral Tekken-like
  "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+",
  "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
  "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
  "[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]*[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]+[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
  '\\p{N}{1,3}|[一-龥\\u3040-ゟ゠-ヿ]+|[!"#$%&\'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\\r\\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+| ?[\\p{P}\\p{S}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+',
  '[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]*[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]+|[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]+[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]*|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+',
  // classes and escapes
  '\\w+',
  '\\W+',
  '\\d+|\\D',
  '\\h+',
  '\\s\\S',
  '\\b\\w',
  '\\w\\B',
  '[^\\p{L}\\s]+',
  '[a-z&&[^aeiou]]+',
  '[\\p{Greek}\\p{Han}]+',
  '\\p{^L}+',
  '\\P{N}',
  '\\p{Lo}\\p{Ll}*',
  '\\p{Cn}|\\p{Zs}',
  '[\\]\\-\\\\a-c]+',
  '[]a]',
  '\\x41|\\u00e9|\\x{1F600}|\\t',
  '\\.\\$\\^\\{\\}',
  // anchors and dot
  '.',
  '(?m:.)',
  '^\\s*\\w',
  '\\w\\s*$',
  '\\A.',
  '.\\z',
  '.\\Z',
  // quantifiers, groups and lookarounds
  '{',
  'a{,2}',
  'a{1,2}+b',
  'a{2}?',
  '(?>a+)b',
  'a++b|a*+',
  '\\s?+\\w',
  'x*',
  'a**',
  '(?=\\d)',
  '(?<=\\s)\\S+',
  '(?<!\\p{L})\\d',
  '(?<word>\\w)(?:-)',
  '(?#note)ab',
  // case-insensitive
  '(?i)k+',
  'a(?i)b|c',
  "(?i:'s|'t)",
  '(?i:[a-d])+',
  '(?-i:x)(?i:y)',
];

describe('Oniguruma patterns as JavaScript RegExps', () => {
  it('split text exactly as HF does, for real tokenizer patterns and syntax corner cases', () => {
    const texts = propertyTexts(801, 120, ['ſ', 'K', 'aab', 'aaab', 'ab-c', 'x1', 'AbC', '\n\n', ' \n', '😀é\t']);
    const cases: ComponentCase[] = [];
    for (const p of PATTERNS) {
      for (const behavior of ['Isolated', 'Removed']) {
        cases.push({
          kind: 'pre_tokenizer',
          component: { type: 'Split', pattern: { Regex: p }, behavior, invert: false },
          inputs: texts,
        });
      }
    }
    const hf = hfComponents(cases);
    cases.forEach((c, k) => {
      const p = (c.component['pattern'] as { Regex: string }).Regex;
      expect(hf[k]!.error, `HF compiles ${p}`).toBeUndefined();
      const re = new OnigRegex(p, 'test');
      const behavior = c.component['behavior'] as 'Isolated' | 'Removed';
      texts.forEach((t, i) => {
        const ours = t === '' ? [] : splitTiles(t, re.findMatches(t), behavior).filter((s) => s.length > 0);
        expect(ours, `${p} (${behavior}) on ${JSON.stringify(t)}`).toEqual(hf[k]!.results![i]);
      });
    });
  });

  it('character classes and properties match the same code points as HF', () => {
    const text = sampledCodePoints()
      .map((cp) => String.fromCodePoint(cp))
      .join('');
    const classes = [
      '\\p{L}',
      '\\p{Lu}',
      '\\p{Ll}',
      '\\p{Lo}',
      '\\p{LC}',
      '\\p{M}',
      '\\p{N}',
      '\\p{Nd}',
      '\\p{P}',
      '\\p{S}',
      '\\p{Z}',
      '\\p{C}',
      '\\p{Cn}',
      '\\p{Latin}',
      '\\p{Common}',
      '\\p{Unknown}',
      '\\p{Alphabetic}',
      '\\p{Lowercase}',
      '\\p{Cased}',
      '\\p{Any}',
      '\\s',
      '\\w',
      '\\d',
      '\\h',
      '(?i)k',
    ];
    const cases: ComponentCase[] = classes.map((cls) => ({
      kind: 'pre_tokenizer',
      component: { type: 'Split', pattern: { Regex: `${cls}+` }, behavior: 'Removed', invert: true },
      inputs: [text],
    }));
    const hf = hfComponents(cases);
    classes.forEach((cls, k) => {
      const re = new OnigRegex(`${cls}+`, 'test');
      const ours = re.matches(text).map(([s, e]) => text.slice(s, e));
      expect(hf[k]!.error, cls).toBeUndefined();
      const want = hf[k]!.results![0] as string[];
      const firstDiff = ours.findIndex((s, i) => s !== want[i]);
      expect({ count: ours.length, firstDiff: firstDiff < 0 ? null : [ours[firstDiff], want[firstDiff]] }, cls).toEqual(
        { count: want.length, firstDiff: null },
      );
    });
  });

  it('refuses what JavaScript cannot reproduce, and malformed patterns, naming the pattern and the offset', () => {
    const refused: Array<[string, string]> = [
      ['(\\w)\\1', 'backreferences are not supported (at offset 4)'],
      ['(?<a>x)\\k<a>', 'backreferences are not supported (at offset 7)'],
      ['\\g<a>', 'subroutine calls are not supported'],
      ['a\\Kb', '\\K (keep) is not supported (at offset 1)'],
      ['\\R', '\\R (general newline) is not supported'],
      ['\\X', '\\X (grapheme cluster) is not supported'],
      ['\\Ga', '\\G (search start anchor) is not supported'],
      ['(?x) a b', 'option (?x) is not supported'],
      ['(?~abc)', 'absent groups (?~...) are not supported'],
      ['(?(1)a|b)', 'conditionals (?(...)...) are not supported'],
      ['[[:alpha:]]', 'POSIX bracket expressions ([:alpha:]) are not supported'],
      ['(?i:ss)', '"ss" inside (?i) also matches a ligature or ß in Oniguruma, which is not supported'],
      ['(?i:é)', 'non-ASCII letters inside (?i) are not supported'],
      ['(?i)\\p{Lu}', 'case-sensitive property \\p{Lu} inside (?i) is not supported'],
      ['\\p{NoSuchThing}', 'unknown or unsupported property \\p{NoSuchThing}'],
      ['*a', 'target of repeat operator is not specified'],
      ['(ab', 'missing ")"'],
      ['ab)', 'unbalanced ")"'],
      ['[ab', 'premature end of char-class'],
      ['[z-a]', 'empty range in char class'],
    ];
    for (const [pattern, message] of refused) {
      expect(() => new OnigRegex(pattern, 'tokenizer.json: pre_tokenizer.pattern.Regex'), pattern).toThrow(
        `tokenizer.json: pre_tokenizer.pattern.Regex ${JSON.stringify(pattern)}: ${message}`,
      );
    }
  });
});
