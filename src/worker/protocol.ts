import { z } from 'zod';
import type { RunStatus } from '../runs/rundir.js';

// The worker's wire protocol: a small tagged message protocol (y-websocket's style) over one WebSocket.
// Text frames carry JSON messages; binary frames carry a JSON header and raw bytes (upload chunks,
// fetched files). Every message names the protocol version `v`; requests carry an `id` that the reply
// echoes as `re`. Pushes (metrics, events, logs, job state) carry no `re`.

/** The protocol version this build speaks. A message with another `v` gets a `version` error. */
export const PROTOCOL_VERSION = 1;
/** Largest frame (text or binary) a worker accepts by default; larger ones get a `frame-too-large` error. */
export const MAX_FRAME_BYTES = 4 * 1024 * 1024;
/** Default upload chunk size: each chunk is one binary frame, verified by its own sha256. */
export const CHUNK_BYTES = 1024 * 1024;

const sha256 = z.string().regex(/^[0-9a-f]{64}$/, { error: 'expected a lowercase hex sha256 (64 characters)' });
const jobId = z.string().regex(/^[A-Za-z0-9._-]{1,80}$/, { error: 'expected a job id such as 20261124-ab12cd' });
const base = { v: z.number().int(), id: z.number().int().nonnegative() };

/** One file a submission needs, by its path on the client and its content hash. */
export const ManifestEntrySchema = z.strictObject({
  path: z.string().min(1).max(4096),
  sha256,
  bytes: z.number().int().nonnegative(),
});
export type ManifestEntry = z.infer<typeof ManifestEntrySchema>;
const manifest = z.array(ManifestEntrySchema).max(100_000);

/** Messages a client sends (text frames), by type. */
export const ClientMessageSchema = z.discriminatedUnion('type', [
  z.strictObject({ ...base, type: z.literal('hello'), client: z.string().max(200).optional() }),
  z.strictObject({
    ...base,
    type: z.literal('upload.begin'),
    sha256,
    bytes: z.number().int().nonnegative(),
    chunkBytes: z.number().int().positive().optional(),
  }),
  z.strictObject({ ...base, type: z.literal('upload.end'), sha256 }),
  z.strictObject({
    ...base,
    type: z.literal('lock'),
    recipe: z.record(z.string(), z.unknown()),
    baseDir: z.string().min(1),
    backend: z.enum(['cpu', 'wasm', 'webgpu']),
    files: manifest,
  }),
  z.strictObject({
    ...base,
    type: z.literal('submit'),
    lock: z.record(z.string(), z.unknown()),
    files: manifest,
    name: z.string().max(200).optional(),
    stopAfter: z.number().int().positive().optional(),
  }),
  z.strictObject({ ...base, type: z.literal('jobs') }),
  // One job, with the lock it trains (as the worker holds it): what a client needs to follow a job it did not submit.
  z.strictObject({ ...base, type: z.literal('job'), job: jobId }),
  z.strictObject({
    ...base,
    type: z.literal('cancel'),
    job: jobId,
    mode: z.enum(['cancel', 'interrupt']).default('cancel'),
  }),
  z.strictObject({ ...base, type: z.literal('requeue'), job: jobId }),
  // Stream a job from these sequence numbers on: what it already wrote is sent first, then what comes.
  z.strictObject({
    ...base,
    type: z.literal('watch'),
    job: jobId,
    metrics: z.number().int().nonnegative().default(0),
    events: z.number().int().nonnegative().default(0),
    logs: z.number().int().nonnegative().default(0),
  }),
  z.strictObject({ ...base, type: z.literal('unwatch'), job: jobId }),
  z.strictObject({
    ...base,
    type: z.literal('fetch'),
    job: jobId,
    what: z.enum(['run', 'checkpoint', 'export']).default('run'),
  }),
]);
export type ClientMessage = z.infer<typeof ClientMessageSchema>;
/** A client message as written by a client (the version and id are filled in by the connection). */
export type ClientRequest = DistributiveOmit<z.input<typeof ClientMessageSchema>, 'v' | 'id'>;
type DistributiveOmit<T, K extends PropertyKey> = T extends unknown ? Omit<T, K> : never;

/** The header of a binary frame from a client: one upload chunk. */
export const ChunkHeaderSchema = z.strictObject({
  ...base,
  type: z.literal('upload.chunk'),
  sha256,
  index: z.number().int().nonnegative(),
  chunkSha256: sha256,
});
export type ChunkHeader = z.infer<typeof ChunkHeaderSchema>;

/** A job as the worker reports it. */
export interface JobInfo {
  id: string;
  name: string;
  status: 'queued' | RunStatus;
  stage: string;
  backend: string;
  lockId: string;
  step: number;
  steps: number;
  createdAt: string;
  startedAt?: string;
  endedAt?: string;
  /** Times the worker resumed it after a restart. */
  restarts: number;
  loss?: number;
  error?: string;
}

