/**
 * HF `tokenizers` pre-tokenizers (the `pre_tokenizer` of `tokenizer.json`): they cut normalized
 * text into the words BPE runs on, exactly as that library does.
 */
import { bytesToByteLevel } from './bytes.js';
import {
  fail,
  optionalBool,
  readPattern,
  requireChar,
  requireList,
  requireString,
  typeOf,
  unsupported,
  type Json,
} from './hf-components.js';
import { classBody, NEW_IN_UNICODE_17 } from './onig-unicode.js';
import type { MatchTiles } from './onig-regex.js';
import { nextPretoken } from './pretokenize.js';

/** A piece of text on its way to the model. */
export interface Word {
  /** The text; when `byteLevel`, the model sees its UTF-8 bytes as byte-level characters (Ġ, Ċ, ...). */
  text: string;
  /** Set by the ByteLevel pre-tokenizer, which maps text to byte-level characters (done lazily here). */
  byteLevel: boolean;
  /** Whether the word starts at offset 0 of the original input (Metaspace `prepend_scheme: first`). */
  first: boolean;
}

/** A pre-tokenizer: words in, words out (empty words are dropped, as in HF). */
export type PreTokenize = (words: Word[]) => Word[];

/** HF `SplitDelimiterBehavior`. */
type Behavior = 'Removed' | 'Isolated' | 'MergedWithPrevious' | 'MergedWithNext' | 'Contiguous';
const BEHAVIORS: readonly Behavior[] = ['Removed', 'Isolated', 'MergedWithPrevious', 'MergedWithNext', 'Contiguous'];

const SUPPORTED = [
  'ByteLevel',
  'Split',
  'Metaspace',
  'Digits',
  'Sequence',
  'Whitespace',
  'WhitespaceSplit',
  'CharDelimiterSplit',
];

/** The text of a word as later components see it (byte-level characters after ByteLevel). */
function materialize(w: Word): string {
  return w.byteLevel ? bytesToByteLevel(Buffer.from(w.text, 'utf8')) : w.text;
}

/** HF `NormalizedString::split`: pieces of `text` by match tiles and a delimiter behaviour. */
export function splitTiles(text: string, tiles: MatchTiles, behavior: Behavior): string[] {
  const keep: Array<[number, number]> = [];
  switch (behavior) {
    case 'Removed':
      for (const [s, e, m] of tiles) if (!m) keep.push([s, e]);
      break;
    case 'Isolated':
      for (const [s, e] of tiles) keep.push([s, e]);
      break;
    case 'Contiguous': {
      let previous = false;
      for (const [s, e, m] of tiles) {
        const last = keep[keep.length - 1];
        if (m === previous && last !== undefined) last[1] = e;
        else keep.push([s, e]);
        previous = m;
      }
      break;
    }
    case 'MergedWithPrevious': {
      let previous = false;
      for (const [s, e, m] of tiles) {
        const last = keep[keep.length - 1];
        if (m && !previous && last !== undefined) last[1] = e;
        else keep.push([s, e]);
        previous = m;
      }
      break;
    }
    case 'MergedWithNext': {
      let previous = false;
      for (let i = tiles.length - 1; i >= 0; i--) {
        const [s, e, m] = tiles[i]!;
        const last = keep[keep.length - 1];
        if (m && !previous && last !== undefined) last[0] = s;
        else keep.push([s, e]);
        previous = m;
      }
      keep.reverse();
      break;
    }
  }
  return keep.map(([s, e]) => text.slice(s, e));
}

/** Tiles where each character satisfying `test` is a match (HF's `Fn(char) -> bool` pattern). */
function charTiles(text: string, test: (ch: string) => boolean): MatchTiles {
  if (text.length === 0) return [[0, 0, false]];
  const tiles: MatchTiles = [];
  let last = 0;
  for (let i = 0; i < text.length;) {
    const c = text.charCodeAt(i);
    const w = c >= 0xd800 && c <= 0xdbff && i + 1 < text.length ? 2 : 1;
    if (test(text.slice(i, i + w))) {
      if (last < i) tiles.push([last, i, false]);
      tiles.push([i, i + w, true]);
      last = i + w;
    }
    i += w;
  }
  if (last < text.length) tiles.push([last, text.length, false]);
  return tiles;
}

/** Applies `cut` to every word's (materialized) text; only the first piece of a first word stays first. */
function eachWord(cut: (text: string, w: Word) => string[]): PreTokenize {
  return (words) => {
    const out: Word[] = [];
    for (const w of words) {
      const pieces = cut(materialize(w), w);
      pieces.forEach((text, i) => {
        if (text.length > 0) out.push({ text, byteLevel: false, first: w.first && i === 0 });
      });
    }
    return out;
  };
}

function behaviorOf(obj: Json, field: string): Behavior {
  const b = requireString(obj, 'behavior', field);
  // HF's Python API also accepts lowercase names; tokenizer.json holds the capitalized ones.
  const found = BEHAVIORS.find((x) => x.toLowerCase() === b.toLowerCase());
  if (found === undefined) fail(`${field}.behavior ${JSON.stringify(b)} is not one of ${BEHAVIORS.join(', ')}`);
  return found;
}

