import { createReadStream } from 'node:fs';
import { LatheError } from '../errors.js';

// The byte-level line scanner every source reader is built on, and the UTF-8 checks that explain bad lines.

/** Receives one line: bytes [start, end) of buf (no \n, no trailing \r, no leading BOM) and its 1-based number. */
export type LineSink = (buf: Uint8Array, start: number, end: number, lineNo: number) => void;

/** Per-file stats the line scanner reports when it ends. */
export interface ScanEnd {
  bytes: number;
  lines: number;
}

/** Read chunk size in bytes when the caller does not set one. */
export const DEFAULT_HWM = 64 << 10;

const NL = 0x0a;
const CR = 0x0d;

/**
 * Streams a file's lines (split on \n, a trailing \r and a leading BOM removed) into `sink`, yielding after every
 * chunk so the caller can hand out what the sink produced; memory stays bounded by chunk size plus the longest line.
 */
export async function* scanLines(file: string, hwm: number, sink: LineSink): AsyncGenerator<void, ScanEnd> {
  const stream = createReadStream(file, { highWaterMark: hwm });
  let carry: Buffer[] = [];
  let bytes = 0;
  let lineNo = 0;
  const emit = (buf: Uint8Array, start: number, end: number): void => {
    lineNo++;
    if (end > start && buf[end - 1] === CR) end--;
    if (lineNo === 1 && end - start >= 3 && buf[start] === 0xef && buf[start + 1] === 0xbb && buf[start + 2] === 0xbf)
      start += 3;
    sink(buf, start, end, lineNo);
  };
  try {
    for await (const chunk of stream as AsyncIterable<Buffer>) {
      bytes += chunk.length;
      let pos = 0;
      let nl = chunk.indexOf(NL, 0);
      while (nl !== -1) {
        if (carry.length) {
          carry.push(chunk.subarray(pos, nl));
          const joined = Buffer.concat(carry);
          carry = [];
          emit(joined, 0, joined.length);
        } else {
          emit(chunk, pos, nl);
        }
        pos = nl + 1;
        nl = chunk.indexOf(NL, pos);
      }
      if (pos < chunk.length) carry.push(pos === 0 ? chunk : chunk.subarray(pos));
      yield;
    }
    if (carry.length) {
      const joined = Buffer.concat(carry);
      carry = [];
      emit(joined, 0, joined.length);
      yield;
    }
  } catch (e) {
    // File system errors become user-facing; anything else is a bug and keeps its stack.
    if (typeof (e as NodeJS.ErrnoException).code === 'string' && !(e instanceof LatheError))
      throw new LatheError(`${file}: cannot read: ${(e as Error).message}`);
    throw e;
  } finally {
    stream.destroy();
  }
  return { bytes, lines: lineNo };
}

/** Index (0-based, relative to start) of the first byte that breaks UTF-8, or -1; only used to explain an error. */
export function firstInvalidUtf8(buf: Uint8Array, start = 0, end = buf.length): number {
  let i = start;
  while (i < end) {
    const b = buf[i]!;
    if (b < 0x80) {
      i++;
      continue;
    }
    // Continuation bytes a lead byte needs, and the smallest code point it may encode.
    const [need, min] =
      b >= 0xc2 && b <= 0xdf
        ? [1, 0x80]
        : b >= 0xe0 && b <= 0xef
          ? [2, 0x800]
          : b >= 0xf0 && b <= 0xf4
            ? [3, 0x10000]
            : [0, 0];
    if (!need) return i - start;
    if (i + need >= end) return i - start;
    let cp = b & (0x3f >> need);
    for (let k = 1; k <= need; k++) {
      const c = buf[i + k]!;
      if ((c & 0xc0) !== 0x80) return i - start;
      cp = (cp << 6) | (c & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return i - start;
    i += need + 1;
  }
  return -1;
}

/** Why bytes [start, end) are not UTF-8, naming the first bad byte. */
export function utf8Reason(buf: Uint8Array, start: number, end: number): string {
  const at = firstInvalidUtf8(buf, start, end);
  return at >= 0
    ? `invalid UTF-8 (byte 0x${buf[start + at]!.toString(16).padStart(2, '0')} at byte ${at + 1} of the line)`
    : 'invalid UTF-8';
}

/** True when bytes [start, end) are only ASCII whitespace. */
export function isBlank(buf: Uint8Array, start: number, end: number): boolean {
  for (let i = start; i < end; i++) {
    const b = buf[i]!;
    if (b !== 0x20 && b !== 0x09 && b !== 0x0d && b !== 0x0b && b !== 0x0c) return false;
  }
  return true;
}
