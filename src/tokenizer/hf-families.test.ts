/**
 * The tokenizer.json pipelines of real model families (Llama 3, Qwen2, SmolLM2, Llama 2, Mistral,
 * and two mixes of the remaining components), trained here by HF `tokenizers` in each family's
 * shape (test/hf_fixtures.py): Lathe must give HF's ids, with and without special tokens, and
 * HF's decodes, on random Unicode and on real text; transformers must give the same input_ids as
 * `encode(text, { addSpecialTokens: true })` of the folder.
 */
import { cp, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadHfTokenizer } from './hf-folder.js';
import { SPECIAL_TOKENS } from './special-tokens.js';
import { Tokenizer } from './tokenizer.js';
import { READ_INPUT, repoRoot, runPython } from './test/python.js';
import { propertyTexts, realTexts } from './test/unicode-texts.js';
import { seededRandom } from './test/corpus.js';

interface Family {
  name: string;
  /** Strings of the family's added tokens, put inline in the random texts. */
  inline: string[];
  /** decode(encode(text)) gives back `roundTrip(text)` (texts without inline tokens), or no promise (null). */
  roundTrip: ((text: string) => string) | null;
  /**
   * transformers 5 rebuilds the pipeline of some tokenizer classes from code (GPT2Tokenizer drops
   * SmolLM2's Digits, LlamaTokenizer swaps Llama 2's Prepend/Replace normalizer for a Metaspace):
   * those folders are compared as PreTrainedTokenizerFast, which uses tokenizer.json as it is.
   */
  transformersClassRebuilds?: boolean;
}

const FAMILIES: Family[] = [
  {
    name: 'llama3',
    inline: ['<|begin_of_text|>', '<|eot_id|>', '<|start_header_id|>'],
    roundTrip: (t) => t,
  },
  { name: 'qwen2', inline: ['<|im_start|>', '<|im_end|>', '<|endoftext|>'], roundTrip: null },
  {
    name: 'smollm2',
    inline: ['<|im_start|>', '<|endoftext|>'],
    roundTrip: (t) => t,
    transformersClassRebuilds: true,
  },
  {
    name: 'llama2',
    inline: ['<s>', '</s>', '<unk>'],
    roundTrip: (t) => t.replaceAll('▁', ' '),
    transformersClassRebuilds: true,
  },
  { name: 'llama2-transformers', inline: ['<s>', '</s>'], roundTrip: null },
  { name: 'mistral', inline: ['<s>', '[INST]', '[/INST]'], roundTrip: null },
  { name: 'wordpiece-like', inline: ['[CLS]', 'hello world', '  pad'], roundTrip: null },
  { name: 'regex-mix', inline: ['<|endoftext|>', 'résumé', '::'], roundTrip: null },
];

const HF_ENCODE = `${READ_INPUT}
from tokenizers import Tokenizer
out = []
for fam in req['families']:
    tok = Tokenizer.from_file(fam['path'])
    r = {'ids': [], 'withSpecial': [], 'decoded': [], 'decodedSkip': [], 'decodeIds': []}
    for t in fam['texts']:
        ids = tok.encode(t, add_special_tokens=False).ids
        r['ids'].append(ids)
        r['withSpecial'].append(tok.encode(t).ids)
        r['decoded'].append(tok.decode(ids, skip_special_tokens=False))
        r['decodedSkip'].append(tok.decode(ids, skip_special_tokens=True))
    for ids in fam['decode']:
        r['decodeIds'].append(tok.decode(ids, skip_special_tokens=False))
    out.append(r)
json.dump(out, sys.stdout)
`;

const TRANSFORMERS_ENCODE = `${READ_INPUT}
from transformers import AutoTokenizer
out = []
for fam in req['families']:
    tok = AutoTokenizer.from_pretrained(fam['dir'])
    out.append({'ids': [tok(t)['input_ids'] for t in fam['texts']], 'cls': type(tok).__name__})
json.dump(out, sys.stdout)
`;

