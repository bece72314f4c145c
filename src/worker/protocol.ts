import { z } from 'zod';
import type { RunStatus } from '../runs/rundir.js';

/** A lock's torch engine (src/recipe/lock.ts EngineLock), as it crosses the wire. */
const EngineLockSchema = z.strictObject({
  kind: z.literal('torch'),
  device: z.enum(['cpu', 'cuda']),
  dtype: z.enum(['fp32', 'bf16']),
  torch: z.string().max(100),
});

// The worker's wire protocol: a small tagged message protocol (y-websocket's style) over one WebSocket.
// Text frames carry JSON messages; binary frames carry a JSON header and raw bytes (upload chunks,
// fetched files). Every message names the protocol version `v`; requests carry an `id` that the reply
// echoes as `re`. Pushes (metrics, events, logs, job state) carry no `re`. Both directions are declared
// here and validated by the receiving end. Keepalive uses WebSocket ping/pong control frames, both ways:
// a peer that answers no ping within its interval is dropped, so a half-open socket is noticed.
//
// Every size, count and length a peer sends is bounded here, so that no message can make the receiver
// allocate in proportion to a number it chose: the frame size bounds strings and arrays, and the
// upload fields are bounded below (see BlobStore for the chunk count).

/** The protocol version this build speaks. A message with another `v` gets a `version` error. */
export const PROTOCOL_VERSION = 1;
/** Largest frame (text or binary) a worker accepts by default; larger ones get a `frame-too-large` error. */
export const MAX_FRAME_BYTES = 4 * 1024 * 1024;
/** Default upload chunk size: each chunk is one binary frame, verified by its own sha256. */
export const CHUNK_BYTES = 1024 * 1024;
/** Smallest chunk an upload may ask for: smaller chunks only multiply frames and bookkeeping. */
export const MIN_CHUNK_BYTES = 1024;
/** Largest file one upload may declare (1 TiB). */
export const MAX_UPLOAD_BYTES = 2 ** 40;
/** Most chunks one upload may have: the worker keeps a record per chunk. */
export const MAX_UPLOAD_CHUNKS = 2 ** 20;
/** Longest path a message may name (Linux's PATH_MAX). */
export const MAX_PATH_CHARS = 4096;
/** Most files one submission may name. */
export const MAX_MANIFEST_FILES = 100_000;
/** Deepest nesting a recipe or lock may have (real ones have a handful of levels). */
export const MAX_DEPTH = 32;
/** Default keepalive: a ping every this many ms; a peer that has not answered by the next one is dropped. */
export const KEEPALIVE_MS = 30_000;

const sha256 = z.string().regex(/^[0-9a-f]{64}$/, { error: 'expected a lowercase hex sha256 (64 characters)' });
const jobId = z.string().regex(/^[A-Za-z0-9._-]{1,80}$/, { error: 'expected a job id such as 20261124-ab12cd' });
const count = z.number().int().nonnegative();
/** A path a client names: bounded, and free of NUL bytes (which no file system call accepts). */
const pathText = z
  .string()
  .min(1)
  .max(MAX_PATH_CHARS)
  .refine((p) => !p.includes('\0'), { error: 'must not contain a NUL byte' });
const base = { v: z.number().int(), id: count };

/** How deeply a JSON value nests, counted without recursion (a hostile value may nest a million deep). */
export function jsonDepth(value: unknown, limit = Infinity): number {
  let deepest = 0;
  const stack: [unknown, number][] = [[value, 1]];
  while (stack.length) {
    const [v, d] = stack.pop()!;
    if (!v || typeof v !== 'object') continue;
    deepest = Math.max(deepest, d);
    if (deepest > limit) return deepest;
    for (const child of Object.values(v)) stack.push([child, d + 1]);
  }
  return deepest;
}

/** A recipe or lock: an object, not nested past MAX_DEPTH (the worker clones and walks it). */
const jsonDocument = z
  .record(z.string(), z.unknown())
  .refine((v) => jsonDepth(v, MAX_DEPTH) <= MAX_DEPTH, { error: `nested deeper than ${MAX_DEPTH} levels` });