// Rust's char::is_numeric (Nd, Nl, No) and char::is_whitespace, as of Unicode 16.
const NEW_CLASS = `[${classBody(NEW_IN_UNICODE_17)}]`;
const NUMERIC = new RegExp(`^[\\p{N}--${NEW_CLASS}]$`, 'v');
const WHITE_SPACE = /^[\t-\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]$/;
// The Rust `regex` crate's `\w+|[^\w\s]+` (Whitespace pre-tokenizer).
const RUST_WORD = `[[\\p{Alphabetic}\\p{M}\\p{Nd}\\p{Pc}\\p{Join_Control}]--${NEW_CLASS}]`;
const RUST_SPACE = '[\\t-\\r\\x20\\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]';
const WHITESPACE_RE = new RegExp(`${RUST_WORD}+|[^${RUST_WORD}${RUST_SPACE}]+`, 'gv');

function regexTiles(text: string, re: RegExp): MatchTiles {
  if (text.length === 0) return [[0, 0, false]];
  const tiles: MatchTiles = [];
  let prev = 0;
  for (const m of text.matchAll(re)) {
    const s = m.index;
    const e = s + m[0].length;
    if (prev !== s) tiles.push([prev, s, false]);
    tiles.push([s, e, true]);
    prev = e;
  }
  if (prev !== text.length) tiles.push([prev, text.length, false]);
  return tiles;
}

/** Reads a pre-tokenizer (`field` names it in errors, e.g. `pre_tokenizer.pretokenizers[0]`). */
export function readPreTokenizer(obj: Json, field: string): PreTokenize {
  const type = typeOf(obj, field);
  switch (type) {
    case 'ByteLevel': {
      const addPrefixSpace = optionalBool(obj, 'add_prefix_space', field, true);
      const useRegex = optionalBool(obj, 'use_regex', field, true);
      return (words) => {
        const out: Word[] = [];
        for (const w of words) {
          let text = materialize(w);
          if (addPrefixSpace && !text.startsWith(' ')) text = ' ' + text;
          if (!useRegex) {
            out.push({ text, byteLevel: true, first: w.first });
            continue;
          }
          for (let i = 0; i < text.length;) {
            const end = nextPretoken(text, i);
            out.push({ text: text.slice(i, end), byteLevel: true, first: w.first && i === 0 });
            i = end;
          }
        }
        return out;
      };
    }
    case 'Split': {
      const matcher = readPattern(obj, 'pattern', field);
      const behavior = behaviorOf(obj, field);
      const invert = optionalBool(obj, 'invert', field, false);
      return eachWord((text) => {
        let tiles = matcher.findMatches(text);
        if (invert) tiles = tiles.map(([s, e, m]) => [s, e, !m]);
        return splitTiles(text, tiles, behavior);
      });
    }
    case 'Metaspace': {
      const replacement = requireChar(obj, 'replacement', field);
      let scheme = requireString(obj, 'prepend_scheme', field, 'always');
      if (!['always', 'first', 'never'].includes(scheme))
        fail(`${field}.prepend_scheme ${JSON.stringify(scheme)} is not one of always, first, never`);
      if (obj['add_prefix_space'] === false) {
        // As HF: prepend_scheme defaults to always, which add_prefix_space false contradicts.
        if (scheme !== 'never')
          fail(`${field}: add_prefix_space false does not match prepend_scheme ${JSON.stringify(scheme)}`);
        scheme = 'never';
      }
      const split = optionalBool(obj, 'split', field, true);
      return eachWord((text, w) => {
        text = text.replaceAll(' ', replacement);
        if (!text.startsWith(replacement) && (scheme === 'always' || (scheme === 'first' && w.first)))
          text = replacement + text;
        if (!split) return [text];
        return splitTiles(
          text,
          charTiles(text, (ch) => ch === replacement),
          'MergedWithNext',
        );
      });
    }
    case 'Digits': {
      const individual = optionalBool(obj, 'individual_digits', field, false);
      return eachWord((text) =>
        splitTiles(
          text,
          charTiles(text, (ch) => NUMERIC.test(ch)),
          individual ? 'Isolated' : 'Contiguous',
        ),
      );
    }
    case 'Whitespace':
      return eachWord((text) =>
        splitTiles(
          text,
          regexTiles(text, WHITESPACE_RE).map(([s, e, m]) => [s, e, !m]),
          'Removed',
        ),
      );
    case 'WhitespaceSplit':
      return eachWord((text) =>
        splitTiles(
          text,
          charTiles(text, (ch) => WHITE_SPACE.test(ch)),
          'Removed',
        ),
      );
    case 'CharDelimiterSplit': {
      const delimiter = requireChar(obj, 'delimiter', field);
      return eachWord((text) =>
        splitTiles(
          text,
          charTiles(text, (ch) => ch === delimiter),
          'Removed',
        ),
      );
    }
    case 'Sequence': {
      const parts = requireList(obj, 'pretokenizers', field).map((p, i) =>
        readPreTokenizer(p, `${field}.pretokenizers[${i}]`),
      );
      return (words) => {
        for (const p of parts) words = p(words);
        return words;
      };
    }
    default:
      return unsupported(field, type, SUPPORTED);
  }
}
