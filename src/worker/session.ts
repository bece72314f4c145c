import type { WorkerBackends } from './gpu.js';
import type { JobQueue } from './jobs.js';
import type { ServerSend, WorkerHello } from './protocol.js';
import type { BlobStore } from './store.js';

// What the message handlers see of the worker: one client's connection, and the worker's shared
// parts. The transport (server.ts) makes both; handlers, streams and fetches only use these.

/** How far a client's watch of one job has been sent: the next sequence numbers it lacks. */
export interface WatchCursor {
  metrics: number;
  events: number;
  logs: number;
  /** Stops the live subscription, if one is attached. */
  detach?: () => void;
}

/** One connected client, as the handlers use it. */
export interface Session {
  /** `address:port`, for the log. */
  readonly peer: string;
  /** The jobs this client watches. */
  readonly watches: Map<string, WatchCursor>;
  /** Sends a message (resolves once written; a closed connection drops it). */
  send(msg: ServerSend): Promise<void>;
  /** Sends a binary frame (rejects when the client has gone, so a long download stops). */
  sendBinary(header: Record<string, unknown>, payload: Uint8Array): Promise<void>;
}

/** The worker's shared parts: its queue, blobs, roots and backends. */
export interface WorkerContext {
  readonly queue: JobQueue;
  readonly store: BlobStore;
  /** The state folder (absolute). */
  readonly stateDir: string;
  /** The --data-root, resolved through symlinks; undefined without one. */
  readonly dataRoot?: string;
  readonly backends: WorkerBackends;
  /** Size of the binary frames a fetch sends. */
  readonly chunkBytes: number;
  /** What hello answers. */
  hello(): Promise<WorkerHello>;
  /** A line for the worker's log. */
  log(line: string): void;
  /** Told when a client queued a job. */
  jobAdded(): void;
}
