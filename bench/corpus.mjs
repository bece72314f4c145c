#!/usr/bin/env node
// A deterministic, text-like corpus for the tokenizer benchmarks: documents of paragraphs of
// sentences drawn from a Zipfian vocabulary in several scripts (Latin with and without
// diacritics, Cyrillic, Greek, CJK, Arabic, Devanagari), with punctuation, quotes, contractions,
// numbers, dates, percentages, URLs, code lines and the odd emoji. The same seed and size give the
// same bytes on every machine.
//
//   node bench/corpus.mjs OUT.jsonl [--mb 50]      one JSON string (a document) per line
import { createWriteStream } from 'node:fs';
import { parseArgs } from 'node:util';
import { pathToFileURL } from 'node:url';

/** xorshift128+ as two uint32 pairs would be overkill: mulberry32 is enough for text. */
function mulberry32(seed) {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const range = (from, to) => Array.from({ length: to - from + 1 }, (_, i) => String.fromCodePoint(from + i));

// Syllable inventories per script; words are 1-4 syllables.
const SCRIPTS = {
  latin: {
    weight: 0.66,
    syl: [
      'th',
      'e',
      'an',
      'in',
      'er',
      'on',
      're',
      'ing',
      'st',
      'al',
      'ou',
      'or',
      'it',
      'is',
      'en',
      'ar',
      'ti',
      'ed',
      'to',
      'le',
      'ch',
      'ly',
      'pro',
      'con',
      'ma',
      'de',
      'ver',
      'ble',
      'sh',
      'wa',
      'ke',
      'po',
      'si',
      'nu',
      'gr',
      'fl',
      'qu',
      'x',
      'z',
      'ol',
    ],
    space: true,
  },
  european: {
    weight: 0.1,
    syl: [
      'é',
      'ü',
      'ñ',
      'ça',
      'ö',
      'à',
      'ß',
      'ø',
      'å',
      'ei',
      'sch',
      'ción',
      'ung',
      'lé',
      'mö',
      'ná',
      'gué',
      'zo',
      'ri',
      'te',
      'la',
      'ch',
      'ão',
      'ię',
      'ł',
      'ż',
      'ř',
      'š',
    ],
    space: true,
  },
  cyrillic: {
    weight: 0.08,
    syl: [
      'ра',
      'но',
      'ст',
      'ко',
      'ви',
      'ть',
      'ли',
      'пр',
      'ов',
      'ени',
      'ка',
      'то',
      'за',
      'мо',
      'ый',
      'ая',
      'щ',
      'ж',
      'ю',
      'эт',
      'ёл',
    ],
    space: true,
  },
  greek: {
    weight: 0.03,
    syl: ['κα', 'το', 'λο', 'ση', 'μέ', 'νο', 'πα', 'ρι', 'ει', 'θε', 'ψυ', 'χή', 'ων', 'ές', 'αι'],
    space: true,
  },
  cjk: { weight: 0.07, syl: [...range(0x4e00, 0x4e00 + 900), ...range(0x3041, 0x3093)], space: false },
  arabic: { weight: 0.03, syl: ['ال', 'من', 'كت', 'اب', 'سل', 'ام', 'عر', 'بي', 'ة', 'ون', 'يد', 'قر'], space: true },
  devanagari: { weight: 0.03, syl: ['क', 'ना', 'में', 'है', 'सं', 'स्क', 'ृत', 'भा', 'षा', 'गु', 'रु', 'दे', 'व'], space: true },
};
const PUNCT_END = ['.', '.', '.', '.', '?', '!', '...', ';'];
const CJK_END = ['。', '。', '？', '！'];
const EMOJI = ['🙂', '🚀', '🤗', '✨', '🔥', '👍🏽', '🇯🇵'];
const CODE = [
  'for (let i = 0; i < n; i++) { total += xs[i] * 2; }',
  'def f(x):\n    return {"a": x, "b": [1, 2, 3]}',
  'SELECT name, count(*) FROM users WHERE age >= 21 GROUP BY name;',
  'if err != nil {\n\treturn fmt.Errorf("open %s: %w", path, err)\n}',
  '<div class="card" id="item-42">Hello &amp; welcome</div>',
  '$ git commit -m "fix: handle CRLF in parser" && make test',
];

class Language {
  constructor(rand, script, types) {
    this.rand = rand;
    this.script = script;
    const s = SCRIPTS[script];
    const seen = new Set();
    this.words = [];
    while (this.words.length < types) {
      const n = 1 + Math.floor(rand() * rand() * 4) + (s.space ? 0 : Math.floor(rand() * 2));
      let w = '';
      for (let i = 0; i < n; i++) w += s.syl[Math.floor(rand() * s.syl.length)];
      if (!seen.has(w)) {
        seen.add(w);
        this.words.push(w);
      }
    }
    // Zipf-Mandelbrot: p(rank r) ~ 1 / (r + 2.7)^1.07, sampled through the cumulative table.
    this.cdf = new Float64Array(types);
    let total = 0;
    for (let r = 0; r < types; r++) this.cdf[r] = total += 1 / Math.pow(r + 2.7, 1.07);
    for (let r = 0; r < types; r++) this.cdf[r] /= total;
  }

  word() {
    const u = this.rand();
    let lo = 0;
    let hi = this.cdf.length - 1;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (this.cdf[mid] < u) lo = mid + 1;
      else hi = mid;
    }
    return this.words[lo];
  }
}

