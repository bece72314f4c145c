/** Pre-tokenizers against HF `tokenizers` 0.22.1 (`pre_tokenize_str`) on random text. */
import { describe, expect, it } from 'vitest';
import { bytesToByteLevel } from './bytes.js';
import { readPreTokenizer } from './pre-tokenizers.js';
import { hfComponents, type ComponentCase } from './test/python.js';
import { propertyTexts } from './test/unicode-texts.js';

const LLAMA3 =
  "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

function pieces(component: Record<string, unknown>, text: string): string[] {
  // As in HF, an empty input has no split at all.
  const start = text === '' ? [] : [{ text, byteLevel: false, first: true }];
  const words = readPreTokenizer(component, 'pre_tokenizer')(start);
  return words.map((w) => (w.byteLevel ? bytesToByteLevel(Buffer.from(w.text, 'utf8')) : w.text));
}

describe('pre-tokenizers', () => {
  it('ByteLevel, Split (every behaviour, inverted or not), Metaspace, Digits, Whitespace, WhitespaceSplit, CharDelimiterSplit and Sequence equal HF', () => {
    const texts = propertyTexts(601, 120, ['▁', '-', '|', 'a-b', '  ▁x']);
    const components: Array<Record<string, unknown>> = [
      { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true },
      { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true },
      { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: false },
      { type: 'Metaspace', replacement: '▁', prepend_scheme: 'always', split: true },
      { type: 'Metaspace', replacement: '▁', prepend_scheme: 'first', split: false },
      { type: 'Metaspace', replacement: '▁', prepend_scheme: 'never', split: true },
      { type: 'Metaspace', replacement: '_', add_prefix_space: false, prepend_scheme: 'never', split: true },
      { type: 'Digits', individual_digits: true },
      { type: 'Digits', individual_digits: false },
      { type: 'Whitespace' },
      { type: 'WhitespaceSplit' },
      { type: 'CharDelimiterSplit', delimiter: '-' },
      {
        type: 'Sequence',
        pretokenizers: [
          { type: 'Split', pattern: { Regex: LLAMA3 }, behavior: 'Isolated', invert: false },
          { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: false },
        ],
      },
      {
        type: 'Sequence',
        pretokenizers: [
          { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true },
          { type: 'Split', pattern: { String: 'Ġ' }, behavior: 'MergedWithNext', invert: false },
          { type: 'Digits', individual_digits: true },
        ],
      },
    ];
    for (const behavior of ['Removed', 'Isolated', 'MergedWithPrevious', 'MergedWithNext', 'Contiguous']) {
      for (const invert of [false, true]) {
        components.push({ type: 'Split', pattern: { Regex: '\\s+|\\p{N}' }, behavior, invert });
        components.push({ type: 'Split', pattern: { String: '-' }, behavior, invert });
      }
    }
    components.push({ type: 'Split', pattern: { Regex: 'x*' }, behavior: 'Isolated', invert: false });
    const cases: ComponentCase[] = components.map((component) => ({ kind: 'pre_tokenizer', component, inputs: texts }));
    const hf = hfComponents(cases);
    cases.forEach((c, k) => {
      expect(hf[k]!.error, JSON.stringify(c.component)).toBeUndefined();
      texts.forEach((t, i) => {
        expect(pieces(c.component, t), `${JSON.stringify(c.component)} on ${JSON.stringify(t)}`).toEqual(
          hf[k]!.results![i],
        );
      });
    });
  });

  it('refuses what it cannot reproduce, naming the field', () => {
    for (const type of ['BertPreTokenizer', 'Punctuation', 'UnicodeScripts', 'FixedLength']) {
      expect(() => readPreTokenizer({ type: 'Sequence', pretokenizers: [{ type }] }, 'pre_tokenizer')).toThrow(
        `tokenizer.json: pre_tokenizer.pretokenizers[0].type "${type}" is not supported (supported: ByteLevel, Split, Metaspace, Digits, Sequence, Whitespace, WhitespaceSplit, CharDelimiterSplit)`,
      );
    }
    expect(() =>
      readPreTokenizer({ type: 'Metaspace', replacement: '▁', add_prefix_space: false }, 'pre_tokenizer'),
    ).toThrow('tokenizer.json: pre_tokenizer: add_prefix_space false does not match prepend_scheme "always"');
    expect(() =>
      readPreTokenizer({ type: 'Metaspace', replacement: '▁', prepend_scheme: 'sometimes' }, 'pre_tokenizer'),
    ).toThrow('tokenizer.json: pre_tokenizer.prepend_scheme "sometimes" is not one of always, first, never');
    expect(() =>
      readPreTokenizer({ type: 'Split', pattern: { Glob: '*' }, behavior: 'Isolated', invert: false }, 'pre_tokenizer'),
    ).toThrow('tokenizer.json: pre_tokenizer.pattern must be {"String": ...} or {"Regex": ...} (got {"Glob":"*"})');
  });
});
