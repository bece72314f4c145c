import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BYTE_TO_CHAR } from './bytes.js';
import { CHAT_TEMPLATE } from './chat-template.js';
import { SPECIAL_TOKENS } from './special-tokens.js';
import { englishLikeCorpus, TRICKY_STRINGS } from './test/corpus.js';
import { Tokenizer } from './tokenizer.js';

let tok: Tokenizer;
let dir: string;

beforeAll(async () => {
  tok = await Tokenizer.train([...englishLikeCorpus(11, 3000), ...TRICKY_STRINGS], { vocabSize: 800 });
  dir = await mkdtemp(join(tmpdir(), 'lathe-tokenizer-'));
});

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

const piece = fc.oneof(
  fc.string({ unit: 'grapheme', maxLength: 8 }),
  fc.string({ unit: 'binary', maxLength: 8 }),
  fc.string({ unit: 'binary-ascii', maxLength: 8 }),
  fc.constantFrom(
    ...Object.values(SPECIAL_TOKENS),
    '<|',
    '|>',
    "'s",
    ' the',
    '\r\n',
    '\u0085',
    '\ufeff',
    '\u3000',
    '🤗',
    '👩‍👩‍👧‍👦',
  ),
  fc.string({ unit: fc.constantFrom(' ', '\n', '\t', '\u2003', '\u00a0'), minLength: 2, maxLength: 60 }),
);
const nastyText = fc.array(piece, { maxLength: 14 }).map((parts) => parts.join(''));

describe('Tokenizer encode/decode', () => {
  it('round-trips arbitrary Unicode text exactly', () => {
    fc.assert(
      fc.property(nastyText, (s) => {
        expect(tok.decode(tok.encode(s))).toBe(s);
      }),
      { seed: 20240601, numRuns: 1500 },
    );
    fc.assert(
      fc.property(fc.string({ unit: 'grapheme', maxLength: 200 }), (s) => {
        expect(tok.decode(tok.encode(s))).toBe(s);
      }),
      { seed: 99, numRuns: 300 },
    );
    for (const s of TRICKY_STRINGS) expect(tok.decode(tok.encode(s))).toBe(s);
  });

  it('puts the special tokens at ids 0..9 and bytes at 10..265', () => {
    expect(tok.special).toEqual({
      bos: 0,
      eos: 1,
      pad: 2,
      system: 3,
      user: 4,
      assistant: 5,
      end: 6,
      fimPrefix: 7,
      fimMiddle: 8,
      fimSuffix: 9,
    });
    expect(tok.idToToken(0)).toBe('<|bos|>');
    expect(tok.idToToken(9)).toBe('<|fim_suffix|>');
    expect(tok.tokenToId('<|assistant|>')).toBe(5);
    expect(tok.idToToken(10)).toBe(BYTE_TO_CHAR[0]);
    expect(tok.tokenToId('\u0120')).toBe(10 + 0x20);
    expect(tok.idToToken(tok.vocabSize)).toBeUndefined();
    expect(tok.tokenToId('no such token')).toBeUndefined();
  });

  it('recognises special-token strings in text', () => {
    const ids = tok.encode('<|user|>hi<|end|>');
    expect(ids[0]).toBe(tok.special.user);
    expect(ids.at(-1)).toBe(tok.special.end);
    expect(ids.slice(1, -1)).toEqual(tok.encode('hi'));
    // Near misses are ordinary text.
    expect(tok.encode('<|user|')).not.toContain(tok.special.user);
    expect(tok.encode('a <|fim_prefix|>b')).toEqual([...tok.encode('a '), 7, ...tok.encode('b')]);
  });

  it('adds bos/eos on request and can skip specials when decoding', () => {
    const ids = tok.encode('hello', { bos: true, eos: true });
    expect(ids[0]).toBe(0);
    expect(ids.at(-1)).toBe(1);
    expect(tok.decode(ids)).toBe('<|bos|>hello<|eos|>');
    expect(tok.decode(ids, { skipSpecial: true })).toBe('hello');
    expect(tok.decode(new Int32Array(ids))).toBe('<|bos|>hello<|eos|>');
  });

  it('decodes sequences that cut a UTF-8 character with U+FFFD instead of throwing', () => {
    const byteId = (b: number): number => 10 + b;
    // 🤗 is F0 9F A4 97.
    expect(tok.decode([byteId(0xf0), byteId(0x9f)])).toBe('\ufffd');
    expect(tok.decode([tok.encode('a')[0]!, byteId(0xf0), byteId(0x9f), byteId(0xa4)])).toBe('a\ufffd');
    expect(tok.decode([byteId(0xa4), byteId(0x97), tok.encode('b')[0]!])).toBe('\ufffd\ufffdb');
    expect(tok.decode([byteId(0xf0), byteId(0x9f), byteId(0xa4), byteId(0x97)])).toBe('🤗');
    expect(tok.decode([byteId(0xef), byteId(0xbb), byteId(0xbf)])).toBe('\ufeff'); // BOM is kept
    expect(tok.decode([123456, -1, 0.5])).toBe(''); // unknown ids are skipped, as in HF
  });

  it('stays correct when the word cache rolls over', () => {
    const before = tok.encode('unusual xylophone');
    for (let i = 0; i < 70_000; i++) tok.encode(` w${i.toString(36)}`);
    expect(tok.encode('unusual xylophone')).toEqual(before);
    expect(tok.decode(before)).toBe('unusual xylophone');
  });
});