function number(rand) {
  const k = rand();
  if (k < 0.3) return String(Math.floor(rand() * 100));
  if (k < 0.5) return String(1900 + Math.floor(rand() * 130));
  if (k < 0.65) return `${(rand() * 100).toFixed(1)}%`;
  if (k < 0.8)
    return `${Math.floor(rand() * 10000).toLocaleString('en-US')}.${String(Math.floor(rand() * 100)).padStart(2, '0')}`;
  if (k < 0.9)
    return `${2000 + Math.floor(rand() * 26)}-${String(1 + Math.floor(rand() * 12)).padStart(2, '0')}-${String(1 + Math.floor(rand() * 28)).padStart(2, '0')}`;
  return `+1 (${100 + Math.floor(rand() * 900)}) 555-${String(Math.floor(rand() * 10000)).padStart(4, '0')}`;
}

function sentence(rand, lang) {
  const n = 4 + Math.floor(rand() * 18);
  const spaced = SCRIPTS[lang.script].space;
  const parts = [];
  for (let i = 0; i < n; i++) {
    const k = rand();
    let w;
    if (k < 0.04) w = number(rand);
    else if (k < 0.045) w = EMOJI[Math.floor(rand() * EMOJI.length)];
    else w = lang.word();
    if (spaced && lang.script === 'latin' && rand() < 0.03)
      w += ["'s", "'ve", "'re", "'ll", "n't", "'d"][Math.floor(rand() * 6)];
    if (spaced && i < n - 1 && rand() < 0.08) w += rand() < 0.8 ? ',' : ':';
    if (rand() < 0.02) w = rand() < 0.5 ? `"${w}"` : `(${w})`;
    parts.push(w);
  }
  if (spaced && parts[0]) parts[0] = parts[0][0].toUpperCase() + parts[0].slice(1);
  const end = spaced ? PUNCT_END[Math.floor(rand() * PUNCT_END.length)] : CJK_END[Math.floor(rand() * CJK_END.length)];
  return parts.join(spaced ? ' ' : '') + end;
}

/** Generates documents until about `bytes` UTF-8 bytes; calls `emit(doc)` for each. */
export function generateCorpus(bytes, emit, seed = 20240601) {
  const rand = mulberry32(seed);
  const langs = {};
  for (const script of Object.keys(SCRIPTS))
    langs[script] = new Language(rand, script, script === 'latin' ? 30000 : 6000);
  const names = Object.keys(SCRIPTS);
  const pick = () => {
    let u = rand();
    for (const s of names) if ((u -= SCRIPTS[s].weight) < 0) return langs[s];
    return langs.latin;
  };
  let total = 0;
  let docs = 0;
  while (total < bytes) {
    const main = pick();
    const paras = [];
    const np = 1 + Math.floor(rand() * 7);
    for (let p = 0; p < np; p++) {
      const ns = 1 + Math.floor(rand() * 7);
      const ss = [];
      for (let i = 0; i < ns; i++) ss.push(sentence(rand, rand() < 0.9 ? main : pick()));
      let para = ss.join(SCRIPTS[main.script].space ? ' ' : '');
      const k = rand();
      if (k < 0.05) para = CODE[Math.floor(rand() * CODE.length)];
      else if (k < 0.08)
        para += ` See https://example.org/${main.word()}/${Math.floor(rand() * 1e4)}?q=${encodeURIComponent(main.word())}.`;
      else if (k < 0.12) para = `- ${para}`;
      paras.push(para);
    }
    let doc = paras.join(rand() < 0.8 ? '\n\n' : '\n');
    if (rand() < 0.2) doc = `# ${main.word()} ${main.word()}\n\n${doc}`;
    if (rand() < 0.05) doc += '\r\n';
    if (rand() < 0.05) doc = doc.replace(/ /g, (m) => (rand() < 0.02 ? '  ' : rand() < 0.01 ? '\t' : m));
    total += Buffer.byteLength(doc, 'utf8');
    docs++;
    emit(doc);
  }
  return { bytes: total, docs };
}

/** Writes the corpus as JSON lines; resolves to its size. */
export async function writeCorpus(path, megabytes = 50, seed) {
  const out = createWriteStream(path);
  let buf = [];
  const stats = generateCorpus(
    megabytes * 1e6,
    (doc) => {
      buf.push(JSON.stringify(doc));
      if (buf.length >= 256) {
        out.write(buf.join('\n') + '\n');
        buf = [];
      }
    },
    seed,
  );
  if (buf.length) out.write(buf.join('\n') + '\n');
  await new Promise((resolve, reject) => out.end((e) => (e ? reject(e) : resolve())));
  return stats;
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const { positionals, values } = parseArgs({
    allowPositionals: true,
    options: { mb: { type: 'string', default: '50' } },
  });
  if (!positionals[0]) {
    console.error('usage: node bench/corpus.mjs OUT.jsonl [--mb 50]');
    process.exit(2);
  }
  console.log(JSON.stringify(await writeCorpus(positionals[0], Number(values.mb))));
}
