/**
 * HF `tokenizers` normalizers (the `normalizer` of `tokenizer.json`), applied as that library does.
 * Lathe needs the normalized text only, not HF's offset alignments.
 */
import { BYTE_TO_CHAR } from './bytes.js';
import {
  fail,
  optionalBool,
  readPattern,
  requireList,
  requireString,
  typeOf,
  unsupported,
  type Json,
} from './hf-components.js';
import { classBody, inRanges, NEW_IN_UNICODE_17, NORMALIZATION_INERT } from './onig-unicode.js';

/** A normalizer: text in, normalized text out. */
export type Normalize = (text: string) => string;

const SUPPORTED = [
  'NFC',
  'NFD',
  'NFKC',
  'NFKD',
  'Sequence',
  'Prepend',
  'Replace',
  'Lowercase',
  'Strip',
  'Nmt',
  'ByteLevel',
];

const INERT_RE = new RegExp(`[${classBody(NORMALIZATION_INERT)}]`, 'u');

/** Unicode normalization as HF's older tables do it: characters newer than them are left alone. */
function unicodeForm(form: 'NFC' | 'NFD' | 'NFKC' | 'NFKD'): Normalize {
  return (text) => {
    if (!INERT_RE.test(text)) return text.normalize(form);
    // An unknown character is a starter that blocks reordering and composition: normalize around it.
    let out = '';
    let seg = '';
    for (const ch of text) {
      if (inRanges(NORMALIZATION_INERT, ch.codePointAt(0)!)) {
        out += seg.normalize(form) + ch;
        seg = '';
      } else {
        seg += ch;
      }
    }
    return out + seg.normalize(form);
  };
}

// Rust's char::is_whitespace (White_Space).
const WHITE_SPACE = /[\t-\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]/;
const NEW_CHAR = new RegExp(`[${classBody(NEW_IN_UNICODE_17)}]`, 'u');

/** Rust's per-character `to_lowercase` (Unicode 16: characters new in 17 stay as they are). */
function lowercase(text: string): string {
  // Per character, so no final-sigma rule: HF maps every Σ to σ.
  let out = '';
  for (const ch of text) out += NEW_CHAR.test(ch) ? ch : ch.toLowerCase();
  return out;
}

function strip(left: boolean, right: boolean): Normalize {
  return (text) => {
    let start = 0;
    let end = text.length;
    if (left) while (start < end && WHITE_SPACE.test(text[start]!)) start++;
    if (right) while (end > start && WHITE_SPACE.test(text[end - 1]!)) end--;
    return text.slice(start, end);
  };
}

/** HF `Nmt`: drops control characters and maps other spaces to ' '. */
function nmt(text: string): string {
  let out = '';
  for (const ch of text) {
    const c = ch.codePointAt(0)!;
    if ((c >= 0x1 && c <= 0x8) || c === 0xb || (c >= 0xe && c <= 0x1f) || c === 0x7f || c === 0x8f || c === 0x9f)
      continue;
    const space =
      c === 0x9 ||
      c === 0xa ||
      c === 0xc ||
      c === 0xd ||
      c === 0x1680 ||
      (c >= 0x200b && c <= 0x200f) ||
      c === 0x2028 ||
      c === 0x2029 ||
      c === 0x2581 ||
      c === 0xfeff ||
      c === 0xfffd;
    out += space ? ' ' : ch;
  }
  return out;
}

const encoder = new TextEncoder();
function byteLevel(text: string): string {
  let out = '';
  for (const b of encoder.encode(text)) out += BYTE_TO_CHAR[b]!;
  return out;
}

/** Reads a normalizer (`field` names it in errors, e.g. `normalizer.normalizers[1]`). */
export function readNormalizer(obj: Json, field: string): Normalize {
  const type = typeOf(obj, field);
  switch (type) {
    case 'NFC':
    case 'NFD':
    case 'NFKC':
    case 'NFKD':
      return unicodeForm(type);
    case 'Lowercase':
      return lowercase;
    case 'Nmt':
      return nmt;
    case 'ByteLevel':
      return byteLevel;
    case 'Strip':
      return strip(optionalBool(obj, 'strip_left', field, false), optionalBool(obj, 'strip_right', field, false));
    case 'Prepend': {
      const prefix = requireString(obj, 'prepend', field);
      return (text) => (text.length === 0 ? text : prefix + text);
    }
    case 'Replace': {
      const matcher = readPattern(obj, 'pattern', field);
      const content = requireString(obj, 'content', field);
      return (text) => {
        let out = '';
        for (const [start, end, isMatch] of matcher.findMatches(text))
          out += isMatch ? content : text.slice(start, end);
        return out;
      };
    }
    case 'Sequence': {
      const parts = requireList(obj, 'normalizers', field).map((n, i) =>
        readNormalizer(n, `${field}.normalizers[${i}]`),
      );
      return (text) => {
        for (const n of parts) text = n(text);
        return text;
      };
    }
    default:
      if (type === 'BertNormalizer' || type === 'StripAccents' || type === 'Precompiled')
        fail(
          `${field}.type "${type}" is not supported (it belongs to WordPiece or SentencePiece-Unigram tokenizers; supported: ${SUPPORTED.join(', ')})`,
        );
      return unsupported(field, type, SUPPORTED);
  }
}
