import { readFile } from 'node:fs/promises';
import { LatheError } from '../errors.js';

/** A tensor as stored in a safetensors file. */
export interface StoredTensor {
  dtype: 'F32' | 'F16' | 'BF16' | 'I32' | 'I8' | 'U8' | 'I64';
  shape: number[];
  data: Uint8Array;
}

/** Float32 tensor for the common case. */
export function f32(shape: number[], data: Float32Array): StoredTensor {
  return { dtype: 'F32', shape, data: new Uint8Array(data.buffer, data.byteOffset, data.byteLength) };
}

/**
 * Serialises tensors in the safetensors layout: u64 header length, JSON header, then the data.
 * Offsets are 8-byte aligned (the header is space-padded) so readers can map them in place.
 */
export function encodeSafetensors(tensors: Map<string, StoredTensor>, metadata: Record<string, string> = {}): Buffer {
  const header: Record<string, unknown> = {};
  if (Object.keys(metadata).length) header.__metadata__ = metadata;
  let offset = 0;
  const names = [...tensors.keys()].sort();
  for (const name of names) {
    const t = tensors.get(name)!;
    header[name] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + t.data.byteLength] };
    offset += t.data.byteLength;
  }
  let json = JSON.stringify(header);
  json += ' '.repeat((8 - ((8 + Buffer.byteLength(json)) % 8)) % 8);
  const head = Buffer.from(json, 'utf8');
  const out = Buffer.alloc(8 + head.length + offset);
  out.writeBigUInt64LE(BigInt(head.length), 0);
  head.copy(out, 8);
  let at = 8 + head.length;
  for (const name of names) {
    const d = tensors.get(name)!.data;
    out.set(d, at);
    at += d.byteLength;
  }
  return out;
}

const DTYPE_BYTES: Record<StoredTensor['dtype'], number> = { F32: 4, F16: 2, BF16: 2, I32: 4, I8: 1, U8: 1, I64: 8 };

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
const typeName = (v: unknown): string => (v === null ? 'null' : Array.isArray(v) ? 'array' : typeof v);
const isCount = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;

/** `__metadata__` is a map of strings to strings (the safetensors format). */
function checkMetadata(v: unknown, where: string): Record<string, string> {
  if (!isObject(v)) throw new LatheError(`${where}: __metadata__ must be an object of strings, got ${typeName(v)}`);
  for (const [k, x] of Object.entries(v))
    if (typeof x !== 'string') throw new LatheError(`${where}: __metadata__.${k} must be a string, got ${typeName(x)}`);
  return v as Record<string, string>;
}

/** One tensor's header entry: dtype, shape and data offsets, each checked so a mangled header is named, not crashed on. */
function checkEntry(
  name: string,
  v: unknown,
  where: string,
): { dtype: StoredTensor['dtype']; shape: number[]; data_offsets: [number, number] } {
  const at = `${where}: tensor ${JSON.stringify(name)}`;
  if (!isObject(v)) throw new LatheError(`${at}: header entry must be an object, got ${typeName(v)}`);
  const { dtype, shape, data_offsets: off } = v;
  if (dtype === undefined && shape === undefined && off === undefined)
    throw new LatheError(
      `${at}: header entry has no dtype, shape or data_offsets${/meta/i.test(name) ? ' (a misspelled __metadata__?)' : ''}`,
    );
  if (typeof dtype !== 'string' || !(dtype in DTYPE_BYTES))
    throw new LatheError(`${at}: dtype ${JSON.stringify(dtype)} is not one of ${Object.keys(DTYPE_BYTES).join(', ')}`);
  if (!Array.isArray(shape) || !shape.every(isCount))
    throw new LatheError(`${at}: shape must be an array of non-negative integers, got ${JSON.stringify(shape)}`);
  if (!Array.isArray(off) || off.length !== 2 || !off.every(isCount) || off[0] > off[1])
    throw new LatheError(`${at}: data_offsets must be [begin, end] with 0 <= begin <= end, got ${JSON.stringify(off)}`);
  return { dtype: dtype as StoredTensor['dtype'], shape, data_offsets: off as [number, number] };
}

/** Parses a safetensors buffer; `where` names the file in errors. */
export function decodeSafetensors(
  buf: Uint8Array,
  where = 'safetensors',
): { tensors: Map<string, StoredTensor>; metadata: Record<string, string> } {
  if (buf.byteLength < 8) throw new LatheError(`${where}: file is too short to be safetensors`);
  const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const n = Number(view.getBigUint64(0, true));
  if (8 + n > buf.byteLength) throw new LatheError(`${where}: header length ${n} runs past the end of the file`);
  let header: unknown;
  try {
    header = JSON.parse(Buffer.from(buf.buffer, buf.byteOffset + 8, n).toString('utf8'));
  } catch (e) {
    throw new LatheError(`${where}: header is not valid JSON (${(e as Error).message})`);
  }
  if (!isObject(header)) throw new LatheError(`${where}: header must be a JSON object, got ${typeName(header)}`);
  const base = 8 + n;
  const tensors = new Map<string, StoredTensor>();
  let metadata: Record<string, string> = {};
  for (const [name, info] of Object.entries(header)) {
    if (name === '__metadata__') {
      metadata = checkMetadata(info, where);
      continue;
    }
    const t = checkEntry(name, info, where);
    const [a, b] = t.data_offsets;
    const want = t.shape.reduce((x, y) => x * y, 1) * DTYPE_BYTES[t.dtype];
    if (!(b - a === want) || base + b > buf.byteLength)
      throw new LatheError(`${where}: tensor ${name} has inconsistent offsets or dtype ${t.dtype}`);
    // Copy so the result is aligned and independent of the file buffer.
    tensors.set(name, { dtype: t.dtype, shape: t.shape, data: buf.slice(base + a, base + b) });
  }
  return { tensors, metadata };
}

/** Float32 view of a stored tensor (converting F16/BF16). */
export function toFloat32(t: StoredTensor): Float32Array {
  if (t.dtype === 'F32') return new Float32Array(t.data.buffer, t.data.byteOffset, t.data.byteLength / 4);
  const n = t.data.byteLength / 2;
  const u16 = new Uint16Array(t.data.buffer, t.data.byteOffset, n);
  const out = new Float32Array(n);
  const scratch = new Uint32Array(1);
  const asF = new Float32Array(scratch.buffer);
  for (let i = 0; i < n; i++) {
    const h = u16[i]!;
    if (t.dtype === 'BF16') {
      scratch[0] = h << 16;
      out[i] = asF[0]!;
    } else {
      const s = h & 0x8000 ? -1 : 1;
      const e = (h >> 10) & 0x1f;
      const f = h & 0x3ff;
      out[i] =
        e === 0 ? s * 2 ** -14 * (f / 1024) : e === 31 ? (f ? NaN : s * Infinity) : s * 2 ** (e - 15) * (1 + f / 1024);
    }
  }
  return out;
}

/** Reads and parses a safetensors file. */
export async function readSafetensors(
  path: string,
): Promise<{ tensors: Map<string, StoredTensor>; metadata: Record<string, string> }> {
  return decodeSafetensors(await readFile(path), path);
}
