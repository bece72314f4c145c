import { createHash } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { mkdir, open, rename, rm } from 'node:fs/promises';
import { dirname, isAbsolute, join, normalize } from 'node:path';
import WebSocket from 'ws';
import { LatheError } from '../errors.js';
import type { Metric, RunEvent } from '../runs/rundir.js';
import type { AnyLock } from '../recipe/lock.js';
import {
  decodeBinary,
  encodeBinary,
  PROTOCOL_VERSION,
  TERMINAL,
  type ClientRequest,
  type JobInfo,
  type ManifestEntry,
  type WorkerHello,
} from './protocol.js';

/** How to reach a worker. */
export interface ConnectOptions {
  /** The worker's token (the content of its --token-file). */
  token: string;
  /** PEM certificate(s) to trust, for a wss:// worker with a self-signed certificate. */
  ca?: string | Buffer;
  /** Reconnect by itself after the connection drops (default true); watches resume where they stopped. */
  reconnect?: boolean;
  /** Give up reconnecting after this long without a connection (default 10 minutes). */
  reconnectTimeoutMs?: number;
  /** Told about disconnects and reconnects. */
  log?: (line: string) => void;
}

/** An error reply from a worker: its code (e.g. `sha-mismatch`) and message. */
export class WorkerError extends LatheError {
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(`worker: ${message}`);
  }
}

/** The connection dropped while a request was in flight. */
export class ConnectionLost extends LatheError {
  constructor(url: string) {
    super(`lost the connection to the worker at ${url}`, 1);
  }
}

/** What a watch is told, in order, without gaps or repeats: what the job wrote before the watch began, then what it writes. */
export interface WatchHandlers {
  metric?(m: Metric, seq: number): void;
  event?(e: RunEvent, seq: number): void;
  /** A line of the job's log (job.log on the worker), timestamped; `seq` is its line number there. */
  log?(line: string, seq: number): void;
  state?(job: JobInfo): void;
}

/** A live subscription to one job; survives reconnects. */
export interface Watch {
  job: string;
  /** Next metric, event and log-line sequence numbers expected. */
  metrics: number;
  events: number;
  logs: number;
  close(): void;
}

interface Pending {
  resolve(m: Reply): void;
  reject(e: Error): void;
  onBinary?(header: Record<string, unknown>, payload: Buffer): void;
  onPush?(m: Reply): void;
}

type Reply = Record<string, unknown> & { type: string };

interface WatchState extends Watch {
  handlers: WatchHandlers;
  closed: boolean;
}

/** Upload counts: chunks sent now and chunks the worker already had. */
export interface UploadResult {
  sha256: string;
  sent: number;
  skipped: number;
  bytes: number;
}

/**
 * A connection to a worker: request/reply by id, uploads, watches and fetches. It reconnects by
 * itself (unless told not to) and re-issues every watch from the last point it received, so a
 * client that drops catches up without losing or repeating a point.
 */
export class WorkerClient extends EventEmitter {
  readonly url: string;
  /** What the worker said about itself. */
  hello!: WorkerHello;
  private ws?: WebSocket;
  private nextId = 1;
  private pending = new Map<number, Pending>();
  private watches = new Map<string, WatchState>();
  private closed = false;
  private connecting?: Promise<void>;

  private constructor(
    url: string,
    private readonly opts: ConnectOptions,
  ) {
    super();
    this.url = url;
  }

