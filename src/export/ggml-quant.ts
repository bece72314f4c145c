/**
 * ggml's tensor encodings used by the GGUF export: F32, F16 and the block formats Q8_0 and Q4_0
 * (llama.cpp's `ggml-common.h`). Rows (ggml's ne[0], a weight's input dimension) are cut into
 * blocks of 32 values, each stored with one float16 scale d:
 *
 *   Q8_0 (34 bytes): d = max|x| / 127,  q = round(x / d) in [-127, 127],  x ≈ q · d
 *   Q4_0 (18 bytes): d = m / -8 where m is the value of largest magnitude (sign kept),
 *                    q = min(15, trunc(x / d + 8.5)) in [0, 15],  x ≈ (q - 8) · d;
 *                    byte j holds q[j] in its low nibble and q[j + 16] in its high one.
 *
 * The scale is rounded to float16 before the values are divided by it, so x ≈ q · d holds for the
 * d that is stored.
 */

/** ggml tensor types the export writes (their ids in `ggml_type`). */
export const GGML_TYPES = { F32: 0, F16: 1, Q4_0: 2, Q8_0: 8 } as const;
/** A ggml tensor type the export writes. */
export type GgmlType = keyof typeof GGML_TYPES;

/** Values per block of the block formats. */
export const QK = 32;

/** Bytes a row of `n` values takes in a type (`n` a multiple of 32 for the block formats). */
export function rowBytes(type: GgmlType, n: number): number {
  switch (type) {
    case 'F32':
      return 4 * n;
    case 'F16':
      return 2 * n;
    case 'Q8_0':
      return (n / QK) * 34;
    case 'Q4_0':
      return (n / QK) * 18;
  }
}

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** IEEE binary16 bits of a number, rounded to nearest even (overflow gives ±inf, NaN stays NaN). */
export function toHalfBits(x: number): number {
  f32[0] = x;
  const b = u32[0]!;
  const sign = (b >>> 16) & 0x8000;
  const exp = (b >>> 23) & 0xff;
  let mant = b & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
  const e = exp - 112; // rebias 127 -> 15
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    // A float16 subnormal (or zero): m · 2^-24 with m = the 24-bit significand >> (14 - e).
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - e;
    const half = 1 << (shift - 1);
    const rem = mant & ((1 << shift) - 1);
    let m = mant >>> shift;
    if (rem > half || (rem === half && m & 1)) m++;
    return sign | m;
  }
  let h = (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  // A carry out of the mantissa bumps the exponent, up to inf: the encoding makes that right.
  if (rem > 0x1000 || (rem === 0x1000 && h & 1)) h++;
  return sign | h;
}

/** The number a binary16 bit pattern holds. */
export function fromHalfBits(h: number): number {
  const s = h & 0x8000 ? -1 : 1;
  const e = (h >> 10) & 0x1f;
  const f = h & 0x3ff;
  if (e === 0) return s * 2 ** -14 * (f / 1024);
  if (e === 31) return f ? NaN : s * Infinity;
  return s * 2 ** (e - 15) * (1 + f / 1024);
}

/**
 * Encodes `data` (rows of `rowLen` values, row-major) in a ggml type. The block formats need
 * `rowLen` to be a multiple of 32.
 */
export function encodeTensor(type: GgmlType, data: Float32Array, rowLen: number): Uint8Array {
  if (data.length % rowLen) throw new Error(`encodeTensor: ${data.length} values are not rows of ${rowLen}`);
  if ((type === 'Q8_0' || type === 'Q4_0') && rowLen % QK)
    throw new Error(`encodeTensor: ${type} needs rows of a multiple of ${QK} values, got ${rowLen}`);
  const rows = data.length / rowLen;
  const out = new Uint8Array(rows * rowBytes(type, rowLen));
  const view = new DataView(out.buffer);
  switch (type) {
    case 'F32':
      for (let i = 0; i < data.length; i++) view.setFloat32(4 * i, data[i]!, true);
      return out;
    case 'F16':
      for (let i = 0; i < data.length; i++) view.setUint16(2 * i, toHalfBits(data[i]!), true);
      return out;
    case 'Q8_0':
      for (let b = 0; b < data.length / QK; b++) encodeQ8Block(data, b * QK, view, out, b * 34);
      return out;
    case 'Q4_0':
      for (let b = 0; b < data.length / QK; b++) encodeQ4Block(data, b * QK, view, out, b * 18);
      return out;
  }
}

function encodeQ8Block(x: Float32Array, at: number, view: DataView, out: Uint8Array, to: number): void {
  let amax = 0;
  for (let j = 0; j < QK; j++) amax = Math.max(amax, Math.abs(x[at + j]!));
  const bits = toHalfBits(amax / 127);
  const d = fromHalfBits(bits);
  view.setUint16(to, bits, true);
  const inv = d ? 1 / d : 0;
  for (let j = 0; j < QK; j++) {
    const v = x[at + j]! * inv;
    // C's roundf: half away from zero.
    const q = Math.max(-127, Math.min(127, Math.sign(v) * Math.round(Math.abs(v))));
    out[to + 2 + j] = q & 0xff;
  }
}

function encodeQ4Block(x: Float32Array, at: number, view: DataView, out: Uint8Array, to: number): void {
  let amax = 0;
  let max = 0;
  for (let j = 0; j < QK; j++) {
    const v = x[at + j]!;
    if (Math.abs(v) > amax) {
      amax = Math.abs(v);
      max = v;
    }
  }
  const bits = toHalfBits(max / -8);
  const d = fromHalfBits(bits);
  view.setUint16(to, bits, true);
  const inv = d ? 1 / d : 0;
  const level = (v: number) => Math.max(0, Math.min(15, Math.trunc(v * inv + 8.5)));
  for (let j = 0; j < QK / 2; j++) out[to + 2 + j] = level(x[at + j]!) | (level(x[at + j + QK / 2]!) << 4);
}

/** Decodes a tensor written by {@link encodeTensor} (for checks and error reports). */
export function decodeTensor(type: GgmlType, bytes: Uint8Array, count: number): Float32Array {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out = new Float32Array(count);
  switch (type) {
    case 'F32':
      for (let i = 0; i < count; i++) out[i] = view.getFloat32(4 * i, true);
      return out;
    case 'F16':
      for (let i = 0; i < count; i++) out[i] = fromHalfBits(view.getUint16(2 * i, true));
      return out;
    case 'Q8_0':
      for (let b = 0; b < count / QK; b++) {
        const d = fromHalfBits(view.getUint16(b * 34, true));
        for (let j = 0; j < QK; j++) out[b * QK + j] = view.getInt8(b * 34 + 2 + j) * d;
      }
      return out;
    case 'Q4_0':
      for (let b = 0; b < count / QK; b++) {
        const d = fromHalfBits(view.getUint16(b * 18, true));
        for (let j = 0; j < QK / 2; j++) {
          const byte = bytes[b * 18 + 2 + j]!;
          out[b * QK + j] = ((byte & 0x0f) - 8) * d;
          out[b * QK + j + QK / 2] = ((byte >> 4) - 8) * d;
        }
      }
      return out;
  }
}
