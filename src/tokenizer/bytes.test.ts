import { describe, expect, it } from 'vitest';
import { BYTE_TO_CHAR, byteLevelToBytes, bytesToByteLevel, charToByte, writeUtf8 } from './bytes.js';

describe('byte-level alphabet', () => {
  it('maps 256 bytes to 256 distinct single characters', () => {
    expect(BYTE_TO_CHAR).toHaveLength(256);
    expect(new Set(BYTE_TO_CHAR).size).toBe(256);
    expect(BYTE_TO_CHAR.every((c) => c.length === 1)).toBe(true);
  });

  it('matches the GPT-2 table on known entries', () => {
    expect(BYTE_TO_CHAR[0x21]).toBe('!');
    expect(BYTE_TO_CHAR[0x61]).toBe('a');
    expect(BYTE_TO_CHAR[0x00]).toBe('\u0100'); // Ā
    expect(BYTE_TO_CHAR[0x20]).toBe('\u0120'); // Ġ
    expect(BYTE_TO_CHAR[0x0a]).toBe('\u010a'); // Ċ
    expect(BYTE_TO_CHAR[0x7f]).toBe('\u0121');
    expect(BYTE_TO_CHAR[0xad]).toBe('\u0143'); // Ń, the last shifted byte
    expect(BYTE_TO_CHAR[0xe9]).toBe('é');
  });

  it('inverts exactly', () => {
    for (let b = 0; b < 256; b++) expect(charToByte(BYTE_TO_CHAR[b]!)).toBe(b);
    expect(charToByte('€')).toBe(-1);
    expect(charToByte('ab')).toBe(-1);
    expect(bytesToByteLevel([0x20, 0x68, 0x69])).toBe('\u0120hi');
    expect(Array.from(byteLevelToBytes('\u0120hi')!)).toEqual([0x20, 0x68, 0x69]);
    expect(byteLevelToBytes('<|€|>')).toBeNull();
  });

  it('writes UTF-8 like TextEncoder, including lone surrogates as U+FFFD', () => {
    const samples = ['', 'abc', 'é', '€', '🤗', 'a\ud800b', '\udc00', 'x\ud83d', '\u07ff\u0800\uffff'];
    for (const s of samples) {
      const out = new Uint8Array(s.length * 3);
      const n = writeUtf8(s, 0, s.length, out, 0);
      expect(Array.from(out.subarray(0, n))).toEqual(Array.from(new TextEncoder().encode(s)));
    }
  });
});