  /** Connects and says hello; a wrong token or an unreachable worker is a LatheError saying which. */
  static async connect(url: string, opts: ConnectOptions): Promise<WorkerClient> {
    if (!/^wss?:\/\//.test(url))
      throw new LatheError(`--worker ${url}: expected a ws:// or wss:// URL, e.g. ws://gpu-node:8765`);
    if (!opts.token) throw new LatheError("token: a worker needs its token (the content of the worker's --token-file)");
    const c = new WorkerClient(url, opts);
    await c.open();
    return c;
  }

  /** True while the socket is open. */
  get connected(): boolean {
    return this.ws?.readyState === WebSocket.OPEN;
  }

  private open(): Promise<void> {
    this.connecting ??= (async () => {
      const ws = new WebSocket(this.url, {
        headers: { authorization: `Bearer ${this.opts.token}` },
        ca: this.opts.ca,
        maxPayload: 256 * 1024 * 1024,
      });
      await new Promise<void>((resolve, reject) => {
        ws.once('open', () => resolve());
        ws.once('unexpected-response', (_req, res) => {
          reject(
            new LatheError(
              res.statusCode === 401
                ? `worker ${this.url} refused the token (401); check --token-file`
                : `worker ${this.url} answered HTTP ${res.statusCode}, not a WebSocket`,
            ),
          );
          ws.terminate();
        });
        ws.once('error', (e) => reject(new LatheError(`cannot reach the worker at ${this.url}: ${e.message}`)));
      });
      this.ws = ws;
      ws.on('message', (data: Buffer, isBinary: boolean) => this.onFrame(data, isBinary));
      ws.on('close', () => this.onClose(ws));
      ws.on('error', () => {});
      this.hello = (await this.request({ type: 'hello', client: `lathe` })) as unknown as WorkerHello;
      if (this.hello.protocol !== PROTOCOL_VERSION)
        throw new LatheError(
          `worker ${this.url} speaks protocol ${this.hello.protocol}; this client speaks ${PROTOCOL_VERSION}`,
        );
      for (const w of this.watches.values()) void this.sendWatch(w).catch(() => {});
    })().finally(() => (this.connecting = undefined));
    return this.connecting;
  }

  private onClose(ws: WebSocket): void {
    if (ws !== this.ws) return;
    this.ws = undefined;
    for (const [id, p] of this.pending) {
      this.pending.delete(id);
      p.reject(new ConnectionLost(this.url));
    }
    if (this.closed) return;
    this.emit('disconnected');
    if (this.opts.reconnect === false) {
      this.emit('lost', new ConnectionLost(this.url));
      return;
    }
    void this.reconnect();
  }

  private async reconnect(): Promise<void> {
    const deadline = Date.now() + (this.opts.reconnectTimeoutMs ?? 600_000);
    let delay = 100;
    this.opts.log?.(`lost the connection to ${this.url}; reconnecting`);
    while (!this.closed && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, delay));
      delay = Math.min(delay * 2, 2000);
      try {
        await this.open();
        this.opts.log?.(`reconnected to ${this.url}`);
        this.emit('reconnected');
        return;
      } catch (e) {
        // A refused token will not get better by waiting.
        if (e instanceof LatheError && /refused the token/.test(e.message)) break;
      }
    }
    if (!this.closed) this.emit('lost', new ConnectionLost(this.url));
  }

  /** Waits until the connection is up again (or throws when reconnecting gave up). */
  async ready(): Promise<void> {
    if (this.connected) return;
    if (this.closed) throw new LatheError(`the connection to ${this.url} is closed`);
    if (this.opts.reconnect === false) throw new ConnectionLost(this.url);
    await new Promise<void>((resolve, reject) => {
      const ok = () => {
        this.off('lost', bad);
        resolve();
      };
      const bad = (e: Error) => {
        this.off('reconnected', ok);
        reject(e);
      };
      this.once('reconnected', ok);
      this.once('lost', bad);
    });
  }

  private onFrame(data: Buffer, isBinary: boolean): void {
    if (isBinary) {
      const { header, payload } = decodeBinary(data);
      const h = header as Record<string, unknown>;
      this.pending.get(h.re as number)?.onBinary?.(h, payload);
      return;
    }
    const m = JSON.parse(data.toString('utf8')) as Reply;
    if (typeof m.re === 'number') {
      const p = this.pending.get(m.re);
      if (!p) return;
      if (m.type === 'error') {
        this.pending.delete(m.re);
        p.reject(new WorkerError(String(m.code), String(m.message)));
      } else if (p.onPush && m.type === 'file.done') p.onPush(m);
      else {
        this.pending.delete(m.re);
        p.resolve(m);
      }
      return;
    }
    if (m.type === 'error') {
      this.emit('worker-error', new WorkerError(String(m.code), String(m.message)));
      return;
    }
    // Pushes name their job: by id (metric, event, log) or as the job's info (state).
    const w = this.watches.get(typeof m.job === 'string' ? m.job : ((m.job as JobInfo | undefined)?.id ?? ''));
    if (!w || w.closed) return;
    if (m.type === 'metric') {
      const seq = m.seq as number;
      if (seq !== w.metrics) return; // a repeat (already seen); gaps cannot happen on one ordered socket
      w.metrics = seq + 1;
      w.handlers.metric?.(m.metric as Metric, seq);
    } else if (m.type === 'event') {
      const seq = m.seq as number;
      if (seq !== w.events) return;
      w.events = seq + 1;
      w.handlers.event?.(m.event as RunEvent, seq);
    } else if (m.type === 'log') {
      const seq = m.seq as number;
      if (seq !== w.logs) return;
      w.logs = seq + 1;
      w.handlers.log?.(m.line as string, seq);
    } else if (m.type === 'state') w.handlers.state?.(m.job as unknown as JobInfo);
  }

  /** Sends a request and waits for its reply; an error reply throws a WorkerError. */
  request(msg: ClientRequest, extra: Omit<Pending, 'resolve' | 'reject'> = {}): Promise<Reply> {
    const ws = this.ws;
    if (!ws || ws.readyState !== WebSocket.OPEN) return Promise.reject(new ConnectionLost(this.url));
    const id = this.nextId++;
    return new Promise<Reply>((resolve, reject) => {
      this.pending.set(id, { resolve, reject, ...extra });
      ws.send(JSON.stringify({ v: PROTOCOL_VERSION, id, ...msg }), (e) => {
        if (e && this.pending.delete(id)) reject(new ConnectionLost(this.url));
      });
    });
  }

  private sendChunk(header: Record<string, unknown>, payload: Buffer): Promise<Reply> {
    const ws = this.ws;
    if (!ws || ws.readyState !== WebSocket.OPEN) return Promise.reject(new ConnectionLost(this.url));
    const id = this.nextId++;
    return new Promise<Reply>((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      ws.send(encodeBinary({ v: PROTOCOL_VERSION, id, ...header }, payload), (e) => {
        if (e && this.pending.delete(id)) reject(new ConnectionLost(this.url));
      });
    });
  }

  /**
   * Uploads one file unless the worker has it: only the chunks it lacks, `window` in flight at a
   * time, each with its sha256; the worker checks the whole file's sha256 at the end.
   */
  async upload(
    file: ManifestEntry,
    opts: { window?: number; onChunk?: (index: number, chunks: number) => void } = {},
  ): Promise<UploadResult> {
    const st = await this.request({ type: 'upload.begin', sha256: file.sha256, bytes: file.bytes });
    if (st.complete) return { sha256: file.sha256, sent: 0, skipped: 0, bytes: file.bytes };
    const chunkBytes = st.chunkBytes as number;
    const chunks = st.chunks as number;
    const missing = st.missing as number[];
    const fh = await open(file.path, 'r');
    let sent = 0;
    try {
      const queue = [...missing];
      const lane = async () => {
        for (let i = queue.shift(); i !== undefined; i = queue.shift()) {
          const len = Math.min(chunkBytes, file.bytes - i * chunkBytes);
          const buf = Buffer.alloc(len);
          await fh.read(buf, 0, len, i * chunkBytes);
          const chunkSha256 = createHash('sha256').update(buf).digest('hex');
          await this.sendChunk({ type: 'upload.chunk', sha256: file.sha256, index: i, chunkSha256 }, buf);
          sent++;
          opts.onChunk?.(i, chunks);
        }
      };
      await Promise.all(Array.from({ length: Math.max(1, Math.min(opts.window ?? 4, missing.length)) }, lane));
    } finally {
      await fh.close();
    }
    await this.request({ type: 'upload.end', sha256: file.sha256 });
    return { sha256: file.sha256, sent, skipped: chunks - missing.length, bytes: file.bytes };
  }

  /** Uploads files the worker lacks; a dropped connection is retried (resuming each file where it stopped). */
  async uploadAll(
    files: ManifestEntry[],
    onProgress?: (done: number, total: number, r: UploadResult) => void,
  ): Promise<UploadResult[]> {
    const out: UploadResult[] = [];
    const unique = [...new Map(files.map((f) => [f.sha256, f])).values()];
    for (const f of unique) {
      for (let attempt = 0; ; attempt++) {
        try {
          const r = await this.upload(f);
          out.push(r);
          onProgress?.(out.length, unique.length, r);
          break;
        } catch (e) {
          if (!(e instanceof ConnectionLost) || attempt >= 5) throw e;
          await this.ready();
        }
      }
    }
    return out;
  }

  /** Follows a job from the given sequence numbers (default: from its start); re-issued after every reconnect from where it stopped. */
  watch(job: string, handlers: WatchHandlers, from: { metrics?: number; events?: number; logs?: number } = {}): Watch {
    const w: WatchState = {
      job,
      metrics: from.metrics ?? 0,
      events: from.events ?? 0,
      logs: from.logs ?? 0,
      handlers,
      closed: false,
      close: () => {
        w.closed = true;
        this.watches.delete(job);
        if (this.connected) void this.request({ type: 'unwatch', job }).catch(() => {});
      },
    };
    this.watches.set(job, w);
    if (this.connected) void this.sendWatch(w).catch(() => {});
    return w;
  }

  private async sendWatch(w: WatchState): Promise<void> {
    // The reply only confirms the watch: the job's final state comes as a push after every point
    // the worker still had to send, so a job that ended while we were away loses nothing.
    await this.request({ type: 'watch', job: w.job, metrics: w.metrics, events: w.events, logs: w.logs });
  }

  /** Every job on the worker, oldest first. */
  async jobs(): Promise<JobInfo[]> {
    return (await this.request({ type: 'jobs' })).jobs as JobInfo[];
  }

  /** One job and the lock it trains (with the worker's paths); a WorkerError `not-found` if there is none. */
  async job(job: string): Promise<{ job: JobInfo; lock: AnyLock }> {
    const r = await this.request({ type: 'job', job });
    return { job: r.job as JobInfo, lock: r.lock as AnyLock };
  }

  /** Cancels a job (or interrupts it, leaving it resumable); returns its state after it stopped. */
  async cancel(
    job: string,
    mode: 'cancel' | 'interrupt' = 'cancel',
  ): Promise<{ job: JobInfo; was: JobInfo['status'] }> {
    const r = await this.request({ type: 'cancel', job, mode });
    return { job: r.job as JobInfo, was: r.was as JobInfo['status'] };
  }

  /** Queues an interrupted job again; it resumes from its last checkpoint. */
  async requeue(job: string): Promise<JobInfo> {
    return (await this.request({ type: 'requeue', job })).job as JobInfo;
  }

  /**
   * Downloads a job's run directory (or latest checkpoint, or HF export) into `dir`, each file
   * checked against the sha256 the worker computed. `skip` leaves some local files as they are.
   */
  async fetch(
    job: string,
    dir: string,
    what: 'run' | 'checkpoint' | 'export' = 'run',
    skip: (path: string) => boolean = () => false,
  ): Promise<{ files: number; bytes: number }> {
    type Incoming = {
      fh?: Awaited<ReturnType<typeof open>>;
      hash: ReturnType<typeof createHash>;
      tmp: string;
      writes: Promise<unknown>;
    };
    const open_ = new Map<string, Incoming>();
    const safe = (p: string) => {
      const n = normalize(p);
      if (isAbsolute(n) || n.startsWith('..'))
        throw new LatheError(`worker sent a file outside the run directory: ${p}`);
      return join(dir, n);
    };
    let failure: Error | undefined;
    const onBinary = (h: Record<string, unknown>, payload: Buffer) => {
      const path = h.path as string;
      if (skip(path)) return;
      let f = open_.get(path);
      if (!f) {
        const target = safe(path);
        const tmp = `${target}.part-${process.pid}`;
        const hash = createHash('sha256');
        const entry: Incoming = { hash, tmp, writes: Promise.resolve() };
        entry.writes = mkdir(dirname(target), { recursive: true })
          .then(() => open(tmp, 'w'))
          .then((fh) => (entry.fh = fh));
        f = entry;
        open_.set(path, f);
      }
      f.hash.update(payload);
      const cur = f;
      const offset = h.offset as number;
      cur.writes = cur.writes
        .then(() => cur.fh!.write(payload, 0, payload.length, offset))
        .catch((e: Error) => (failure ??= e));
    };
    const done: Promise<unknown>[] = [];
    const onPush = (m: Reply) => {
      const path = m.path as string;
      if (skip(path)) return;
      const f = open_.get(path);
      if (!f) return;
      open_.delete(path);
      const digest = f.hash.digest('hex');
      done.push(
        f.writes.then(async () => {
          await f.fh?.close();
          if (digest !== m.sha256)
            throw new LatheError(
              `fetch: ${path} arrived with sha256 ${digest.slice(0, 12)}…, not ${String(m.sha256).slice(0, 12)}…`,
            );
          await rename(f.tmp, safe(path));
        }),
      );
    };
    try {
      const r = await this.request({ type: 'fetch', job, what }, { onBinary, onPush });
      await Promise.all(done);
      if (failure) throw failure;
      return { files: r.files as number, bytes: r.bytes as number };
    } finally {
      for (const f of open_.values()) {
        await f.writes.catch(() => {});
        await f.fh?.close().catch(() => {});
        await rm(f.tmp, { force: true });
      }
    }
  }

  /** For tests and fault drills: drops the socket as a network failure would (the client reconnects if allowed). */
  drop(): void {
    this.ws?.terminate();
  }

  /** Closes the connection for good. */
  close(): void {
    this.closed = true;
    for (const w of this.watches.values()) w.closed = true;
    this.watches.clear();
    this.ws?.close();
  }
}

/** True when a job status is final. */
export function isFinal(status: JobInfo['status']): boolean {
  return TERMINAL.has(status);
}
