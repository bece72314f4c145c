/** Deterministic text fixtures for the tokenizer tests. */

/** Small seeded PRNG (mulberry32) so fixtures are identical on every run. */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const WORDS = (
  'the of and to in is was that for it with as on be at by this had not are but from or have an they which ' +
  'one you were her all she there would their we him been has when who will more no if out so said what up ' +
  'its about into than them can only other new some could time these two may then do first any my now such ' +
  'like our over man me even most made after also did many before must through back years where much your ' +
  'way well down should because each just those people how too little state good very make world still own ' +
  'see men work long get here between both life being under never day same another know while last might us ' +
  'great old year off come since against go came right used take three model train token language learning'
).split(' ');

/** Repetitive English-like sentences built from common words, one per line. */
export function englishLikeCorpus(seed: number, sentences: number): string[] {
  const rand = seededRandom(seed);
  const pick = (): string => WORDS[Math.floor(rand() * WORDS.length)]!;
  const lines: string[] = [];
  for (let i = 0; i < sentences; i++) {
    const n = 6 + Math.floor(rand() * 10);
    const words: string[] = [];
    for (let j = 0; j < n; j++) words.push(pick());
    const first = words[0]!;
    words[0] = first[0]!.toUpperCase() + first.slice(1);
    let line = words.join(' ');
    if (rand() < 0.2) line += `, ${Math.floor(rand() * 2000)} ${pick()}s`;
    line += rand() < 0.1 ? '?' : '.';
    lines.push(line + '\n');
  }
  return lines;
}

/** Strings that exercise pre-tokenization, byte handling and special-token splitting. */
export const TRICKY_STRINGS: readonly string[] = [
  '',
  'Hello world',
  'Hello, world! How are you?',
  "I'm sure you've seen 'em; they'll say it's fine, we'd REALLY LIKE IT'S",
  '   leading spaces and trailing   ',
  'tabs\tand\ttabs\t\t\tand\n\nnewlines\r\n\r\nwindows',
  'a  b   c    d     e',
  '\n\n\n',
  ' ',
  '12345678901234567890 3.14159 1,000,000 0x1F ½ ٣٤ 一二三',
  'naïve café résumé Ωμέγα Привет мир',
  '中文测试，日本語のテキスト、한국어 텍스트',
  'emoji 🤗🚀👩‍👩‍👧‍👦 flags 🇫🇷🇯🇵 skin 👍🏽',
  'combining e\u0301 a\u0308 and zero\u200bwidth\u200djoiner',
  'controls \u0000\u0001\u0007\u001b[31mred\u001b[0m \u007f',
  'odd spaces \u00a0nbsp \u2003em \u3000ideographic \u0085nel \ufeffbom \u2028line',
  '<|bos|>Hello<|eos|>',
  '<|system|>Be brief.<|end|><|user|>Hi!<|end|><|assistant|>Hello!<|end|>',
  'not special: <|bos| <bos> <|unknown|> <||>',
  '<|fim_prefix|>def f(x):<|fim_suffix|>    return y<|fim_middle|>',
  'code: for (let i = 0; i < n; i++) { x += arr[i] * 2; } // done',
  '\ufeffstarts with BOM',
  'ends with special<|end|>',
  '$$$ %%% &&& *** --- ___ === +++ ~~~ ``` ...',
  'a'.repeat(300),
  ' '.repeat(100) + 'x',
  'mixed\u0085\u0085whitespace\u3000\u3000here \ufeff\ufeff',
];
