import { describe, expect, it } from 'vitest';
import { decodeSafetensors, encodeSafetensors, f32, toFloat32 } from './safetensors.js';

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
});