/** Statuses after which a job does no more work. */
export const TERMINAL: ReadonlySet<JobInfo['status']> = new Set(['completed', 'interrupted', 'cancelled', 'failed']);

/** What a worker says about itself on hello. */
export interface WorkerHello {
  worker: string;
  lathe: string;
  protocol: number;
  /** The backend jobs use when the recipe does not name one. */
  backend: 'cpu' | 'wasm' | 'webgpu';
  /** Each backend: "ok", or why it cannot run here. */
  backends: Record<'cpu' | 'wasm' | 'webgpu', string>;
  dataRoot: boolean;
  maxFrameBytes: number;
  chunkBytes: number;
}

/** Error codes a worker replies with. */
export type ErrorCode =
  | 'bad-frame'
  | 'bad-message'
  | 'unknown-type'
  | 'version'
  | 'frame-too-large'
  | 'not-found'
  | 'sha-mismatch'
  | 'missing-data'
  | 'path'
  | 'backend'
  | 'bad-request'
  | 'internal';

/** Message types a worker understands; anything else is `unknown-type`. */
export const CLIENT_TYPES: ReadonlySet<string> = new Set(ClientMessageSchema.options.map((o) => o.shape.type.value));

/** Problem with a frame, ready to send back as an error reply. */
export class ProtocolError extends Error {
  constructor(
    readonly code: ErrorCode,
    message: string,
    readonly re?: number,
  ) {
    super(message);
  }
}

/** Parses and validates a text frame; throws a ProtocolError naming the frame's fault. */
export function parseClientText(text: string): ClientMessage {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    throw new ProtocolError('bad-frame', `frame is not JSON: ${(e as Error).message}`);
  }
  return validate(raw, ClientMessageSchema) as ClientMessage;
}

function validate(raw: unknown, schema: z.ZodType): unknown {
  if (!raw || typeof raw !== 'object' || Array.isArray(raw))
    throw new ProtocolError('bad-message', 'frame must be a JSON object with "v", "id" and "type"');
  const o = raw as Record<string, unknown>;
  const re = typeof o.id === 'number' ? o.id : undefined;
  if (o.v !== PROTOCOL_VERSION)
    throw new ProtocolError(
      'version',
      `protocol version ${JSON.stringify(o.v)} is not supported; this worker speaks version ${PROTOCOL_VERSION}`,
      re,
    );
  if (typeof o.type !== 'string') throw new ProtocolError('bad-message', 'field "type": expected a string', re);
  if (!CLIENT_TYPES.has(o.type) && o.type !== 'upload.chunk')
    throw new ProtocolError(
      'unknown-type',
      `unknown message type "${o.type}"; expected one of ${[...CLIENT_TYPES].join(', ')}`,
      re,
    );
  const r = schema.safeParse(raw);
  if (!r.success) {
    const issue = r.error.issues[0]!;
    const field = issue.path.length ? issue.path.map(String).join('.') : '(message)';
    throw new ProtocolError('bad-message', `${o.type}: field "${field}": ${issue.message}`, re);
  }
  return r.data;
}

/** Packs a binary frame: a 4-byte big-endian header length, the JSON header, then the payload. */
export function encodeBinary(header: object, payload: Uint8Array): Buffer {
  const h = Buffer.from(JSON.stringify(header));
  const out = Buffer.allocUnsafe(4 + h.length + payload.length);
  out.writeUInt32BE(h.length, 0);
  h.copy(out, 4);
  out.set(payload, 4 + h.length);
  return out;
}

/** Unpacks a binary frame into its JSON header and payload; throws a ProtocolError when malformed. */
export function decodeBinary(buf: Buffer): { header: unknown; payload: Buffer } {
  if (buf.length < 4) throw new ProtocolError('bad-frame', 'binary frame shorter than its 4-byte header length');
  const n = buf.readUInt32BE(0);
  if (4 + n > buf.length)
    throw new ProtocolError('bad-frame', `binary frame header length ${n} runs past the frame (${buf.length} bytes)`);
  let header: unknown;
  try {
    header = JSON.parse(buf.subarray(4, 4 + n).toString('utf8'));
  } catch (e) {
    throw new ProtocolError('bad-frame', `binary frame header is not JSON: ${(e as Error).message}`);
  }
  return { header, payload: buf.subarray(4 + n) };
}

/** Parses a client's binary frame (an upload chunk). */
export function parseClientBinary(buf: Buffer): { header: ChunkHeader; payload: Buffer } {
  const { header, payload } = decodeBinary(buf);
  return { header: validate(header, ChunkHeaderSchema) as ChunkHeader, payload };
}
