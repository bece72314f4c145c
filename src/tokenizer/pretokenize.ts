/**
 * GPT-2 / Hugging Face `ByteLevel(use_regex=true, add_prefix_space=false)` pre-tokenizer:
 *
 *   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
 *
 * HF runs this pattern with Oniguruma, whose classes differ from JavaScript's in a few places:
 * `\s` includes U+0085 but not U+FEFF, and Oniguruma's Unicode tables predate Unicode 17, so
 * letters and digits added in 17 are "other" there. We reproduce Oniguruma's view so that splits
 * match HF exactly. {@link PRETOKENIZE_REGEX} is the executable reference; {@link nextPretoken}
 * is a hand-written scanner with identical output that is several times faster.
 */

/** HF/Oniguruma `\s` (Unicode White_Space). All are single UTF-16 units. */
const WHITESPACE_CLASS = '\\t-\\r \\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000';

/** Code points that JS (ICU, Unicode 17) calls letters/numbers but HF's Oniguruma does not know yet. */
const NOT_YET_IN_HF: ReadonlyArray<readonly [number, number]> = [
  [0x088f, 0x088f],
  [0x0c5c, 0x0c5c],
  [0x0cdc, 0x0cdc],
  [0xa7ce, 0xa7cf],
  [0xa7d2, 0xa7d2],
  [0xa7d4, 0xa7d4],
  [0xa7f1, 0xa7f1],
  [0x10940, 0x10959],
  [0x10ec5, 0x10ec7],
  [0x11db0, 0x11ddb],
  [0x11de0, 0x11de9],
  [0x16ea0, 0x16eb8],
  [0x16ebb, 0x16ed3],
  [0x16ff2, 0x16ff6],
  [0x187f8, 0x187ff],
  [0x18d09, 0x18d1e],
  [0x18d80, 0x18df2],
  [0x1e6c0, 0x1e6de],
  [0x1e6e0, 0x1e6e2],
  [0x1e6e4, 0x1e6e5],
  [0x1e6e7, 0x1e6ed],
  [0x1e6f0, 0x1e6f4],
  [0x1e6fe, 0x1e6ff],
  [0x2b73a, 0x2b73f],
  [0x2cea2, 0x2cead],
  [0x323b0, 0x33479],
];

const hex = (cp: number): string => `\\u{${cp.toString(16)}}`;
const NOT_YET_CLASS = NOT_YET_IN_HF.map(([a, b]) => (a === b ? hex(a) : `${hex(a)}-${hex(b)}`)).join('');

/** Source of the pre-tokenizer pattern with HF's character classes (needs the `v` flag). */
export const PRETOKENIZE_PATTERN: string = (() => {
  const letter = `[\\p{L}--[${NOT_YET_CLASS}]]`;
  const number = `[\\p{N}--[${NOT_YET_CLASS}]]`;
  const other = `[[^${WHITESPACE_CLASS}\\p{L}\\p{N}][${NOT_YET_CLASS}]]`;
  const space = `[${WHITESPACE_CLASS}]`;
  const nonSpace = `[^${WHITESPACE_CLASS}]`;
  return `'s|'t|'re|'ve|'m|'ll|'d| ?${letter}+| ?${number}+| ?${other}+|${space}+(?!${nonSpace})|${space}+`;
})();

/** The reference pre-tokenizer regex (global). Prefer {@link pretokenize} / {@link nextPretoken}. */
export const PRETOKENIZE_REGEX: RegExp = new RegExp(PRETOKENIZE_PATTERN, 'gv');

const OTHER = 1;
const LETTER = 2;
const NUMBER = 3;
const SPACE = 4;

const LETTER_RE = /\p{L}/u;
const NUMBER_RE = /\p{N}/u;

function isHfWhitespace(cp: number): boolean {
  return (
    (cp >= 0x09 && cp <= 0x0d) ||
    cp === 0x20 ||
    cp === 0x85 ||
    cp === 0xa0 ||
    cp === 0x1680 ||
    (cp >= 0x2000 && cp <= 0x200a) ||
    cp === 0x2028 ||
    cp === 0x2029 ||
    cp === 0x202f ||
    cp === 0x205f ||
    cp === 0x3000
  );
}

function isNotYetInHf(cp: number): boolean {
  for (const [a, b] of NOT_YET_IN_HF) if (cp >= a && cp <= b) return true;
  return false;
}

