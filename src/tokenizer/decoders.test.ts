/** Decoders against HF `tokenizers` 0.22.1 (`decoder.decode(tokens)`) on random token lists. */
import { describe, expect, it } from 'vitest';
import { readDecoder } from './decoders.js';
import { seededRandom } from './test/corpus.js';
import { hfComponents, type ComponentCase } from './test/python.js';

// Byte-level characters, byte-fallback tokens (valid and cut UTF-8), Metaspace and suffix marks.
const POOL = [
  '▁',
  '▁▁',
  '▁the',
  'the▁',
  ' ',
  '  x ',
  'ĠHello',
  'Ċ',
  'ðŁ',
  'ĺ',
  'é',
  'ab',
  '</w>',
  'cat</w>',
  '<0x41>',
  '<0xE2>',
  '<0x82>',
  '<0xAC>',
  '<0xF0>',
  '<0x9F>',
  '<0x0A>',
  '<0xff>',
  '<0x4G>',
  '<s>',
  '<|endoftext|>',
  '',
  '日本',
  '##ing',
];

function tokenLists(seed: number, count: number): string[][] {
  const rand = seededRandom(seed);
  const lists: string[][] = [[], ['▁'], ['<0xE2>', '<0x82>', '<0xAC>'], ['▁▁a', '▁b']];
  while (lists.length < count) {
    const n = 1 + Math.floor(rand() * 8);
    lists.push(Array.from({ length: n }, () => POOL[Math.floor(rand() * POOL.length)]!));
  }
  return lists;
}

describe('decoders', () => {
  it('ByteLevel, ByteFallback, Fuse, Strip, Replace, Metaspace, BPEDecoder and Sequence equal HF', () => {
    const inputs = tokenLists(701, 200);
    const components: Array<Record<string, unknown>> = [
      { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true },
      { type: 'ByteFallback' },
      { type: 'Fuse' },
      { type: 'Strip', content: ' ', start: 1, stop: 0 },
      { type: 'Strip', content: '▁', start: 2, stop: 1 },
      { type: 'Replace', pattern: { String: '▁' }, content: ' ' },
      { type: 'Replace', pattern: { Regex: '\\s+' }, content: '_' },
      { type: 'Metaspace', replacement: '▁', prepend_scheme: 'always', split: true },
      { type: 'Metaspace', replacement: '▁', prepend_scheme: 'first', split: false },
      { type: 'Metaspace', replacement: '▁', prepend_scheme: 'never', split: true },
      { type: 'BPEDecoder', suffix: '</w>' },
      {
        type: 'Sequence',
        decoders: [
          { type: 'Replace', pattern: { String: '▁' }, content: ' ' },
          { type: 'ByteFallback' },
          { type: 'Fuse' },
          { type: 'Strip', content: ' ', start: 1, stop: 0 },
        ],
      },
      {
        type: 'Sequence',
        decoders: [{ type: 'ByteFallback' }, { type: 'ByteLevel', add_prefix_space: false, trim_offsets: false }],
      },
    ];
    const cases: ComponentCase[] = components.map((component) => ({ kind: 'decoder', component, inputs }));
    const hf = hfComponents(cases);
    cases.forEach((c, k) => {
      expect(hf[k]!.error, JSON.stringify(c.component)).toBeUndefined();
      const decode = readDecoder(c.component, 'decoder');
      inputs.forEach((tokens, i) => {
        if (hf[k]!.results![i] === null) return; // HF's Strip panics when it would cut more than the token
        expect(decode(tokens).join(''), `${JSON.stringify(c.component)} on ${JSON.stringify(tokens)}`).toBe(
          hf[k]!.results![i],
        );
      });
    });
  });

  it('refuses the decoders of other models, naming the field', () => {
    for (const type of ['WordPiece', 'CTC']) {
      expect(() => readDecoder({ type: 'Sequence', decoders: [{ type: 'Fuse' }, { type }] }, 'decoder')).toThrow(
        `tokenizer.json: decoder.decoders[1].type "${type}" is not supported (supported: ByteLevel, Metaspace, ByteFallback, Fuse, Strip, Replace, Sequence, BPEDecoder)`,
      );
    }
    expect(() => readDecoder({ type: 'Strip', content: ' ', start: -1, stop: 0 }, 'decoder')).toThrow(
      'tokenizer.json: decoder.start must be a non-negative integer (got -1)',
    );
  });
});