/** One file a submission needs, by its path on the client and its content hash. */
export const ManifestEntrySchema = z.strictObject({
  path: pathText,
  sha256,
  bytes: count.max(MAX_UPLOAD_BYTES),
});
export type ManifestEntry = z.infer<typeof ManifestEntrySchema>;
const manifest = z.array(ManifestEntrySchema).max(MAX_MANIFEST_FILES);

/** Messages a client sends (text frames), by type. */
export const ClientMessageSchema = z.discriminatedUnion('type', [
  z.strictObject({ ...base, type: z.literal('hello'), client: z.string().max(200).optional() }),
  z.strictObject({
    ...base,
    type: z.literal('upload.begin'),
    sha256,
    bytes: count.max(MAX_UPLOAD_BYTES),
    chunkBytes: z.number().int().min(MIN_CHUNK_BYTES).max(MAX_UPLOAD_BYTES).optional(),
  }),
  z.strictObject({ ...base, type: z.literal('upload.end'), sha256 }),
  z.strictObject({
    ...base,
    type: z.literal('lock'),
    recipe: jsonDocument,
    baseDir: pathText,
    backend: z.enum(['cpu', 'wasm', 'webgpu']),
    engine: EngineLockSchema.optional(),
    files: manifest,
  }),
  z.strictObject({
    ...base,
    type: z.literal('submit'),
    lock: jsonDocument,
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
    metrics: count.default(0),
    events: count.default(0),
    logs: count.default(0),
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
  index: count.max(MAX_UPLOAD_CHUNKS),
  chunkSha256: sha256,
});
export type ChunkHeader = z.infer<typeof ChunkHeaderSchema>;

// ---- what a worker sends ----

/** A job's status: queued, or a run's status. */
export const JobStatusSchema = z.enum(['queued', 'running', 'completed', 'interrupted', 'cancelled', 'failed']);
// The enum must list exactly a run's statuses plus `queued`.
const _statuses: [z.infer<typeof JobStatusSchema>, 'queued' | RunStatus] extends [
  'queued' | RunStatus,
  z.infer<typeof JobStatusSchema>,
]
  ? true
  : never = true;
void _statuses;

// JSON turns NaN into null: a number field a job may carry as NaN (a diverged loss) reads back as absent.
const maybeNumber = z
  .number()
  .nullish()
  .transform((v) => v ?? undefined)
  .optional();

/** A job as the worker reports it. */
export const JobInfoSchema = z.object({
  id: jobId,
  name: z.string(),
  status: JobStatusSchema,
  stage: z.string(),
  backend: z.string(),
  lockId: z.string(),
  step: count,
  steps: count,
  createdAt: z.string(),
  startedAt: z.string().optional(),
  endedAt: z.string().optional(),
  /** Times the worker resumed it after a restart. */
  restarts: count,
  loss: maybeNumber,
  error: z.string().optional(),
});
/** A job as the worker reports it. */
export type JobInfo = z.output<typeof JobInfoSchema>;

/** Statuses after which a job does no more work. */
export const TERMINAL: ReadonlySet<JobInfo['status']> = new Set(['completed', 'interrupted', 'cancelled', 'failed']);

const backendName = z.enum(['cpu', 'wasm', 'webgpu']);

/** What the worker offers for the torch engine, and its defaults for recipes that name no engine. */
export const WorkerEnginesSchema = z.object({
  /** The engine jobs use when neither the recipe nor the client names one. */
  default: z.enum(['tfjs', 'torch', 'auto']),
  device: z.enum(['cpu', 'cuda']).optional(),
  dtype: z.enum(['fp32', 'bf16']).optional(),
  /** torch on the worker: its version and CUDA devices, or null with `torchWhy`. */
  torch: z.object({ version: z.string(), cuda: z.boolean(), devices: z.number().int().min(0) }).nullable(),
  torchWhy: z.string().optional(),
});

/** What a worker says about itself on hello. */
export const WorkerHelloSchema = z.object({
  worker: z.string(),
  lathe: z.string(),
  protocol: z.number().int(),
  /** The backend jobs use when the recipe does not name one. */
  backend: backendName,
  /** Each backend: "ok", or why it cannot run here. */
  backends: z.object({ cpu: z.string(), wasm: z.string(), webgpu: z.string() }),
  dataRoot: z.boolean(),
  maxFrameBytes: count,
  chunkBytes: count,
  /** How often the worker pings a client (ms); a client that answers none by the next is dropped. */
  keepaliveMs: count.optional(),
  /** Engines (absent from workers before the torch engine: tfjs only). */
  engines: WorkerEnginesSchema.optional(),
});
/** What a worker says about itself on hello. */
export type WorkerHello = z.output<typeof WorkerHelloSchema>;

/** Error codes a worker replies with. */
export const ERROR_CODES = [
  'bad-frame',
  'bad-message',
  'unknown-type',
  'version',
  'frame-too-large',
  'not-found',
  'sha-mismatch',
  'missing-data',
  'path',
  'backend',
  'bad-request',
  'internal',
] as const;
/** Error codes a worker replies with. */
export type ErrorCode = (typeof ERROR_CODES)[number];

const re = { v: z.number().int(), re: count };
const record = z.record(z.string(), z.unknown());
// Metrics and events are the run directory's lines: step and stage (or type) always, then any fields.
const metric = z.looseObject({ step: z.number(), stage: z.string() });
const event = z.looseObject({ type: z.string(), time: z.string() });

/** Messages a worker sends (text frames), by type: replies (with `re`), then pushes. */
export const ServerMessageSchema = z.discriminatedUnion('type', [
  z.object({ ...re, type: z.literal('welcome'), ...WorkerHelloSchema.shape }),
  z.object({
    ...re,
    type: z.literal('upload.status'),
    sha256,
    complete: z.boolean(),
    chunkBytes: count,
    chunks: count.max(MAX_UPLOAD_CHUNKS),
    missing: z.array(count).max(MAX_UPLOAD_CHUNKS),
  }),
  z.object({ ...re, type: z.literal('upload.ack'), sha256, index: count }),
  z.object({ ...re, type: z.literal('upload.done'), sha256, bytes: count }),
  z.object({ ...re, type: z.literal('locked'), lock: record }),
  z.object({ ...re, type: z.literal('submitted'), job: JobInfoSchema }),
  z.object({ ...re, type: z.literal('jobs'), jobs: z.array(JobInfoSchema) }),
  z.object({ ...re, type: z.literal('job'), job: JobInfoSchema, lock: record }),
  z.object({ ...re, type: z.literal('cancelled'), job: JobInfoSchema, was: JobStatusSchema }),
  z.object({ ...re, type: z.literal('requeued'), job: JobInfoSchema }),
  z.object({ ...re, type: z.literal('watching'), job: JobInfoSchema }),
  z.object({ ...re, type: z.literal('unwatched'), job: jobId }),
  // One fetched file is complete: its size and sha256 (its bytes came as file.chunk binary frames).
  z.object({ ...re, type: z.literal('file.done'), path: pathText, bytes: count, sha256 }),
  z.object({
    ...re,
    type: z.literal('fetched'),
    job: jobId,
    what: z.enum(['run', 'checkpoint', 'export']),
    files: count,
    bytes: count,
  }),
  // An error reply; `re` is absent when the frame it answers had no readable id.
  z.object({
    v: z.number().int(),
    re: count.optional(),
    type: z.literal('error'),
    code: z.enum(ERROR_CODES),
    message: z.string(),
  }),
  // Pushes for a watched job, numbered by their line in metrics.jsonl / events.jsonl / job.log.
  z.object({ v: z.number().int(), type: z.literal('metric'), job: jobId, seq: count, metric }),
  z.object({ v: z.number().int(), type: z.literal('event'), job: jobId, seq: count, event }),
  z.object({ v: z.number().int(), type: z.literal('log'), job: jobId, seq: count, line: z.string() }),
  z.object({ v: z.number().int(), type: z.literal('state'), job: JobInfoSchema }),
]);
/** A message from a worker, as validated. */
export type ServerMessage = z.output<typeof ServerMessageSchema>;
/** A message as a worker writes it (the version is filled in when it is sent). */
export type ServerSend = DistributiveOmit<z.input<typeof ServerMessageSchema>, 'v'>;
/** One worker message type, by name. */
export type ServerMessageOf<T extends ServerMessage['type']> = Extract<ServerMessage, { type: T }>;

/** The reply each request gets when it succeeds (any request may get an `error` instead). */
export const REPLIES = {
  hello: 'welcome',
  'upload.begin': 'upload.status',
  'upload.end': 'upload.done',
  lock: 'locked',
  submit: 'submitted',
  jobs: 'jobs',
  job: 'job',
  cancel: 'cancelled',
  requeue: 'requeued',
  watch: 'watching',
  unwatch: 'unwatched',
  fetch: 'fetched',
} as const satisfies Record<ClientMessage['type'], ServerMessage['type']>;
/** The reply to a request of type T. */
export type ReplyTo<T extends ClientMessage['type']> = ServerMessageOf<(typeof REPLIES)[T]>;

/** Message types a worker sends. */
export const SERVER_TYPES: ReadonlySet<string> = new Set(ServerMessageSchema.options.map((o) => o.shape.type.value));

/** The header of a binary frame from a worker: a piece of a fetched file, at its offset. */
export const FileChunkHeaderSchema = z.object({
  v: z.number().int(),
  re: count,
  type: z.literal('file.chunk'),
  path: pathText,
  offset: count.max(MAX_UPLOAD_BYTES),
});
/** The header of a binary frame from a worker, as validated. */
export type FileChunkHeader = z.output<typeof FileChunkHeaderSchema>;

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

/** Parses and validates a client's text frame; throws a ProtocolError naming the frame's fault. */
export function parseClientText(text: string): ClientMessage {
  return validate(parseJson(text), ClientMessageSchema, CLIENT_TYPES, 'client') as ClientMessage;
}

/** Parses and validates a worker's text frame (on the client); throws a ProtocolError naming the fault. */
export function parseServerText(text: string): ServerMessage {
  return validate(parseJson(text), ServerMessageSchema, SERVER_TYPES, 'worker') as ServerMessage;
}

function parseJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new ProtocolError('bad-frame', `frame is not JSON: ${(e as Error).message}`);
  }
}

