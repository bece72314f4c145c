/**
 * HF `tokenizers` decoders (the `decoder` of `tokenizer.json`): token strings back to text, as
 * that library's `decode_chain` does.
 */
import { byteLevelToBytes } from './bytes.js';
import {
  fail,
  readPattern,
  requireChar,
  requireCount,
  requireList,
  requireString,
  typeOf,
  unsupported,
  type Json,
} from './hf-components.js';

/** A decoder step: token strings in, token strings out (the final text is their concatenation). */
export type DecodeChain = (tokens: string[]) => string[];

const SUPPORTED = ['ByteLevel', 'Metaspace', 'ByteFallback', 'Fuse', 'Strip', 'Replace', 'Sequence', 'BPEDecoder'];

const lossy = new TextDecoder('utf-8', { ignoreBOM: true });
const strict = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/** HF ByteLevel decoder: all tokens' bytes joined, then decoded as lossy UTF-8 (one token out). */
function byteLevel(tokens: string[]): string[] {
  const parts: Uint8Array[] = [];
  let total = 0;
  for (const t of tokens) {
    const bytes = byteLevelToBytes(t) ?? Buffer.from(t, 'utf8');
    parts.push(bytes);
    total += bytes.length;
  }
  const buf = new Uint8Array(total);
  let pos = 0;
  for (const p of parts) {
    buf.set(p, pos);
    pos += p.length;
  }
  return [lossy.decode(buf)];
}

const BYTE_TOKEN = /^<0x[0-9a-fA-F]{2}>$/;

/** HF ByteFallback: runs of `<0xNN>` become their UTF-8 text, or one U+FFFD per byte if invalid. */
function byteFallback(tokens: string[]): string[] {
  const out: string[] = [];
  let pending: number[] = [];
  const flush = (): void => {
    if (pending.length === 0) return;
    try {
      out.push(strict.decode(new Uint8Array(pending)));
    } catch {
      for (let i = 0; i < pending.length; i++) out.push('\ufffd');
    }
    pending = [];
  };
  for (const t of tokens) {
    if (BYTE_TOKEN.test(t)) pending.push(parseInt(t.slice(3, 5), 16));
    else {
      flush();
      out.push(t);
    }
  }
  flush();
  return out;
}

/** Reads a decoder (`field` names it in errors, e.g. `decoder.decoders[2]`). */
export function readDecoder(obj: Json, field: string): DecodeChain {
  const type = typeOf(obj, field);
  switch (type) {
    case 'ByteLevel':
      return byteLevel;
    case 'ByteFallback':
      return byteFallback;
    case 'Fuse':
      return (tokens) => [tokens.join('')];
    case 'Metaspace': {
      const replacement = requireChar(obj, 'replacement', field);
      let scheme = requireString(obj, 'prepend_scheme', field, 'always');
      if (obj['add_prefix_space'] === false) scheme = 'never';
      if (!['always', 'first', 'never'].includes(scheme))
        fail(`${field}.prepend_scheme ${JSON.stringify(scheme)} is not one of always, first, never`);
      // As HF: in the first token every replacement character goes (not only a leading one).
      return (tokens) => tokens.map((t, i) => t.replaceAll(replacement, i === 0 && scheme !== 'never' ? '' : ' '));
    }
    case 'Strip': {
      const content = requireChar(obj, 'content', field);
      const start = requireCount(obj, 'start', field);
      const stop = requireCount(obj, 'stop', field);
      return (tokens) =>
        tokens.map((t) => {
          const chars = [...t];
          let from = 0;
          while (from < start && from < chars.length && chars[from] === content) from++;
          let to = chars.length;
          for (let i = 0; i < stop && to > 0 && chars[to - 1] === content; i++) to--;
          return chars.slice(from, Math.max(from, to)).join('');
        });
    }
    case 'Replace': {
      const matcher = readPattern(obj, 'pattern', field);
      const content = requireString(obj, 'content', field);
      return (tokens) =>
        tokens.map((t) => {
          let out = '';
          for (const [s, e, m] of matcher.findMatches(t)) out += m ? content : t.slice(s, e);
          return out;
        });
    }
    case 'BPEDecoder': {
      const suffix = requireString(obj, 'suffix', field, '</w>');
      return (tokens) => tokens.map((t, i) => t.replaceAll(suffix, i === tokens.length - 1 ? '' : ' '));
    }
    case 'Sequence': {
      const parts = requireList(obj, 'decoders', field).map((d, i) => readDecoder(d, `${field}.decoders[${i}]`));
      return (tokens) => {
        for (const d of parts) tokens = d(tokens);
        return tokens;
      };
    }
    default:
      return unsupported(field, type, SUPPORTED);
  }
}
