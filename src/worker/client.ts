import { createHash } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { mkdir, open, rename, rm } from 'node:fs/promises';
import { dirname, isAbsolute, join, normalize } from 'node:path';
import WebSocket from 'ws';
import { LatheError } from '../errors.js';
import type { Metric, RunEvent } from '../runs/rundir.js';
import type { AnyLock } from '../recipe/lock.js';
import { keepAlive } from './keepalive.js';
import {
  encodeBinary,
  KEEPALIVE_MS,
  parseServerBinary,
  parseServerText,
  PROTOCOL_VERSION,
  ProtocolError,
  REPLIES,
  TERMINAL,
  type ClientRequest,
  type FileChunkHeader,
  type JobInfo,
  type ManifestEntry,
  type ReplyTo,
  type ServerMessage,
  type ServerMessageOf,
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
  /** Ping the worker this often, ms (default 30 s); a worker that answers none by the next ping is taken as gone. */
  keepaliveMs?: number;
  /** Told about disconnects and reconnects. */
  log?: (line: string) => void;
}

/** An error reply from a worker: its code (e.g. `sha-mismatch`), or `bad-reply` for a reply that breaks the protocol. */
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

/** Extra handlers of a request whose reply comes in parts (a fetch: file chunks, then each file's end). */
interface Streaming {
  onBinary?(header: FileChunkHeader, payload: Buffer): void;
  onPush?(m: ServerMessageOf<'file.done'>): void;
}

