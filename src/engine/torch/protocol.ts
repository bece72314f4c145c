import { z } from 'zod';

// The torch engine's wire format (the other end: src/engine/torch/lathe_torch/protocol.py). Each
// frame is a 4-byte little-endian length, a JSON header, then the raw little-endian bytes of the
// buffers the header lists, in order. Requests: {v, id, op, args, buffers}; replies {id, ok, result,
// buffers} or {id, ok: false, error, user, trace}. Batches and weights travel as binary, never JSON.

/** Bumped when a request or reply changes shape; both ends check it on every request. */
export const TORCH_PROTOCOL_VERSION = 2;

/** A typed array on the wire: float32 or int32, with its shape. */
export interface WireTensor {
  data: Float32Array | Int32Array;
  shape: number[];
}

const BufferSpec = z.strictObject({
  name: z.string(),
  dtype: z.enum(['f32', 'i32']),
  shape: z.array(z.number().int().min(0)),
});

/** A reply as the engine process sends it. */
export const ReplySchema = z.union([
  z.object({
    id: z.number().int(),
    ok: z.literal(true),
    result: z.record(z.string(), z.unknown()),
    buffers: z.array(BufferSpec),
  }),
  z.object({
    id: z.number().int().nullable(),
    ok: z.literal(false),
    error: z.string(),
    user: z.boolean(),
    trace: z.string(),
    buffers: z.array(BufferSpec),
  }),
]);
export type Reply = z.infer<typeof ReplySchema>;

/** The reply of `hello`. */
export const HelloSchema = z.object({
  version: z.number().int(),
  torch: z.string(),
  cuda: z.boolean(),
  devices: z.number().int(),
  threads: z.number().int(),
  bf16: z.boolean(),
});

/** A loss report: the loss and named scalars or vectors. */
export const ReportSchema = z.record(z.string(), z.union([z.number(), z.array(z.number())]));

/** Encodes one request frame (header and buffers) as the chunks to write, in order. */
export function encodeFrame(header: Record<string, unknown>, tensors: Record<string, WireTensor> = {}): Buffer[] {
  const buffers = Object.entries(tensors).map(([name, t]) => {
    const n = t.shape.reduce((a, b) => a * b, 1);
    if (n !== t.data.length) throw new Error(`${name}: shape [${t.shape}] holds ${n} values, not ${t.data.length}`);
    return { name, dtype: t.data instanceof Int32Array ? 'i32' : 'f32', shape: t.shape };
  });
  const head = Buffer.from(JSON.stringify({ ...header, buffers }), 'utf8');
  const len = Buffer.alloc(4);
  len.writeUInt32LE(head.length, 0);
  return [
    len,
    head,
    ...Object.values(tensors).map((t) => Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength)),
  ];
}

/**
 * Reads frames from a byte stream: push chunks as they come; each complete frame comes back with its
 * header parsed and its buffers as typed arrays (copies, so the chunks can go).
 */
export class FrameReader {
  private chunks: Buffer[] = [];
  private length = 0;
  private need?: {
    headLen: number;
    header?: { buffers?: z.infer<typeof BufferSpec>[] } & Record<string, unknown>;
    body: number;
  };

  push(chunk: Buffer): { header: Record<string, unknown>; tensors: Record<string, WireTensor> }[] {
    this.chunks.push(chunk);
    this.length += chunk.length;
    const out = [];
    for (;;) {
      if (!this.need) {
        if (this.length < 4) break;
        this.need = { headLen: this.take(4).readUInt32LE(0), body: 0 };
      }
      if (!this.need.header) {
        if (this.length < this.need.headLen) break;
        const header = JSON.parse(this.take(this.need.headLen).toString('utf8')) as Record<string, unknown> & {
          buffers?: z.infer<typeof BufferSpec>[];
        };
        const specs = z.array(BufferSpec).parse(header.buffers ?? []);
        this.need.header = header;
        this.need.body = specs.reduce((a, s) => a + 4 * s.shape.reduce((x, y) => x * y, 1), 0);
      }
      if (this.length < this.need.body) break;
      const header = this.need.header;
      const tensors: Record<string, WireTensor> = {};
      for (const s of header.buffers ?? []) {
        const n = s.shape.reduce((x, y) => x * y, 1);
        const bytes = this.take(4 * n);
        const copy = new ArrayBuffer(bytes.length);
        new Uint8Array(copy).set(bytes);
        tensors[s.name] = { data: s.dtype === 'i32' ? new Int32Array(copy) : new Float32Array(copy), shape: s.shape };
      }
      this.need = undefined;
      out.push({ header, tensors });
    }
    return out;
  }

  private take(n: number): Buffer {
    let joined: Buffer;
    if (this.chunks[0]!.length >= n) joined = this.chunks[0]!;
    else {
      joined = Buffer.concat(this.chunks);
      this.chunks = [joined];
    }
    const head = joined.subarray(0, n);
    const rest = joined.subarray(n);
    this.chunks[0] = rest;
    if (!rest.length) this.chunks.shift();
    this.length -= n;
    return head;
  }
}
