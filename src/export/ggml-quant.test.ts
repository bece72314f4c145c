/** ggml encodings: float16 rounding, the Q8_0 and Q4_0 block layouts and their error bounds. */
import { describe, expect, it } from 'vitest';
import { Rng } from '../random.js';
import { decodeTensor, encodeTensor, fromHalfBits, rowBytes, toHalfBits } from './ggml-quant.js';
import { ropeInterleave } from './gguf.js';

describe('float16', () => {
  it('rounds to nearest even, with subnormals, overflow and NaN', () => {
    const cases: [number, number][] = [
      [0, 0x0000],
      [-0, 0x8000],
      [1, 0x3c00],
      [-2, 0xc000],
      [0.5, 0x3800],
      [65504, 0x7bff], // largest finite
      [65519, 0x7bff], // rounds down
      [65520, 0x7c00], // rounds to inf
      [1e6, 0x7c00],
      [-Infinity, 0xfc00],
      [2 ** -14, 0x0400], // smallest normal
      [2 ** -24, 0x0001], // smallest subnormal
      [2 ** -25, 0x0000], // a tie below it: to even (zero)
      [3 * 2 ** -25, 0x0002], // a tie: to even (2)
      [1 + 2 ** -11, 0x3c00], // a tie between 1 and its successor: to even (1)
      [1 + 3 * 2 ** -11, 0x3c02], // a tie: to even (up)
      [1 + 2 ** -10, 0x3c01], // exact
      [0.1, 0x2e66],
      [(2 - 2 ** -10) * 2 ** -15, 0x0400], // a subnormal that rounds up into the normals
    ];
    for (const [x, bits] of cases) expect(toHalfBits(x), `${x}`).toBe(bits);
    expect(toHalfBits(NaN) & 0x7c00).toBe(0x7c00);
    expect(Number.isNaN(fromHalfBits(toHalfBits(NaN)))).toBe(true);
  });

  it('round-trips every float16 value, and the nearest one is chosen for others', () => {
    const wrong: number[] = [];
    for (let h = 0; h < 0x10000; h++) {
      if ((h & 0x7c00) === 0x7c00) continue; // inf, NaN
      if (toHalfBits(fromHalfBits(h)) !== h) wrong.push(h);
    }
    expect(wrong).toEqual([]);
    const rng = new Rng(1);
    const farther: number[] = [];
    for (let i = 0; i < 2000; i++) {
      const x = (rng.next() - 0.5) * 2 ** (rng.int(30) - 20);
      const h = toHalfBits(x);
      const y = fromHalfBits(h);
      // No float16 lies strictly closer than the chosen one.
      for (const n of [h - 1, h + 1])
        if ((n & 0x7fff) < 0x7c00 && Math.abs(fromHalfBits(n) - x) < Math.abs(y - x)) farther.push(x);
    }
    expect(farther).toEqual([]);
  });
});

describe('block formats', () => {
  const rng = new Rng(7);
  const data = new Float32Array(4 * 64).map(() => (rng.next() - 0.5) * 3);
  data.fill(0, 64, 96); // an all-zero block

  it('Q8_0: 34 bytes per 32 values, error at most half a step of the stored scale', () => {
    const bytes = encodeTensor('Q8_0', data, 64);
    expect(bytes.length).toBe(rowBytes('Q8_0', 64) * 4);
    expect(bytes.length).toBe((data.length / 32) * 34);
    const back = decodeTensor('Q8_0', bytes, data.length);
    const view = new DataView(bytes.buffer);
    for (let b = 0; b < data.length / 32; b++) {
      const d = fromHalfBits(view.getUint16(b * 34, true));
      let amax = 0;
      for (let j = 0; j < 32; j++) amax = Math.max(amax, Math.abs(data[b * 32 + j]!));
      expect(d).toBeCloseTo(amax / 127, 4);
      for (let j = 0; j < 32; j++) {
        const i = b * 32 + j;
        expect(Math.abs(back[i]! - data[i]!)).toBeLessThanOrEqual(d / 2 + 1e-6);
        expect(back[i]).toBe(view.getInt8(b * 34 + 2 + j) * d);
      }
    }
    expect([...back.subarray(64, 96)].every((v) => v === 0)).toBe(true);
  });

  it('Q4_0: 18 bytes per 32 values, nibbles j and j+16 share a byte, error at most a step', () => {
    const bytes = encodeTensor('Q4_0', data, 64);
    expect(bytes.length).toBe((data.length / 32) * 18);
    const back = decodeTensor('Q4_0', bytes, data.length);
    const view = new DataView(bytes.buffer);
    for (let b = 0; b < data.length / 32; b++) {
      const d = fromHalfBits(view.getUint16(b * 18, true));
      let m = 0;
      for (let j = 0; j < 32; j++) if (Math.abs(data[b * 32 + j]!) > Math.abs(m)) m = data[b * 32 + j]!;
      expect(d).toBeCloseTo(-m / 8, 3);
      for (let j = 0; j < 16; j++) {
        const byte = bytes[b * 18 + 2 + j]!;
        expect(back[b * 32 + j]).toBe(((byte & 15) - 8) * d);
        expect(back[b * 32 + j + 16]).toBe(((byte >> 4) - 8) * d);
      }
      for (let j = 0; j < 32; j++)
        expect(Math.abs(back[b * 32 + j]! - data[b * 32 + j]!)).toBeLessThanOrEqual(Math.abs(d) + 1e-6);
    }
  });

  it('F16 and F32 store every value; block formats refuse rows that are not whole blocks', () => {
    expect([...decodeTensor('F32', encodeTensor('F32', data, 64), data.length)]).toEqual([...data]);
    const half = decodeTensor('F16', encodeTensor('F16', data, 64), data.length);
    for (let i = 0; i < data.length; i++) expect(half[i]).toBe(fromHalfBits(toHalfBits(data[i]!)));
    expect(() => encodeTensor('Q8_0', new Float32Array(48), 48)).toThrow(/multiple of 32/);
  });
});

describe('RoPE layout', () => {
  it('moves row s*hd/2 + j of each head to row 2j + s (rotate-half pairs become adjacent)', () => {
    const heads = 2;
    const hd = 4;
    const cols = 3;
    const w = new Float32Array(heads * hd * cols).map((_, i) => Math.floor(i / cols));
    const out = ropeInterleave(w, heads, hd, cols);
    const rows = Array.from({ length: heads * hd }, (_, r) => out[r * cols]);
    expect(rows).toEqual([0, 2, 1, 3, 4, 6, 5, 7]);
  });
});
