/** Seeded text generators for comparing Lathe's tokenizers with HF `tokenizers` (property tests). */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import fc from 'fast-check';
import { NEW_IN_UNICODE_17, NORMALIZATION_INERT } from '../onig-unicode.js';
import { repoRoot } from './python.js';

/** Script samples, including what normalizers and regex classes treat specially. */
export const SCRIPT_SAMPLES: readonly string[] = [
  'naïve café',
  'cafe\u0301 e\u0301\u0316 x\u0316\u0301',
  'Ελληνικά ΣΟΦΟΣ σοφός ς',
  'Привет, мир',
  '日本語のテキスト、カタカナ',
  '中文文本。',
  '한국어 텍스트 \u1100\u1161\u11a8',
  'العربية ١٢٣',
  'हिन्दी भाषा',
  'ไทย',
  '🤗',
  '👩‍👩‍👧‍👦',
  '🇫🇷',
  '👍🏽',
  'ﬁﬀ ﬆ',
  '①② ㍿',
  'Ⅻ ½ ²³ ¹',
  '１２３ＡＢＣ',
  'ſ K ß İ ǅ ʕ',
  '\u{1e6c0}\u088f\u{10940}\u0c5c\u{1fa54}', // new in Unicode 17
  '\u0897\u1ac1\u32ff\u{1fbf0}\u1df6', // newer than HF's normalization tables
  'a\u0300\u0301\u0302',
  '\u00ad\u200d\u2060',
];

const WHITESPACE = [
  ' ',
  '\n',
  '\t',
  '\r',
  '\r\n',
  '\u00a0',
  '\u3000',
  '\u2003',
  '\u0085',
  '\ufeff',
  '\u200b',
  '\u2028',
  '▁',
];
const DIGITS = ['0', '1', '2', '5', '9', '٣', '１', '²', '½', 'Ⅻ', '〇', '߀'];
const APOSTROPHES = [
  "'s",
  "'S",
  "'ll",
  "'LL",
  "'Ll",
  "'ve",
  "'VE",
  "'re",
  "'d",
  "'D",
  "'m",
  "'t",
  "'ſ",
  "'K",
  "'ß",
  "'st",
  '’s',
  " 's",
];
const PUNCT = [
  '...',
  '-->',
  '||',
  '::',
  ' - ',
  '--',
  '#',
  '@@',
  '{}',
  '()',
  '//',
  'http://x.y/z?a=1',
  ',;',
  '|a|',
  'a-b-c',
  '"q"',
];

/**
 * `count` strings from a fixed seed: random Unicode (graphemes and any code point), script samples,
 * whitespace runs, digits, emoji, contractions, punctuation and `inline` (e.g. special tokens).
 */
export function propertyTexts(seed: number, count: number, inline: readonly string[] = []): string[] {
  const pieces = [
    fc.string({ unit: 'grapheme', maxLength: 8 }),
    fc.string({ unit: 'binary', maxLength: 6 }),
    fc.string({ unit: 'binary-ascii', maxLength: 8 }),
    fc.constantFrom(...SCRIPT_SAMPLES),
    fc.string({ unit: fc.constantFrom(...WHITESPACE), minLength: 1, maxLength: 12 }),
    fc.string({ unit: fc.constantFrom(...DIGITS), minLength: 1, maxLength: 9 }),
    fc.integer({ min: 0, max: 10_000_000 }).map(String),
    fc.constantFrom(...APOSTROPHES),
    fc.constantFrom(...PUNCT),
    fc.constantFrom('the', ' the', 'The', 'hello world', 'Hello', ' and', 'ing', 'tion'),
  ];
  if (inline.length > 0) pieces.push(fc.constantFrom(...inline));
  return fc.sample(
    fc.array(fc.oneof(...pieces), { maxLength: 14 }).map((p) => p.join('')),
    { seed, numRuns: count },
  );
}

/** Real text: the README's paragraphs, lines of the example corpus, and multilingual bench documents. */
export async function realTexts(seed: number, benchBytes: number): Promise<string[]> {
  const readme = readFileSync(join(repoRoot, 'README.md'), 'utf8').split(/\n\n+/);
  const tally = readFileSync(join(repoRoot, 'examples', 'data', 'tally', 'corpus.txt'), 'utf8')
    .split('\n\n')
    .slice(0, 30);
  const docs: string[] = [];
  const corpus = (await import(pathToFileURL(join(repoRoot, 'bench', 'corpus.mjs')).href)) as {
    generateCorpus: (bytes: number, emit: (doc: string) => void, seed: number) => unknown;
  };
  corpus.generateCorpus(benchBytes, (d) => docs.push(d), seed);
  return [...readme, ...tally, ...docs];
}

/** Every code point below U+3400, every 7th to U+20000, every 61st above, and all of the version tables (± 1). */
export function sampledCodePoints(): number[] {
  const set = new Set<number>();
  for (let cp = 0; cp < 0x3400; cp++) set.add(cp);
  for (let cp = 0x3400; cp < 0x20000; cp += 7) set.add(cp);
  for (let cp = 0x20000; cp < 0x110000; cp += 61) set.add(cp);
  for (const r of [...NEW_IN_UNICODE_17, ...NORMALIZATION_INERT]) {
    const [a, b] = typeof r === 'number' ? [r, r] : r;
    for (let cp = a - 1; cp <= b + 1; cp++) set.add(cp);
  }
  return [...set].filter((cp) => cp < 0xd800 || cp > 0xdfff).sort((a, b) => a - b);
}
