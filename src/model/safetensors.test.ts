import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { LatheError } from '../errors.js';
import { decodeSafetensors, encodeSafetensors, f32, readSafetensors, toFloat32 } from './safetensors.js';

/** A safetensors file with this header (as JSON) and 8 bytes of data. */
function withHeader(header: unknown): Buffer {
  const json = Buffer.from(JSON.stringify(header));
  const out = Buffer.alloc(8 + json.length + 8);
  out.writeBigUInt64LE(BigInt(json.length), 0);
  json.copy(out, 8);
  return out;
}

describe('safetensors', () => {
  it('round-trips tensors with 8-byte aligned data and metadata', () => {
    const a = Float32Array.from([1, -2.5, 3e-8, 4]);
    const b = Float32Array.from([0.1, 0.2, 0.3]);
    const buf = encodeSafetensors(
      new Map([
        ['layer.b', f32([3], b)],
        ['layer.a', f32([2, 2], a)],
      ]),
      { format: 'pt' },
    );
    const n = Number(buf.readBigUInt64LE(0));
    expect((8 + n) % 8).toBe(0);
    const header = JSON.parse(buf.subarray(8, 8 + n).toString());
    expect(header.__metadata__).toEqual({ format: 'pt' });
    expect(header['layer.a']).toEqual({ dtype: 'F32', shape: [2, 2], data_offsets: [0, 16] });
    const { tensors, metadata } = decodeSafetensors(buf);
    expect(metadata.format).toBe('pt');
    expect(Array.from(toFloat32(tensors.get('layer.a')!))).toEqual(Array.from(a));
    expect(Array.from(toFloat32(tensors.get('layer.b')!))).toEqual(Array.from(b));
  });

  it('converts bf16 and f16', () => {
    const bf = new Uint16Array([0x3f80, 0xc000]); // 1, -2
    const h = new Uint16Array([0x3c00, 0x3800, 0xc400]); // 1, 0.5, -4
    expect(Array.from(toFloat32({ dtype: 'BF16', shape: [2], data: new Uint8Array(bf.buffer) }))).toEqual([1, -2]);
    expect(Array.from(toFloat32({ dtype: 'F16', shape: [3], data: new Uint8Array(h.buffer) }))).toEqual([1, 0.5, -4]);
  });

  it('names the file on corrupt input', () => {
    expect(() => decodeSafetensors(new Uint8Array(4), 'x.safetensors')).toThrow(/x\.safetensors: file is too short/);
    const bad = Buffer.alloc(16);
    bad.writeBigUInt64LE(100n, 0);
    expect(() => decodeSafetensors(bad, 'y.safetensors')).toThrow(
      /y\.safetensors: header length 100 runs past the end/,
    );
  });

  it('names the file and the field when the header is mangled, never an internal error', async () => {
    const w = { dtype: 'F32', shape: [2], data_offsets: [0, 8] };
    const cases: [unknown, string][] = [
      [
        { __metadata_: { format: 'pt' }, w },
        'tensor "__metadata_": header entry has no dtype, shape or data_offsets (a misspelled __metadata__?)',
      ],
      [{ __metadata__: 'pt', w }, '__metadata__ must be an object of strings, got string'],
      [{ __metadata__: ['pt'], w }, '__metadata__ must be an object of strings, got array'],
      [{ __metadata__: { format: 1 }, w }, '__metadata__.format must be a string, got number'],
      [[w], 'header must be a JSON object, got array'],
      [
        { w: { dtype: 'F32', shape: [2] } },
        'tensor "w": data_offsets must be [begin, end] with 0 <= begin <= end, got undefined',
      ],
      [
        { w: { ...w, data_offsets: [8, 0] } },
        'tensor "w": data_offsets must be [begin, end] with 0 <= begin <= end, got [8,0]',
      ],
      [{ w: { ...w, shape: 'x' } }, 'tensor "w": shape must be an array of non-negative integers, got "x"'],
      [{ w: { ...w, dtype: 'F64' } }, 'tensor "w": dtype "F64" is not one of F32, F16, BF16, I32, I8, U8, I64'],
      [{ w: null }, 'tensor "w": header entry must be an object, got null'],
    ];
    for (const [header, msg] of cases)
      expect(() => decodeSafetensors(withHeader(header), 'm.safetensors')).toThrow(
        new LatheError(`m.safetensors: ${msg}`),
      );
    const dir = await mkdtemp(join(tmpdir(), 'lathe-st-'));
    try {
      const f = join(dir, 'model.safetensors');
      await writeFile(f, withHeader({ __metadata__: 7, w }));
      await expect(readSafetensors(f)).rejects.toThrow(`${f}: __metadata__ must be an object of strings, got number`);
      await writeFile(f, withHeader({ __metadata__: { format: 'pt' }, w }));
      expect((await readSafetensors(f)).metadata).toEqual({ format: 'pt' });
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