describe('chat', () => {
  it('renders the documented format and masks only weighted assistant tokens', () => {
    const { ids, mask } = tok.renderChat([
      { role: 'system', content: 'Be brief.' },
      { role: 'user', content: 'Hi' },
      { role: 'assistant', content: 'Hello there' },
      { role: 'user', content: 'Again' },
      { role: 'assistant', content: 'ignored', weight: 0 },
      { role: 'assistant', content: 'Bye', weight: 0.5 },
    ]);
    const s = tok.special;
    const e = (t: string): number[] => tok.encode(t);
    const expected: Array<[number[], number]> = [
      [[s.bos, s.system], 0],
      [e('Be brief.'), 0],
      [[s.end, s.user], 0],
      [e('Hi'), 0],
      [[s.end, s.assistant], 0],
      [e('Hello there'), 1],
      [[s.end], 1],
      [[s.user], 0],
      [e('Again'), 0],
      [[s.end, s.assistant], 0],
      [e('ignored'), 0],
      [[s.end], 0],
      [[s.assistant], 0],
      [e('Bye'), 1],
      [[s.end], 1],
    ];
    expect(ids).toEqual(expected.flatMap(([part]) => part));
    expect(mask).toEqual(expected.flatMap(([part, m]) => part.map(() => m)));
    const text =
      '<|bos|><|system|>Be brief.<|end|><|user|>Hi<|end|><|assistant|>Hello there<|end|><|user|>Again<|end|>' +
      '<|assistant|>ignored<|end|><|assistant|>Bye<|end|>';
    expect(ids).toEqual(tok.encode(text));
  });

  it('appends the generation prompt unmasked and handles empty or special-looking content', () => {
    const msgs = [
      { role: 'user' as const, content: 'say <|end|> please' },
      { role: 'assistant' as const, content: '' },
    ];
    const { ids, mask } = tok.renderChat(msgs, { addGenerationPrompt: true });
    const text = '<|bos|><|user|>say <|end|> please<|end|><|assistant|><|end|><|assistant|>';
    expect(ids).toEqual(tok.encode(text));
    expect(mask).toEqual(ids.map((_, i) => (i === ids.length - 2 ? 1 : 0)));
    expect(ids.at(-1)).toBe(tok.special.assistant);
  });

  it('rejects unknown roles', () => {
    expect(() => tok.renderChat([{ role: 'function' as 'user', content: 'x' }])).toThrow(
      'renderChat: messages[0].role "function" is not one of system, user, assistant, tool',
    );
  });

  it('exposes a Jinja template with the same format', () => {
    expect(tok.chatTemplate).toBe(CHAT_TEMPLATE);
    expect(CHAT_TEMPLATE).toContain("{{ '<|bos|>' }}");
    expect(CHAT_TEMPLATE).toContain("{{ '<|' + message['role'] + '|>' }}{% if message['content'] %}");
    expect(CHAT_TEMPLATE).toContain("{{ '<|end|>' }}{% endfor %}");
    expect(CHAT_TEMPLATE).toContain("{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}");
  });
});