/** A zod issue path as a field name: `files[0].path`. */
export function fieldName(path: readonly PropertyKey[]): string {
  if (!path.length) return '(message)';
  return path.map((k, i) => (typeof k === 'number' ? `[${k}]` : i ? `.${String(k)}` : String(k))).join('');
}

function validate(raw: unknown, schema: z.ZodType, types: ReadonlySet<string>, from: 'client' | 'worker'): unknown {
  if (!raw || typeof raw !== 'object' || Array.isArray(raw))
    throw new ProtocolError('bad-message', 'frame must be a JSON object with "v", "id" and "type"');
  const o = raw as Record<string, unknown>;
  const id = from === 'client' ? o.id : o.re;
  const re = typeof id === 'number' && Number.isSafeInteger(id) ? id : undefined;
  if (o.v !== PROTOCOL_VERSION)
    throw new ProtocolError(
      'version',
      from === 'client'
        ? `protocol version ${JSON.stringify(o.v)} is not supported; this worker speaks version ${PROTOCOL_VERSION}`
        : `the worker speaks protocol version ${JSON.stringify(o.v)}; this client speaks version ${PROTOCOL_VERSION}`,
      re,
    );
  if (typeof o.type !== 'string') throw new ProtocolError('bad-message', 'field "type": expected a string', re);
  if (!types.has(o.type))
    throw new ProtocolError(
      'unknown-type',
      `unknown message type "${o.type.slice(0, 100)}"; expected one of ${[...types].join(', ')}`,
      re,
    );
  const r = schema.safeParse(raw);
  if (!r.success) {
    const issue = r.error.issues[0]!;
    throw new ProtocolError('bad-message', `${o.type}: field "${fieldName(issue.path)}": ${issue.message}`, re);
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
  return { header: validate(header, ChunkHeaderSchema, CHUNK_TYPES, 'client') as ChunkHeader, payload };
}

/** Parses a worker's binary frame (a piece of a fetched file), on the client. */
export function parseServerBinary(buf: Buffer): { header: FileChunkHeader; payload: Buffer } {
  const { header, payload } = decodeBinary(buf);
  return { header: validate(header, FileChunkHeaderSchema, FILE_CHUNK_TYPES, 'worker') as FileChunkHeader, payload };
}

const CHUNK_TYPES: ReadonlySet<string> = new Set(['upload.chunk']);
const FILE_CHUNK_TYPES: ReadonlySet<string> = new Set(['file.chunk']);
