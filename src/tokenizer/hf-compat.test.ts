/**
 * Compatibility with Hugging Face `tokenizers` (the Python package in the project's .venv):
 * files we write must tokenize identically there, and files it writes must load here.
 */
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BYTE_TO_CHAR, bytesToByteLevel } from './bytes.js';
import { pretokenize } from './pretokenize.js';
import { SPECIAL_TOKENS } from './special-tokens.js';
import { englishLikeCorpus, TRICKY_STRINGS } from './test/corpus.js';
import { Tokenizer } from './tokenizer.js';

const repoRoot = fileURLToPath(new URL('../../', import.meta.url));
const pythonPath = join(repoRoot, '.venv', 'bin', 'python');
const SETUP_HINT = 'run `npm run setup` to create .venv with tokenizers==0.22.1';

function runPython(script: string, input: unknown): any {
  if (!existsSync(pythonPath)) throw new Error(`Python venv not found at ${pythonPath}; ${SETUP_HINT}`);
  const r = spawnSync(pythonPath, ['-c', script], {
    input: JSON.stringify(input),
    encoding: 'utf8',
    maxBuffer: 1 << 30,
  });
  if (r.error) throw new Error(`could not run ${pythonPath} (${r.error.message}); ${SETUP_HINT}`);
  if (r.status !== 0) {
    const hint = r.stderr.includes('No module named') ? `; ${SETUP_HINT}` : '';
    throw new Error(`python exited with ${r.status}${hint}:\n${r.stderr}`);
  }
  return JSON.parse(r.stdout);
}

const READ_INPUT = "import json, sys\nreq = json.loads(sys.stdin.buffer.read().decode('utf-8'))\n";

const HF_ENCODE = `${READ_INPUT}
from tokenizers import Tokenizer
tok = Tokenizer.from_file(req['path'])
out = {'ids': [], 'decoded': [], 'decodedSkip': [], 'decodeIds': [], 'size': tok.get_vocab_size(with_added_tokens=True)}
for t in req['texts']:
    ids = tok.encode(t, add_special_tokens=False).ids
    out['ids'].append(ids)
    out['decoded'].append(tok.decode(ids, skip_special_tokens=False))
    out['decodedSkip'].append(tok.decode(ids, skip_special_tokens=True))
for ids in req.get('decode', []):
    out['decodeIds'].append(tok.decode(ids, skip_special_tokens=False))
out['tokenIds'] = [tok.token_to_id(t) for t in req.get('tokens', [])]
json.dump(out, sys.stdout)
`;

const HF_TRAIN = `${READ_INPUT}
from tokenizers import Tokenizer, models, pre_tokenizers, decoders, trainers
tok = Tokenizer(models.BPE())
tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
tok.decoder = decoders.ByteLevel()
trainer = trainers.BpeTrainer(vocab_size=req['vocabSize'], min_frequency=2, special_tokens=req['specials'],
                              initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
tok.train_from_iterator(req['texts'], trainer=trainer)
tok.save(req['path'])
json.dump({'size': tok.get_vocab_size()}, sys.stdout)
`;

const HF_PRETOKENIZE = `${READ_INPUT}
from tokenizers import pre_tokenizers
p = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
json.dump([[s for s, _ in p.pre_tokenize_str(t)] for t in req['texts']], sys.stdout)
`;

const piece = fc.oneof(
  fc.string({ unit: 'grapheme', maxLength: 8 }),
  fc.string({ unit: 'binary', maxLength: 8 }),
  fc.string({ unit: 'binary-ascii', maxLength: 8 }),
  fc.constantFrom(
    ...Object.values(SPECIAL_TOKENS),
    "'s",
    "'ve",
    ' the',
    '\r\n',
    '\u0085',
    '\ufeff',
    '\u3000',
    '2024',
    '🤗',
  ),
  fc.string({ unit: fc.constantFrom(' ', '\n', '\t', '\u2003', '\u00a0', '\u0085'), minLength: 2, maxLength: 40 }),
);
const GENERATED = fc.sample(
  fc.array(piece, { maxLength: 12 }).map((p) => p.join('')),
  { seed: 4242, numRuns: 300 },
);
const TEXTS = [...TRICKY_STRINGS, ...GENERATED];
const hasOurSpecial = (s: string): boolean => Object.values(SPECIAL_TOKENS).some((t) => s.includes(t));