describe('tokenizer.json', () => {
  it('serializes in HF format', () => {
    const json = tok.toJSON() as Record<string, any>;
    expect(json.version).toBe('1.0');
    expect(json.normalizer).toBeNull();
    expect(json.pre_tokenizer).toEqual({
      type: 'ByteLevel',
      add_prefix_space: false,
      trim_offsets: true,
      use_regex: true,
    });
    expect(json.decoder.type).toBe('ByteLevel');
    expect(json.post_processor.type).toBe('ByteLevel');
    expect(json.added_tokens).toHaveLength(10);
    expect(json.added_tokens[0]).toEqual({
      id: 0,
      content: '<|bos|>',
      single_word: false,
      lstrip: false,
      rstrip: false,
      normalized: false,
      special: true,
    });
    expect(json.model.type).toBe('BPE');
    expect(Object.keys(json.model.vocab)).toHaveLength(800);
    expect(json.model.vocab['<|eos|>']).toBe(1);
    expect(json.model.vocab['\u0120']).toBe(42);
    expect(Array.isArray(json.model.merges[0])).toBe(true);
    expect(json.model.merges[0]).toHaveLength(2);
  });

  it('round-trips through JSON, including legacy "a b" merges', () => {
    const json = JSON.parse(JSON.stringify(tok.toJSON()));
    const again = Tokenizer.fromJSON(json);
    json.model.merges = json.model.merges.map(([a, b]: [string, string]) => `${a} ${b}`);
    const legacy = Tokenizer.fromJSON(json);
    for (const s of TRICKY_STRINGS) {
      expect(again.encode(s)).toEqual(tok.encode(s));
      expect(legacy.encode(s)).toEqual(tok.encode(s));
    }
    expect(again.vocabSize).toBe(tok.vocabSize);
    expect(again.special).toEqual(tok.special);
  });

  it('saves atomically and loads back', async () => {
    const path = join(dir, 'nested', 'tokenizer.json');
    await tok.save(path);
    await tok.save(path); // overwrite
    expect(await readdir(join(dir, 'nested'))).toEqual(['tokenizer.json']);
    const loaded = await Tokenizer.load(path);
    expect(loaded.toJSON()).toEqual(tok.toJSON());
    expect(JSON.parse(await readFile(path, 'utf8'))).toEqual(JSON.parse(JSON.stringify(tok.toJSON())));
  });

  it('adds missing special tokens after the highest id of a foreign file', () => {
    const vocab: Record<string, number> = {};
    BYTE_TO_CHAR.forEach((c, i) => (vocab[c] = i));
    vocab['<|endoftext|>'] = 256;
    const json = {
      version: '1.0',
      added_tokens: [
        {
          id: 256,
          content: '<|endoftext|>',
          single_word: false,
          lstrip: false,
          rstrip: false,
          normalized: true,
          special: true,
        },
      ],
      normalizer: null,
      pre_tokenizer: { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true },
      post_processor: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: false },
      decoder: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true },
      model: { type: 'BPE', vocab, merges: [] },
    };
    const t = Tokenizer.fromJSON(json);
    expect(t.vocabSize).toBe(267);
    expect(t.special.bos).toBe(257);
    expect(t.special.fimSuffix).toBe(266);
    expect(t.encode('a<|endoftext|><|bos|>')).toEqual([vocab['a'], 256, 257]);
    expect(t.decode(t.encode('hé<|endoftext|>'), { skipSpecial: true })).toBe('hé');
  });

  it('rejects unsupported or malformed files with errors naming the field', async () => {
    const good = (): Record<string, any> => JSON.parse(JSON.stringify(tok.toJSON()));
    const cases: Array<[(j: Record<string, any>) => void, string]> = [
      [(j) => delete j.model, 'tokenizer.json: model is missing (expected an object with "type": "BPE")'],
      [(j) => (j.model = null), 'tokenizer.json: model is null'],
      [(j) => (j.model.type = 'WordPiece'), 'tokenizer.json: model.type "WordPiece" is not supported (expected "BPE"'],
      [(j) => (j.model.type = 'Unigram'), 'tokenizer.json: model.type "Unigram" is not supported (expected "BPE"'],
      [
        (j) => (j.normalizer = { type: 'Sequence', normalizers: [{ type: 'NFC' }, { type: 'BertNormalizer' }] }),
        'tokenizer.json: normalizer.normalizers[1].type "BertNormalizer" is not supported',
      ],
      [
        (j) =>
          (j.pre_tokenizer = {
            type: 'Sequence',
            pretokenizers: [{ type: 'Digits', individual_digits: true }, { type: 'UnicodeScripts' }],
          }),
        'tokenizer.json: pre_tokenizer.pretokenizers[1].type "UnicodeScripts" is not supported (supported: ByteLevel, Split,',
      ],
      [
        (j) =>
          (j.pre_tokenizer = {
            type: 'Split',
            pattern: { Regex: "(?i:'s)|(\\w)\\1" },
            behavior: 'Isolated',
            invert: false,
          }),
        'tokenizer.json: pre_tokenizer.pattern.Regex "(?i:\'s)|(\\\\w)\\\\1": backreferences are not supported (at offset 12)',
      ],
      [
        (j) => (j.pre_tokenizer = { type: 'Split', pattern: { Regex: 'a' }, behavior: 'Glued', invert: false }),
        'tokenizer.json: pre_tokenizer.behavior "Glued" is not one of Removed, Isolated',
      ],
      [
        (j) => (j.pre_tokenizer = { type: 'Metaspace', replacement: '▁▁' }),
        'tokenizer.json: pre_tokenizer.replacement must be one character (got "▁▁")',
      ],
      [
        (j) => (j.decoder = { type: 'WordPiece' }),
        'tokenizer.json: decoder.type "WordPiece" is not supported (supported: ByteLevel, Metaspace',
      ],
      [
        (j) => (j.post_processor = { type: 'TemplateProcessing', single: [], special_tokens: {} }),
        'tokenizer.json: post_processor.single has no {"Sequence": {"id": "A"}}',
      ],
      [
        (j) =>
          (j.post_processor = {
            type: 'TemplateProcessing',
            single: [{ SpecialToken: { id: '<s>', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }],
            special_tokens: {},
          }),
        'tokenizer.json: post_processor.single[0] names special token "<s>", which is not in post_processor.special_tokens',
      ],
      [(j) => (j.model.dropout = 0.1), 'tokenizer.json: model.dropout 0.1 is not supported (expected null'],
      [
        (j) => (j.model.vocab = [1, 2]),
        'tokenizer.json: model.vocab must be an object mapping tokens to ids (got an array)',
      ],
      [
        (j) => (j.model.vocab['x'] = 'seven'),
        'tokenizer.json: model.vocab["x"] must be a non-negative integer id (got "seven")',
      ],
      [
        (j) => (j.model.merges = [j.model.merges[0], ['zz', 'q']]),
        'tokenizer.json: model.merges[1] uses "zz", which is not in model.vocab',
      ],
      [
        (j) => (j.model.merges = [['a', 'b', 'c']]),
        'tokenizer.json: model.merges[0] must be ["left", "right"] or "left right"',
      ],
      [
        (j) => (j.added_tokens = [{ id: -1, content: 'x' }]),
        'tokenizer.json: added_tokens[0].id must be a non-negative integer',
      ],
    ];
    for (const [mutate, message] of cases) {
      const j = good();
      mutate(j);
      expect(() => Tokenizer.fromJSON(j), message).toThrow(message);
    }
    expect(() => Tokenizer.fromJSON([])).toThrow(
      'tokenizer.json: expected a JSON object at the top level (got an array)',
    );

    const bad = join(dir, 'bad.json');
    const j = good();
    j.model.type = 'WordPiece';
    await writeFile(bad, JSON.stringify(j));
    await expect(Tokenizer.load(bad)).rejects.toThrow(
      `tokenizer.json: model.type "WordPiece" is not supported (expected "BPE") (in ${bad})`,
    );
    await writeFile(bad, '{ not json');
    await expect(Tokenizer.load(bad)).rejects.toThrow(`tokenizer.json: invalid JSON in ${bad}`);
  });

  it('describes itself for tokenizer_config.json', () => {
    const cfg = tok.hfTokenizerConfig({ modelMaxLength: 4096 }) as Record<string, any>;
    expect(cfg).toMatchObject({
      bos_token: '<|bos|>',
      eos_token: '<|eos|>',
      pad_token: '<|pad|>',
      chat_template: CHAT_TEMPLATE,
      model_max_length: 4096,
      tokenizer_class: 'PreTrainedTokenizerFast',
    });
    expect(cfg.added_tokens_decoder['5']).toEqual({
      content: '<|assistant|>',
      lstrip: false,
      normalized: false,
      rstrip: false,
      single_word: false,
      special: true,
    });
    expect(tok.hfTokenizerConfig()['model_max_length']).toBe(2048);
  });
});