function computeClass(cp: number): number {
  if (isHfWhitespace(cp)) return SPACE;
  if (cp >= 0xd800 && cp <= 0xdfff) return OTHER; // lone surrogate
  const ch = String.fromCodePoint(cp);
  if (LETTER_RE.test(ch)) return isNotYetInHf(cp) ? OTHER : LETTER;
  if (NUMBER_RE.test(ch)) return isNotYetInHf(cp) ? OTHER : NUMBER;
  return OTHER;
}

const ASCII_CLASS: Uint8Array = (() => {
  const t = new Uint8Array(128);
  for (let c = 0; c < 128; c++) t[c] = computeClass(c);
  return t;
})();

// Lazily filled class per code point (0 = not computed yet); 1.1 MB, allocated on first non-ASCII char.
let classCache: Uint8Array | null = null;

function classOf(cp: number): number {
  if (cp < 128) return ASCII_CLASS[cp]!;
  if (classCache === null) classCache = new Uint8Array(0x110000);
  let c = classCache[cp]!;
  if (c === 0) {
    c = computeClass(cp);
    classCache[cp] = c;
  }
  return c;
}

/** End (exclusive, UTF-16 index) of the run of characters of class `cls` starting at `i`. */
function runEnd(text: string, i: number, cls: number): number {
  const n = text.length;
  while (i < n) {
    const c = text.charCodeAt(i);
    if (c < 128) {
      if (ASCII_CLASS[c] !== cls) break;
      i++;
      continue;
    }
    let cp = c;
    let width = 1;
    if (c >= 0xd800 && c <= 0xdbff && i + 1 < n) {
      const d = text.charCodeAt(i + 1);
      if (d >= 0xdc00 && d <= 0xdfff) {
        cp = 0x10000 + ((c - 0xd800) << 10) + (d - 0xdc00);
        width = 2;
      }
    }
    if (classOf(cp) !== cls) break;
    i += width;
  }
  return i;
}

function codePointClassAt(text: string, i: number): number {
  const c = text.charCodeAt(i);
  if (c < 128) return ASCII_CLASS[c]!;
  if (c >= 0xd800 && c <= 0xdbff && i + 1 < text.length) {
    const d = text.charCodeAt(i + 1);
    if (d >= 0xdc00 && d <= 0xdfff) return classOf(0x10000 + ((c - 0xd800) << 10) + (d - 0xdc00));
  }
  return classOf(c);
}

/**
 * End index (exclusive) of the pre-token starting at `start` (which must be < text.length).
 * Equivalent to matching {@link PRETOKENIZE_REGEX} at `start`; the pattern matches every character,
 * so pre-tokens tile the text.
 */
export function nextPretoken(text: string, start: number): number {
  const n = text.length;
  const c = text.charCodeAt(start);
  if (c === 0x27 && start + 1 < n) {
    // Contractions: 's 't 'm 'd 're 've 'll (case-sensitive, as in GPT-2).
    const d = text.charCodeAt(start + 1);
    if (d === 0x73 || d === 0x74 || d === 0x6d || d === 0x64) return start + 2;
    if (start + 2 < n) {
      const e = text.charCodeAt(start + 2);
      if ((e === 0x65 && (d === 0x72 || d === 0x76)) || (d === 0x6c && e === 0x6c)) return start + 3;
    }
  }
  if (c === 0x20 && start + 1 < n) {
    // " ?X+": one leading space joins a following letter / number / other run.
    const next = codePointClassAt(text, start + 1);
    if (next !== SPACE) return runEnd(text, start + 1, next);
  }
  const cls = codePointClassAt(text, start);
  if (cls !== SPACE) return runEnd(text, start, cls);
  const end = runEnd(text, start, SPACE);
  // "\s+(?!\S)": a whitespace run before a non-space gives up its last char (which then prefixes
  // the next word when it is a space); a single whitespace char falls through to "\s+".
  if (end < n && end - start >= 2) return end - 1;
  return end;
}

/** Splits text into pre-tokens (the pieces BPE merges never cross). */
export function pretokenize(text: string): string[] {
  const out: string[] = [];
  for (let i = 0; i < text.length;) {
    const end = nextPretoken(text, i);
    out.push(text.slice(i, end));
    i = end;
  }
  return out;
}
