/**
 * GPT-2's reversible mapping between bytes and printable Unicode characters.
 * Byte-level BPE vocabularies (GPT-2, HF `ByteLevel`) store tokens as strings of these characters.
 */

function buildByteToChar(): string[] {
  const table = new Array<string>(256);
  let next = 256;
  for (let b = 0; b < 256; b++) {
    // Printable Latin-1 bytes map to themselves; the rest are shifted past 255 so no token contains
    // whitespace or control characters.
    const printable = (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
    table[b] = String.fromCharCode(printable ? b : next++);
  }
  return table;
}

/** Byte value (0..255) to its single-character representation in byte-level vocabularies. */
export const BYTE_TO_CHAR: readonly string[] = buildByteToChar();

/** Inverse of {@link BYTE_TO_CHAR}, indexed by UTF-16 code unit (all mapped chars are < 0x144); -1 where unmapped. */
const CHAR_CODE_TO_BYTE: Int16Array = (() => {
  const table = new Int16Array(0x144).fill(-1);
  BYTE_TO_CHAR.forEach((ch, b) => {
    table[ch.charCodeAt(0)] = b;
  });
  return table;
})();

/** Byte value for a byte-level character, or -1 if the character is not part of the alphabet. */
export function charToByte(ch: string): number {
  if (ch.length !== 1) return -1;
  const code = ch.charCodeAt(0);
  return code < CHAR_CODE_TO_BYTE.length ? CHAR_CODE_TO_BYTE[code]! : -1;
}

/** Byte-level string for raw bytes (e.g. `[0x20, 0x61]` becomes `"Ġa"`). */
export function bytesToByteLevel(bytes: ArrayLike<number>): string {
  let s = '';
  for (let i = 0; i < bytes.length; i++) s += BYTE_TO_CHAR[bytes[i]!]!;
  return s;
}

/** Raw bytes for a byte-level string, or null if any character is outside the byte-level alphabet. */
export function byteLevelToBytes(token: string): Uint8Array | null {
  const out = new Uint8Array(token.length);
  for (let i = 0; i < token.length; i++) {
    const code = token.charCodeAt(i);
    const b = code < CHAR_CODE_TO_BYTE.length ? CHAR_CODE_TO_BYTE[code]! : -1;
    if (b < 0) return null;
    out[i] = b;
  }
  return out;
}

/**
 * Appends the UTF-8 bytes of `text[start, end)` to `out` starting at `pos`; returns the new position.
 * `out` must have room for 3 bytes per UTF-16 unit. Lone surrogates become U+FFFD, as in TextEncoder.
 */
export function writeUtf8(text: string, start: number, end: number, out: Uint8Array | Int32Array, pos: number): number {
  for (let i = start; i < end; i++) {
    let c = text.charCodeAt(i);
    if (c < 0x80) {
      out[pos++] = c;
    } else if (c < 0x800) {
      out[pos++] = 0xc0 | (c >> 6);
      out[pos++] = 0x80 | (c & 0x3f);
    } else {
      if (c >= 0xd800 && c <= 0xdfff) {
        const d = i + 1 < end ? text.charCodeAt(i + 1) : 0;
        if (c <= 0xdbff && d >= 0xdc00 && d <= 0xdfff) {
          const cp = 0x10000 + ((c - 0xd800) << 10) + (d - 0xdc00);
          i++;
          out[pos++] = 0xf0 | (cp >> 18);
          out[pos++] = 0x80 | ((cp >> 12) & 0x3f);
          out[pos++] = 0x80 | ((cp >> 6) & 0x3f);
          out[pos++] = 0x80 | (cp & 0x3f);
          continue;
        }
        c = 0xfffd;
      }
      out[pos++] = 0xe0 | (c >> 12);
      out[pos++] = 0x80 | ((c >> 6) & 0x3f);
      out[pos++] = 0x80 | (c & 0x3f);
    }
  }
  return pos;
}
