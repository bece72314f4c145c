/** Normalizers against HF `tokenizers` 0.22.1: Unicode forms over sampled code points, the rest on random text. */
import { describe, expect, it } from 'vitest';
import { readNormalizer } from './normalizers.js';
import { hfComponents, type ComponentCase } from './test/python.js';
import { propertyTexts, sampledCodePoints } from './test/unicode-texts.js';

/** Runs each normalizer here and in HF; inputs joined by newlines are compared line by line. */
function run(cases: ComponentCase[]): void {
  const hf = hfComponents(cases);
  cases.forEach((c, k) => {
    const field = `case ${k} ${JSON.stringify(c.component)}`;
    expect(hf[k]!.error, field).toBeUndefined();
    const normalize = readNormalizer(c.component, 'normalizer');
    const mismatches: Array<{ input: string; ours: string; hf: string }> = [];
    c.inputs.forEach((t, i) => {
      const ours = normalize(t as string).split('\n');
      const want = (hf[k]!.results![i] as string).split('\n');
      const lines = (t as string).split('\n');
      lines.forEach((line, j) => {
        if (ours[j] !== want[j] && mismatches.length < 10)
          mismatches.push({ input: line, ours: ours[j]!, hf: want[j]! });
      });
      if (ours.length !== want.length)
        mismatches.push({ input: '(line count)', ours: `${ours.length}`, hf: `${want.length}` });
    });
    expect(mismatches, field).toEqual([]);
  });
}

/** Every canonical composition pair (A, B) of this engine's Unicode, as "AB". */
function compositionPairs(): string[] {
  const out: string[] = [];
  for (let x = 0; x < 0x110000; x++) {
    if (x >= 0xd800 && x <= 0xdfff) continue;
    const composite = String.fromCodePoint(x);
    const parts = [...composite.normalize('NFD')];
    if (parts.length < 2) continue;
    const first = parts.slice(0, -1).join('').normalize('NFC');
    const pair = first + parts[parts.length - 1]!;
    if ([...first].length === 1 && pair.normalize('NFC') === composite) out.push(pair);
  }
  return out;
}

describe('normalizers', () => {
  it('NFC, NFD, NFKC, NFKD and Lowercase equal HF on sampled code points in context and on every composition pair', () => {
    const cps = sampledCodePoints();
    // One long text per form: a newline between items keeps them apart (it neither composes nor decomposes).
    const items = cps.flatMap((cp) => {
      const c = String.fromCodePoint(cp);
      return [`${c}\u0316\u0301`, `a${c}\u0315`, `\u1100${c}`, `${c}${c.toUpperCase()}`];
    });
    const text = items.filter((s) => !s.includes('\n')).join('\n');
    const pairs = compositionPairs().join('\n');
    expect(pairs.length).toBeGreaterThan(12_000);
    run(
      ['NFC', 'NFD', 'NFKC', 'NFKD', 'Lowercase'].map((type) => ({
        kind: 'normalizer',
        component: { type },
        inputs: [text, pairs, 'ΑΣ Σ ΣΑ İ'],
      })),
    );
  });

  it('Prepend, Replace, Strip, Nmt, ByteLevel and Sequence equal HF on random text', () => {
    const texts = propertyTexts(501, 150, ['▁', '  ', 'x']);
    const components = [
      { type: 'Prepend', prepend: '▁' },
      { type: 'Replace', pattern: { String: ' ' }, content: '▁' },
      { type: 'Replace', pattern: { String: '' }, content: '|' },
      { type: 'Replace', pattern: { Regex: '\\s+' }, content: ' ' },
      { type: 'Replace', pattern: { Regex: 'x*' }, content: '-' },
      { type: 'Replace', pattern: { Regex: '(?i:the)|\\p{N}+' }, content: '#' },
      { type: 'Strip', strip_left: true, strip_right: false },
      { type: 'Strip', strip_left: false, strip_right: true },
      { type: 'Strip', strip_left: true, strip_right: true },
      { type: 'Nmt' },
      { type: 'ByteLevel' },
      {
        type: 'Sequence',
        normalizers: [
          { type: 'NFKC' },
          { type: 'Lowercase' },
          { type: 'Prepend', prepend: '▁' },
          { type: 'Strip', strip_left: false, strip_right: true },
        ],
      },
    ];
    run(components.map((component) => ({ kind: 'normalizer', component, inputs: texts })));
  });

  it('refuses the normalizers of WordPiece and Unigram tokenizers, naming the field', () => {
    for (const type of ['BertNormalizer', 'Precompiled', 'StripAccents']) {
      expect(() =>
        readNormalizer({ type: 'Sequence', normalizers: [{ type: 'NFC' }, { type }] }, 'normalizer'),
      ).toThrow(`tokenizer.json: normalizer.normalizers[1].type "${type}" is not supported`);
    }
    expect(() => readNormalizer({ type: 'Prepend' }, 'normalizer')).toThrow(
      'tokenizer.json: normalizer.prepend must be a string (got undefined)',
    );
    expect(() =>
      readNormalizer({ type: 'Replace', pattern: { Regex: '(?<a>x)\\k<a>' }, content: '' }, 'normalizer'),
    ).toThrow('tokenizer.json: normalizer.pattern.Regex "(?<a>x)\\\\k<a>": backreferences are not supported');
  });
});