let dir: string;
let ours: Tokenizer;
let oursPath: string;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'lathe-hf-'));
  const corpus = [...englishLikeCorpus(5, 3000), ...TRICKY_STRINGS, ...GENERATED.slice(0, 100)];
  ours = await Tokenizer.train(corpus, { vocabSize: 1200 });
  oursPath = join(dir, 'ours', 'tokenizer.json');
  await ours.save(oursPath);
});

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

function expectSameAsHf(tok: Tokenizer, path: string, texts: readonly string[]): void {
  const hf = runPython(HF_ENCODE, { path, texts });
  texts.forEach((t, i) => {
    expect(tok.encode(t), `encode ${JSON.stringify(t)}`).toEqual(hf.ids[i]);
    expect(tok.decode(hf.ids[i]), `decode ${JSON.stringify(t)}`).toBe(hf.decoded[i]);
    expect(tok.decode(hf.ids[i], { skipSpecial: true })).toBe(hf.decodedSkip[i]);
  });
}

describe('Hugging Face tokenizers compatibility', () => {
  it('uses the expected tokenizers version', () => {
    const v = runPython(`${READ_INPUT}import tokenizers\njson.dump(tokenizers.__version__, sys.stdout)`, {});
    expect(v, SETUP_HINT).toBe('0.22.1');
  });

  it('HF loads our tokenizer.json and produces identical ids and decodes', () => {
    expectSameAsHf(ours, oursPath, TEXTS);
    const hf = runPython(HF_ENCODE, { path: oursPath, texts: [] });
    expect(hf.size).toBe(ours.vocabSize);
  });

  it('decodes cut UTF-8 the same way as HF', () => {
    const b = (x: number): number => 10 + x; // byte tokens of our layout
    const sequences = [
      [b(0xf0), b(0x9f)],
      [b(0xf0), b(0x9f), b(0xa4)],
      [b(0xa4), b(0x97), b(0x41)],
      [b(0xe2), b(0x82), b(0x41), b(0xe2)],
      [b(0xc3), b(0xc3), b(0xa9)],
      [b(0xed), b(0xa0), b(0x80)], // encoded surrogate
      [b(0xff), b(0xfe), ours.special.bos, b(0xe9)],
      [b(0xef), b(0xbb), b(0xbf), b(0x41)], // BOM must survive
    ];
    const hf = runPython(HF_ENCODE, { path: oursPath, texts: [], decode: sequences });
    sequences.forEach((ids, i) => expect(ours.decode(ids)).toBe(hf.decodeIds[i]));
  });

  it('pre-tokenizes like HF for every character class, sampled across all of Unicode', () => {
    const cps: number[] = [];
    for (let cp = 0; cp < 0x3100; cp++) cps.push(cp);
    for (let cp = 0x3100; cp < 0x110000; cp += 61) cps.push(cp);
    cps.push(0xfeff, 0x1680, 0x10940, 0x10959, 0x1e6c0, 0x323b0, 0x33479, 0x3347a, 0x11de0, 0x16ff4);
    const texts = cps
      .filter((cp) => cp < 0xd800 || cp > 0xdfff)
      .map((cp) => String.fromCodePoint(cp))
      .map((c) => `a${c}${c}1${c} ${c}!${c}\t${c}  ${c}'s${c}`);
    const hf: string[][] = runPython(HF_PRETOKENIZE, { texts });
    const spell = (w: string): string => bytesToByteLevel(Buffer.from(w, 'utf8'));
    texts.forEach((t, i) => expect(pretokenize(t).map(spell), JSON.stringify(t)).toEqual(hf[i]));
  });

  it('loads a tokenizer trained by HF tokenizers (with our special tokens) and encodes identically', async () => {
    const path = join(dir, 'hf-trained.json');
    const specials = ['<|endoftext|>', ...Object.values(SPECIAL_TOKENS).reverse()];
    runPython(HF_TRAIN, { path, texts: englishLikeCorpus(8, 2000), vocabSize: 700, specials });
    const tok = await Tokenizer.load(path);
    expect(tok.vocabSize).toBe(700);
    expect(tok.special.fimSuffix).toBe(1); // HF put the specials first, in the order given
    expectSameAsHf(tok, path, TEXTS);
    // Saving keeps the behaviour.
    const resaved = join(dir, 'hf-resaved.json');
    await tok.save(resaved);
    expectSameAsHf(await Tokenizer.load(resaved), resaved, TEXTS.slice(0, 60));
  });

  it('loads a GPT-2-style HF tokenizer without our specials, appending them', async () => {
    const path = join(dir, 'gpt2-style.json');
    runPython(HF_TRAIN, { path, texts: englishLikeCorpus(9, 1500), vocabSize: 600, specials: ['<|endoftext|>'] });
    const tok = await Tokenizer.load(path);
    expect(tok.special.bos).toBe(600);
    expect(tok.vocabSize).toBe(610);
    expect(tok.encode('hi<|endoftext|>')).toContain(0);
    expectSameAsHf(
      tok,
      path,
      TEXTS.filter((t) => !hasOurSpecial(t)),
    );
  });

  it('matches HF on options we only meet in foreign files', async () => {
    const base = JSON.parse(JSON.stringify(ours.toJSON()));
    const variants: Record<string, (j: any) => void> = {
      prefixSpace: (j) => (j.pre_tokenizer.add_prefix_space = true),
      noRegex: (j) => (j.pre_tokenizer.use_regex = false),
      ignoreMerges: (j) => (j.model.ignore_merges = true),
      addedTokenOptions: (j) => {
        const flags = { single_word: false, lstrip: false, rstrip: false, normalized: false, special: false };
        j.added_tokens.push(
          { ...flags, id: 1200, content: '<mask>', lstrip: true, rstrip: true, special: true },
          { ...flags, id: 1201, content: 'hello', single_word: true, normalized: true },
          { ...flags, id: 1202, content: 'ell' },
          { ...flags, id: 1203, content: 'ood', normalized: true },
        );
      },
    };
    const extra = [
      'a <mask> b  <mask>\t\tc<mask>',
      'hello yellow hello, hello_world ahello',
      'good food mood',
      '<mask><mask>  <mask>',
    ];
    for (const [name, mutate] of Object.entries(variants)) {
      const j = JSON.parse(JSON.stringify(base));
      mutate(j);
      const path = join(dir, `variant-${name}.json`);
      await writeFile(path, JSON.stringify(j));
      expectSameAsHf(Tokenizer.fromJSON(j), path, [...TEXTS.slice(0, 80), ...extra]);
    }
  });

  it('applies merges exactly like HF even when the merge list is not in training order', async () => {
    const vocab: Record<string, number> = {};
    BYTE_TO_CHAR.forEach((c, i) => (vocab[c] = i));
    for (const t of ['ab', 'aba', 'bab', 'abab', 'ba']) vocab[t] = Object.keys(vocab).length;
    const json = {
      version: '1.0',
      added_tokens: [],
      normalizer: null,
      pre_tokenizer: { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true },
      post_processor: null,
      decoder: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true },
      model: {
        type: 'BPE',
        vocab,
        merges: [
          ['ab', 'a'],
          ['b', 'ab'],
          ['a', 'b'],
          ['ab', 'ab'],
          ['b', 'a'],
          ['a', 'ba'],
        ],
      },
    };
    const path = join(dir, 'odd-merges.json');
    await writeFile(path, JSON.stringify(json));
    const texts = ['abab', 'ababab', 'aab', 'bab', 'abba', 'aba', 'babab', 'abababababa', 'bbaab'];
    expectSameAsHf(Tokenizer.fromJSON(json), path, texts);
  });
});
