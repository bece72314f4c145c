/**
 * A GGUF (version 3) file writer, after the format's public spec (ggml's docs/gguf.md), all
 * little-endian:
 *
 *   header   "GGUF", u32 version = 3, u64 tensor count, u64 metadata count
 *   metadata key (string), u32 value type, value     -- strings are u64 length + UTF-8 bytes
 *   tensors  name (string), u32 dims, u64 ne[dims], u32 ggml type, u64 offset into the data
 *   data     each tensor's bytes at its offset, aligned to `general.alignment` (32)
 *
 * ne[0] is the fastest-varying dimension, so a row-major [rows, cols] matrix has ne = [cols, rows].
 * Tensor bytes are produced one at a time while the file is written, so a whole converted model
 * is never held in memory.
 */
import { open, rename, rm } from 'node:fs/promises';
import { GGML_TYPES, rowBytes, type GgmlType } from './ggml-quant.js';

/** GGUF metadata value types (their ids in `gguf_type`). */
const VALUE_TYPES = { u8: 0, i8: 1, u16: 2, i16: 3, u32: 4, i32: 5, f32: 6, bool: 7, string: 8, array: 9, u64: 10 };

/** Alignment of the data section and of every tensor in it. */
export const GGUF_ALIGNMENT = 32;

interface TensorEntry {
  name: string;
  type: GgmlType;
  ne: number[];
  bytes: number;
  offset: number;
  data: () => Uint8Array;
}

/** Collects metadata and tensors, then writes them as one GGUF file. */
export class GgufWriter {
  private readonly kv: Buffer[] = [];
  private readonly keys = new Set<string>();
  private readonly tensors: TensorEntry[] = [];
  private dataBytes = 0;

  /** Metadata keys in the order added. */
  get metadataKeys(): string[] {
    return [...this.keys];
  }

  u32(key: string, v: number): this {
    return this.put(key, VALUE_TYPES.u32, u32(v));
  }
  i32(key: string, v: number): this {
    const b = Buffer.alloc(4);
    b.writeInt32LE(v);
    return this.put(key, VALUE_TYPES.i32, b);
  }
  f32(key: string, v: number): this {
    const b = Buffer.alloc(4);
    b.writeFloatLE(v);
    return this.put(key, VALUE_TYPES.f32, b);
  }
  bool(key: string, v: boolean): this {
    return this.put(key, VALUE_TYPES.bool, Buffer.from([v ? 1 : 0]));
  }
  string(key: string, v: string): this {
    return this.put(key, VALUE_TYPES.string, str(v));
  }
  /** An array of strings. */
  strings(key: string, vs: readonly string[]): this {
    return this.put(key, VALUE_TYPES.array, Buffer.concat([u32(VALUE_TYPES.string), u64(vs.length), ...vs.map(str)]));
  }
  /** An array of int32. */
  i32s(key: string, vs: ArrayLike<number>): this {
    const b = Buffer.alloc(12 + 4 * vs.length);
    b.writeUInt32LE(VALUE_TYPES.i32, 0);
    b.writeBigUInt64LE(BigInt(vs.length), 4);
    for (let i = 0; i < vs.length; i++) b.writeInt32LE(vs[i]!, 12 + 4 * i);
    return this.put(key, VALUE_TYPES.array, b);
  }

  /**
   * Adds a tensor of shape `ne` (ggml order: ne[0] varies fastest) whose bytes `data()` returns,
   * encoded in `type`, when the file is written.
   */
  tensor(name: string, type: GgmlType, ne: readonly number[], data: () => Uint8Array): this {
    if (this.tensors.some((t) => t.name === name)) throw new Error(`gguf: tensor ${name} added twice`);
    const rows = ne.slice(1).reduce((a, b) => a * b, 1);
    const bytes = rows * rowBytes(type, ne[0]!);
    this.dataBytes = align(this.dataBytes);
    this.tensors.push({ name, type, ne: ne.slice(), bytes, offset: this.dataBytes, data });
    this.dataBytes += bytes;
    return this;
  }

  /** Size of the file {@link write} produces, in bytes. */
  get size(): number {
    return align(this.header().length) + this.dataBytes;
  }

  /** Writes the file: to a temporary sibling first, renamed into place once complete. */
  async write(path: string): Promise<void> {
    const tmp = `${path}.tmp-${process.pid}-${Date.now()}`;
    const fh = await open(tmp, 'w');
    try {
      const head = this.header();
      let pos = 0;
      const put = async (b: Uint8Array) => {
        await fh.write(b, 0, b.length, pos);
        pos += b.length;
      };
      await put(head);
      const base = align(head.length);
      for (const t of this.tensors) {
        const data = t.data();
        if (data.length !== t.bytes)
          throw new Error(`gguf: tensor ${t.name} has ${data.length} bytes, expected ${t.bytes}`);
        await put(new Uint8Array(base + t.offset - pos));
        await put(data);
      }
      await fh.sync();
      await fh.close();
      await rename(tmp, path);
    } catch (e) {
      await fh.close().catch(() => {});
      await rm(tmp, { force: true });
      throw e;
    }
  }

  private put(key: string, type: number, value: Buffer): this {
    if (this.keys.has(key)) throw new Error(`gguf: metadata key ${key} set twice`);
    this.keys.add(key);
    this.kv.push(str(key), u32(type), value);
    return this;
  }

  private header(): Buffer {
    const infos = this.tensors.map((t) =>
      Buffer.concat([str(t.name), u32(t.ne.length), ...t.ne.map(u64), u32(GGML_TYPES[t.type]), u64(t.offset)]),
    );
    return Buffer.concat([
      Buffer.from('GGUF', 'latin1'),
      u32(3),
      u64(this.tensors.length),
      u64(this.keys.size),
      ...this.kv,
      ...infos,
    ]);
  }
}

const align = (n: number) => Math.ceil(n / GGUF_ALIGNMENT) * GGUF_ALIGNMENT;

function u32(v: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(v);
  return b;
}

function u64(v: number): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(BigInt(v));
  return b;
}

function str(s: string): Buffer {
  const bytes = Buffer.from(s, 'utf8');
  return Buffer.concat([u64(bytes.length), bytes]);
}