let dir: string;
let texts: Map<string, string[]>;
let hf: Map<string, any>;
let randomIds: Map<string, number[][]>;
const hasLatheSpecial = (s: string): boolean => Object.values(SPECIAL_TOKENS).some((t) => s.includes(t));

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'lathe-hf-families-'));
  const training: string[] = [];
  const corpus = (await import(pathToFileURL(join(repoRoot, 'bench', 'corpus.mjs')).href)) as {
    generateCorpus: (bytes: number, emit: (doc: string) => void, seed: number) => unknown;
  };
  corpus.generateCorpus(300_000, (d) => training.push(d), 7);
  const real = await realTexts(99, 60_000);
  training.push(...real.slice(0, 40));
  runPython(
    join(repoRoot, 'src', 'tokenizer', 'test', 'hf_fixtures.py'),
    { out: dir, corpus: training },
    { file: true },
  );

  texts = new Map();
  randomIds = new Map();
  FAMILIES.forEach((f, i) => {
    const generated = propertyTexts(1000 + i, 300, f.inline).filter((t) => !hasLatheSpecial(t));
    texts.set(f.name, [...generated, ...real]);
  });
  const requests: Array<{ path: string; texts: string[]; decode: number[][] }> = [];
  for (const f of FAMILIES) {
    const path = join(dir, f.name, 'tokenizer.json');
    const size = (await Tokenizer.load(path)).vocabSize - Object.keys(SPECIAL_TOKENS).length;
    // Random id runs: cut UTF-8, lone byte-fallback tokens, special tokens among text.
    const rand = seededRandom(77);
    const runs: number[][] = [];
    for (let k = 0; k < 120; k++) {
      const run: number[] = [];
      const n = 1 + Math.floor(rand() * 10);
      for (let j = 0; j < n; j++) run.push(Math.floor(rand() * size));
      runs.push(run);
    }
    randomIds.set(f.name, runs);
    requests.push({ path, texts: texts.get(f.name)!, decode: runs });
  }
  const results = runPython(HF_ENCODE, { families: requests }) as any[];
  hf = new Map(FAMILIES.map((f, i) => [f.name, results[i]]));
}, 600_000);

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('HF tokenizer.json pipelines of model families', () => {
  for (const family of FAMILIES) {
    it(`${family.name}: ids and decodes equal HF tokenizers on random Unicode and real text`, async () => {
      const path = join(dir, family.name, 'tokenizer.json');
      const tok = await Tokenizer.load(path);
      const want = hf.get(family.name);
      const all = texts.get(family.name)!;
      all.forEach((t, i) => {
        const ids = tok.encode(t);
        expect(ids, `${family.name} encode ${JSON.stringify(t)}`).toEqual(want.ids[i]);
        expect(tok.encode(t, { addSpecialTokens: true }), `with special tokens ${JSON.stringify(t)}`).toEqual(
          want.withSpecial[i],
        );
        expect(tok.decode(ids), `decode ${JSON.stringify(t)}`).toBe(want.decoded[i]);
        expect(tok.decode(ids, { skipSpecial: true }), `decode skip ${JSON.stringify(t)}`).toBe(want.decodedSkip[i]);
      });
      randomIds.get(family.name)!.forEach((ids, i) => {
        expect(tok.decode(ids), `decode ${JSON.stringify(ids)}`).toBe(want.decodeIds[i]);
      });
      if (family.roundTrip !== null) {
        for (const t of all) {
          if (family.inline.some((s) => t.includes(s))) continue;
          expect(tok.decode(tok.encode(t)), `round trip ${JSON.stringify(t)}`).toBe(family.roundTrip(t));
        }
      }
    });
  }

  it('transformers gives the same input_ids as encode(text, { addSpecialTokens: true }) of the folder', async () => {
    const requests: Array<{ dir: string; texts: string[] }> = [];
    for (const f of FAMILIES) {
      let folder = join(dir, f.name);
      if (f.transformersClassRebuilds) {
        const copy = join(dir, `${f.name}-as-file`);
        await cp(folder, copy, { recursive: true });
        const configPath = join(copy, 'tokenizer_config.json');
        const config = JSON.parse(await readFile(configPath, 'utf8'));
        await writeFile(configPath, JSON.stringify({ ...config, tokenizer_class: 'PreTrainedTokenizerFast' }));
        folder = copy;
      }
      requests.push({ dir: folder, texts: texts.get(f.name)!.slice(0, 150) });
    }
    const results = runPython(TRANSFORMERS_ENCODE, { families: requests }) as Array<{ ids: number[][] }>;
    for (let k = 0; k < FAMILIES.length; k++) {
      const tok = await loadHfTokenizer(requests[k]!.dir);
      requests[k]!.texts.forEach((t, i) => {
        expect(tok.encode(t, { addSpecialTokens: true }), `${FAMILIES[k]!.name} ${JSON.stringify(t)}`).toEqual(
          results[k]!.ids[i],
        );
      });
    }
  });

  it('maps bos, eos and pad to the model tokens named by tokenizer_config.json', async () => {
    const llama3 = await loadHfTokenizer(join(dir, 'llama3'));
    expect(llama3.specialTokens.bos).toBe('<|begin_of_text|>');
    expect(llama3.special.bos).toBe(llama3.tokenToId('<|begin_of_text|>'));
    expect(llama3.special.eos).toBe(llama3.tokenToId('<|end_of_text|>'));
    expect(llama3.hf?.chatTemplate).toContain('<|start_header_id|>');
    // Lathe's chat rendering starts with the model's bos; its role tokens are appended.
    const chat = llama3.renderChat([{ role: 'user', content: 'hi' }]);
    expect(chat.ids[0]).toBe(llama3.special.bos);
    expect(llama3.chatTemplate.startsWith("{{ '<|begin_of_text|>' }}")).toBe(true);
    expect(llama3.special.user).toBeGreaterThanOrEqual(1505);
    // A run saves the tokenizer and loads it back with Tokenizer.load: the same ids and specials.
    const saved = join(dir, 'llama3-saved.json');
    await llama3.save(saved);
    const back = await Tokenizer.load(saved);
    expect(back.special).toEqual(llama3.special);
    expect(back.vocabSize).toBe(llama3.vocabSize);
    expect(back.encode('Hello world<|eot_id|>', { addSpecialTokens: true })).toEqual(
      llama3.encode('Hello world<|eot_id|>', { addSpecialTokens: true }),
    );

    const qwen = await loadHfTokenizer(join(dir, 'qwen2'));
    expect(qwen.specialTokens.eos).toBe('<|im_end|>');
    expect(qwen.specialTokens.pad).toBe('<|endoftext|>');
    expect(qwen.specialTokens.bos).toBe(SPECIAL_TOKENS.bos); // Qwen has none: Lathe's is appended
    expect(qwen.hfTokenizerConfig()).toMatchObject({ eos_token: '<|im_end|>', pad_token: '<|endoftext|>' });

    const llama2 = await loadHfTokenizer(join(dir, 'llama2'));
    expect(llama2.hfTokenizerConfig()).toMatchObject({ bos_token: '<s>', eos_token: '</s>', unk_token: '<unk>' });
    expect(llama2.hf).toMatchObject({ addBosToken: true, addEosToken: false, tokenizerClass: 'LlamaTokenizer' });
    expect(llama2.encode('hi', { addSpecialTokens: true })[0]).toBe(1);
    // add_eos_token: true, but transformers 5 keeps tokenizer.json's post-processor (bos only).
    const mistral = await loadHfTokenizer(join(dir, 'mistral'));
    expect(mistral.encode('hi', { addSpecialTokens: true })).toEqual([1, ...mistral.encode('hi')]);
  });

  it('writes back the pipeline it read: HF loads the saved file and encodes the same', async () => {
    const requests: Array<{ path: string; texts: string[]; decode: number[][] }> = [];
    for (const f of FAMILIES) {
      const tok = await Tokenizer.load(join(dir, f.name, 'tokenizer.json'));
      const path = join(dir, `${f.name}-resaved.json`);
      await tok.save(path);
      requests.push({ path, texts: texts.get(f.name)!.slice(0, 60), decode: [] });
    }
    const results = runPython(HF_ENCODE, { families: requests }) as any[];
    FAMILIES.forEach((f, k) => {
      const want = hf.get(f.name);
      requests[k]!.texts.forEach((_t, i) => {
        expect(results[k].ids[i]).toEqual(want.ids[i]);
        expect(results[k].decoded[i]).toBe(want.decoded[i]);
      });
    });
  });
});