interface Pending extends Streaming {
  /** The reply type that answers it. */
  expect: ServerMessage['type'];
  resolve(m: ServerMessage): void;
  reject(e: Error): void;
}

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
          // The refusal's body says why (a connection limit, say): read a little of it.
          let body = '';
          res.setEncoding('utf8');
          res.on('data', (d: string) => (body = (body + d).slice(0, 1000)));
          res.once('close', () => {
            const why = body.trim().replace(/^lathe worker: /, '');
            reject(
              new LatheError(
                res.statusCode === 401
                  ? `worker ${this.url} refused the token (401); check --token-file`
                  : res.statusCode === 429 || res.statusCode === 503
                    ? `worker ${this.url} refused the connection (${res.statusCode}): ${why}`
                    : `worker ${this.url} answered HTTP ${res.statusCode}, not a WebSocket`,
              ),
            );
            ws.terminate();
          });
        });
        ws.once('error', (e) => reject(new LatheError(`cannot reach the worker at ${this.url}: ${e.message}`)));
      });
      this.ws = ws;
      ws.on('message', (data: Buffer, isBinary: boolean) => this.onFrame(data, isBinary));
      ws.on('close', () => this.onClose(ws));
      ws.on('error', () => {});
      const every = this.opts.keepaliveMs ?? KEEPALIVE_MS;
      keepAlive(ws, every, () => {
        this.opts.log?.(`the worker at ${this.url} answered no ping for ${every} ms; dropping the connection`);
        ws.terminate();
      });
      try {
        const { v: _v, re: _re, type: _type, ...hello } = await this.request({ type: 'hello', client: `lathe` });
        if (hello.protocol !== PROTOCOL_VERSION)
          throw new LatheError(
            `worker ${this.url} speaks protocol ${hello.protocol}; this client speaks ${PROTOCOL_VERSION}`,
          );
        this.hello = hello;
      } catch (e) {
        // Not a connection to keep: forget it before closing, so its close is not taken for a drop.
        this.ws = undefined;
        ws.terminate();
        throw e;
      }
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

  // Every frame is validated against the protocol before it is used: a reply that breaks it fails
  // its request with a `bad-reply` WorkerError; a push that breaks it is reported and dropped.
  private onFrame(data: Buffer, isBinary: boolean): void {
    let m: ServerMessage;
    try {
      if (isBinary) {
        const { header, payload } = parseServerBinary(data);
        return this.part(header.re, (p) => p.onBinary?.(header, payload));
      }
      m = parseServerText(data.toString('utf8'));
    } catch (e) {
      const pe = e instanceof ProtocolError ? e : new ProtocolError('bad-frame', String(e));
      const err = new WorkerError('bad-reply', `broke the protocol: ${pe.message}`);
      const p = pe.re === undefined ? undefined : this.pending.get(pe.re);
      if (p) {
        this.pending.delete(pe.re!);
        p.reject(err);
      } else this.emit('worker-error', err);
      return;
    }
    if ('re' in m && m.re !== undefined) {
      const re = m.re;
      const p = this.pending.get(re);
      if (!p) return;
      if (m.type === 'error') {
        this.pending.delete(re);
        p.reject(new WorkerError(m.code, m.message));
      } else if (m.type === 'file.done' && p.onPush)
        this.part(re, (q) => q.onPush?.(m as ServerMessageOf<'file.done'>));
      else {
        this.pending.delete(re);
        if (m.type === p.expect) p.resolve(m);
        else p.reject(new WorkerError('bad-reply', `broke the protocol: answered ${m.type}, expected ${p.expect}`));
      }
      return;
    }
    switch (m.type) {
      case 'error':
        this.emit('worker-error', new WorkerError(m.code, m.message));
        return;
      case 'metric': {
        const w = this.watching(m.job);
        if (!w || m.seq !== w.metrics) return; // a repeat (already seen); gaps cannot happen on one ordered socket
        w.metrics = m.seq + 1;
        w.handlers.metric?.(m.metric as Metric, m.seq);
        return;
      }
      case 'event': {
        const w = this.watching(m.job);
        if (!w || m.seq !== w.events) return;
        w.events = m.seq + 1;
        w.handlers.event?.(m.event as RunEvent, m.seq);
        return;
      }
      case 'log': {
        const w = this.watching(m.job);
        if (!w || m.seq !== w.logs) return;
        w.logs = m.seq + 1;
        w.handlers.log?.(m.line, m.seq);
        return;
      }
      case 'state':
        this.watching(m.job.id)?.handlers.state?.(m.job);
        return;
    }
  }

  // One part of a reply in several (a fetched file's chunk or end): a handler that throws (a file
  // the worker should not have sent) fails the request rather than this process.
  private part(re: number, fn: (p: Pending) => void): void {
    const p = this.pending.get(re);
    if (!p) return;
    try {
      fn(p);
    } catch (e) {
      this.pending.delete(re);
      p.reject(e instanceof Error ? e : new Error(String(e)));
    }
  }

  private watching(job: string): WatchState | undefined {
    const w = this.watches.get(job);
    return w && !w.closed ? w : undefined;
  }

  /** Sends a request and waits for its reply (validated, of the type that answers it); an error reply throws a WorkerError. */
  request<M extends ClientRequest>(msg: M, extra: Streaming = {}): Promise<ReplyTo<M['type']>> {
    const ws = this.ws;
    if (!ws || ws.readyState !== WebSocket.OPEN) return Promise.reject(new ConnectionLost(this.url));
    const id = this.nextId++;
    return new Promise<ReplyTo<M['type']>>((resolve, reject) => {
      const expect = REPLIES[msg.type];
      this.pending.set(id, { expect, resolve: resolve as (m: ServerMessage) => void, reject, ...extra });
      ws.send(JSON.stringify({ v: PROTOCOL_VERSION, id, ...msg }), (e) => {
        if (e && this.pending.delete(id)) reject(new ConnectionLost(this.url));
      });
    });
  }

  private sendChunk(header: Record<string, unknown>, payload: Buffer): Promise<ServerMessage> {
    const ws = this.ws;
    if (!ws || ws.readyState !== WebSocket.OPEN) return Promise.reject(new ConnectionLost(this.url));
    const id = this.nextId++;
    return new Promise<ServerMessage>((resolve, reject) => {
      this.pending.set(id, { expect: 'upload.ack', resolve, reject });
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
    const { chunkBytes, chunks, missing } = st;
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
    return (await this.request({ type: 'jobs' })).jobs;
  }

  /** One job and the lock it trains (with the worker's paths); a WorkerError `not-found` if there is none. */
  async job(job: string): Promise<{ job: JobInfo; lock: AnyLock }> {
    const r = await this.request({ type: 'job', job });
    return { job: r.job, lock: r.lock as unknown as AnyLock };
  }

  /** Cancels a job (or interrupts it, leaving it resumable); returns its state after it stopped. */
  async cancel(
    job: string,
    mode: 'cancel' | 'interrupt' = 'cancel',
  ): Promise<{ job: JobInfo; was: JobInfo['status'] }> {
    const r = await this.request({ type: 'cancel', job, mode });
    return { job: r.job, was: r.was };
  }

  /** Queues an interrupted job again; it resumes from its last checkpoint. */
  async requeue(job: string): Promise<JobInfo> {
    return (await this.request({ type: 'requeue', job })).job;
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
    const onBinary = (h: FileChunkHeader, payload: Buffer) => {
      const path = h.path;
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
      const offset = h.offset;
      cur.writes = cur.writes
        .then(() => cur.fh!.write(payload, 0, payload.length, offset))
        .catch((e: Error) => (failure ??= e));
    };
    const done: Promise<unknown>[] = [];
    const onPush = (m: ServerMessageOf<'file.done'>) => {
      const path = m.path;
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
              `fetch: ${path} arrived with sha256 ${digest.slice(0, 12)}…, not ${m.sha256.slice(0, 12)}…`,
            );
          await rename(f.tmp, safe(path));
        }),
      );
    };
    try {
      const r = await this.request({ type: 'fetch', job, what }, { onBinary, onPush });
      await Promise.all(done);
      if (failure) throw failure;
      return { files: r.files, bytes: r.bytes };
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
