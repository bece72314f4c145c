import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { chmod, mkdir, realpath, rm, stat, unlink } from 'node:fs/promises';
import { createServer as createHttpServer, type IncomingMessage, type Server } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { hostname } from 'node:os';
import { join, resolve } from 'node:path';
import type { Duplex } from 'node:stream';
import { WebSocketServer, type RawData, type WebSocket } from 'ws';
import type { EngineRequest } from '../engine/select.js';
import type { BackendRequest } from '../engine/tfjs/backend.js';
import { TORCH_FIX, torchInfoAsync } from '../engine/torch/process.js';
import { LatheError } from '../errors.js';
import { canUnshareNetwork, confineModules } from '../eval/module-host.js';
import { VERSION } from '../version.js';
import { bearerToken, tokenMatches } from './auth.js';
import { chooseWorkerBackend, type WorkerBackends } from './gpu.js';
import { handleMessage } from './handlers.js';
import { isTerminal, JobQueue } from './jobs.js';
import { keepAlive } from './keepalive.js';
import {
  CHUNK_BYTES,
  encodeBinary,
  KEEPALIVE_MS,
  MAX_FRAME_BYTES,
  MIN_CHUNK_BYTES,
  parseClientBinary,
  parseClientText,
  PROTOCOL_VERSION,
  ProtocolError,
  type JobInfo,
  type ServerSend,
  type WorkerHello,
} from './protocol.js';
import type { Session, WatchCursor, WorkerContext } from './session.js';
import { BlobStore } from './store.js';
import { JobStreams } from './stream.js';

// The worker's transport: an HTTP(S) server that upgrades authorized requests to WebSockets, within
// connection limits; frames parsed and validated, handed to the handlers, and faults answered as
// error replies; a keepalive on every connection. What each request does is in handlers.ts.

/** Default cap on connections from one client address. */
export const MAX_CONNECTIONS_PER_CLIENT = 32;
/** Default cap on connections in total. */
export const MAX_CONNECTIONS = 128;
/** Partial uploads untouched this long are removed when the worker starts (7 days). */
export const UPLOAD_TTL_MS = 7 * 24 * 3600 * 1000;

/** How to run a worker. */
export interface WorkerOptions {
  /** Address to listen on; port 0 picks a free one. */
  host?: string;
  port?: number;
  /** The shared secret clients present as `Authorization: Bearer <token>`. */
  token: string;
  /** Jobs, uploaded data and run directories live here; a restart on the same folder picks up where it stopped. */
  stateDir: string;
  /** Recipes may name files under this folder as `worker:<path>`; they are never copied. */
  dataRoot?: string;
  /** Backend for jobs whose recipe names none (default auto: webgpu, wasm, cpu, the first that runs here). */
  backend?: BackendRequest;
  /** Engine (and torch device and dtype) for jobs whose recipe and client name none (default tfjs). */
  engine?: EngineRequest;
  /** Serve wss:// with this certificate and key (PEM). */
  tls?: { cert: string | Buffer; key: string | Buffer };
  /** Largest frame accepted (default 4 MiB); larger frames get a `frame-too-large` error. */
  maxFrameBytes?: number;
  /** Upload chunk size (default 1 MiB, at least 1 KiB, at most maxFrameBytes less room for the header). */
  chunkBytes?: number;
  /** Most connections from one client address (default 32); more are refused with HTTP 429. */
  maxConnectionsPerClient?: number;
  /** Most connections in total (default 128); more are refused with HTTP 503. */
  maxConnections?: number;
  /** Reward and scorer modules of jobs may use the network when their recipe asks (default: never). */
  moduleNetwork?: boolean;
  /** Ping every client this often, ms (default 30 s); one that answers none by the next ping is dropped. */
  keepaliveMs?: number;
  /** Exit (resolve `finished`) once the first job has ended and every client has gone: one worker per cluster job. */
  once?: boolean;
  /** Where log lines go (default stderr). */
  log?: (line: string) => void;
}

type Resolved = Required<
  Pick<WorkerOptions, 'maxFrameBytes' | 'chunkBytes' | 'maxConnections' | 'maxConnectionsPerClient' | 'keepaliveMs'>
> &
  WorkerOptions;

/** One client connection: the socket and what the handlers see of it. */
class Conn implements Session {
  readonly watches = new Map<string, WatchCursor>();
  constructor(
    readonly ws: WebSocket,
    readonly peer: string,
    readonly address: string,
  ) {}

  send(msg: ServerSend): Promise<void> {
    if (this.ws.readyState !== this.ws.OPEN) return Promise.resolve();
    return new Promise((r) => this.ws.send(JSON.stringify({ v: PROTOCOL_VERSION, ...msg }), () => r()));
  }

  sendBinary(header: Record<string, unknown>, payload: Uint8Array): Promise<void> {
    if (this.ws.readyState !== this.ws.OPEN) return Promise.reject(new Error('client disconnected'));
    return new Promise((res, rej) =>
      this.ws.send(encodeBinary({ v: PROTOCOL_VERSION, ...header }, payload), (e) => (e ? rej(e) : res())),
    );
  }
}

/** A running worker: a WebSocket server in front of a persistent job queue. */
export class WorkerServer {
  readonly queue: JobQueue;
  readonly store: BlobStore;
  readonly opts: Resolved;
  /** Resolves when a `once` worker is done (its job ended and its clients left), or after close(). */
  readonly finished: Promise<void>;
  private http!: Server;
  private wss!: WebSocketServer;
  private conns = new Set<Conn>();
  // Upgrades under way, by client address: counted against the limits like open connections.
  private upgrading = new Map<string, number>();
  private backends!: WorkerBackends;
  private dataRoot?: string;
  private unconfine?: () => void;
  private engines!: Promise<WorkerHello['engines']>;
  private streams: JobStreams;
  private ctx: WorkerContext;
  private pidFile: string;
  private finish!: () => void;
  private closing?: Promise<void>;
  private hadJob = false;

  private constructor(opts: WorkerOptions) {
    const maxFrameBytes = opts.maxFrameBytes ?? MAX_FRAME_BYTES;
    const chunkBytes = Math.min(opts.chunkBytes ?? CHUNK_BYTES, maxFrameBytes - 1024);
    if (chunkBytes < MIN_CHUNK_BYTES)
      throw new LatheError(
        opts.chunkBytes !== undefined && opts.chunkBytes < MIN_CHUNK_BYTES
          ? `--chunk-bytes ${opts.chunkBytes}: at least ${MIN_CHUNK_BYTES}`
          : `--max-frame-bytes ${maxFrameBytes}: at least ${MIN_CHUNK_BYTES + 1024}, room for an upload chunk and its header`,
      );
    this.opts = {
      ...opts,
      maxFrameBytes,
      chunkBytes,
      maxConnections: opts.maxConnections ?? MAX_CONNECTIONS,
      maxConnectionsPerClient: opts.maxConnectionsPerClient ?? MAX_CONNECTIONS_PER_CLIENT,
      keepaliveMs: opts.keepaliveMs ?? KEEPALIVE_MS,
      stateDir: resolve(opts.stateDir),
    };
    this.queue = new JobQueue(this.opts.stateDir);
    this.store = new BlobStore(this.opts.stateDir, chunkBytes);
    this.pidFile = join(this.opts.stateDir, 'worker.pid');
    this.finished = new Promise((r) => (this.finish = r));
    this.ctx = this.context();
    this.streams = new JobStreams(this.ctx, () => this.conns);
  }

  /** Starts a worker: takes the state folder, picks the backend, resumes cut-off jobs, and listens. */
  static async start(opts: WorkerOptions): Promise<WorkerServer> {
    const w = new WorkerServer(opts);
    await w.init();
    return w;
  }

  /** The URL clients connect to (ws:// or wss://; the host as it listens, or this machine's name for 0.0.0.0). */
  get url(): string {
    const a = this.http.address() as AddressInfo;
    const host =
      a.address === '0.0.0.0' || a.address === '::' ? hostname() : a.family === 'IPv6' ? `[${a.address}]` : a.address;
    return `${this.opts.tls ? 'wss' : 'ws'}://${host}:${a.port}`;
  }

  /** The port it listens on. */
  get port(): number {
    return (this.http.address() as AddressInfo).port;
  }

  /** What hello answers. */
  async hello(): Promise<WorkerHello> {
    return {
      worker: hostname(),
      lathe: VERSION,
      protocol: PROTOCOL_VERSION,
      backend: this.backends.backend,
      backends: this.backends.backends,
      dataRoot: this.dataRoot !== undefined,
      maxFrameBytes: this.opts.maxFrameBytes,
      chunkBytes: this.opts.chunkBytes,
      keepaliveMs: this.opts.keepaliveMs,
      engines: await this.engines,
    };
  }

  /** Connections open now. */
  get connections(): number {
    return this.conns.size;
  }

  private context(): WorkerContext {
    // Getters: the backends and data root are known only once init() ran.
    // eslint-disable-next-line @typescript-eslint/no-this-alias
    const w = this;
    return {
      queue: this.queue,
      store: this.store,
      stateDir: this.opts.stateDir,
      get dataRoot() {
        return w.dataRoot;
      },
      get backends() {
        return w.backends;
      },
      chunkBytes: this.opts.chunkBytes,
      hello: () => this.hello(),
      log: (line) => this.log(line),
      jobAdded: () => (this.hadJob = true),
    };
  }

  private log(line: string): void {
    (this.opts.log ?? ((l: string) => process.stderr.write(`${l}\n`)))(`${new Date().toISOString()} ${line}`);
  }

  private async init(): Promise<void> {
    const o = this.opts;
    // The state folder holds clients' data and tokens of their work: its owner's alone.
    await mkdir(o.stateDir, { recursive: true, mode: 0o700 });
    await chmod(o.stateDir, 0o700);
    this.takeStateDir();
    if (o.dataRoot !== undefined) {
      const real = await realpath(o.dataRoot).catch(() => undefined);
      if (!real || !(await stat(real)).isDirectory())
        throw new LatheError(`--data-root ${o.dataRoot}: not a directory`);
      this.dataRoot = real;
    }
    // Jobs' user modules (rewards, scorers) run confined: they read only themselves, the data root and
    // their job's folder (see src/eval/module-host.ts).
    this.unconfine = confineModules(o.stateDir, {
      read: this.dataRoot ? [this.dataRoot] : [],
      network: o.moduleNetwork === true,
    });
    // The backend first: where webgpu is skipped, the first log line says which part of Vulkan is missing.
    this.backends = await chooseWorkerBackend(o.backend ?? 'auto', (l) => this.log(l));
    if (!canUnshareNetwork())
      this.log(
        "warning: `unshare --net` does not work here (no user namespaces): jobs' reward and scorer modules are not cut off from the network",
      );
    // Importing torch takes a second or two: a worker that does not default to it answers clients meanwhile.
    this.engines = torchInfoAsync().then((torch) => ({
      default: o.engine?.engine ?? 'tfjs',
      device: o.engine?.device,
      dtype: o.engine?.dtype,
      torch: torch.info ? { version: torch.info.torch, cuda: torch.info.cuda, devices: torch.info.devices } : null,
      torchWhy: torch.why,
    }));
    if (o.engine?.engine === 'torch' || o.engine?.device || o.engine?.dtype) {
      const torch = await torchInfoAsync();
      if (!torch.info) throw new LatheError(`--engine torch: ${torch.why}; ${TORCH_FIX}`, 2);
      if (o.engine.device === 'cuda' && !torch.info.cuda)
        throw new LatheError(`--device cuda: torch ${torch.info.torch} here sees no CUDA device`, 2);
    }
    const swept = await this.store.sweep(UPLOAD_TTL_MS);
    if (swept.length) this.log(`removed ${swept.length} unfinished upload(s) nobody came back for`);
    await rm(join(o.stateDir, 'staging'), { recursive: true, force: true }); // locks cut off by a crash
    const { resumed, queued } = await this.queue.load();
    for (const id of resumed)
      this.queue.log(id, 'the worker restarted while this job was running; it resumes from its last checkpoint');
    if (resumed.length || queued.length)
      this.log(`jobs: ${resumed.length} to resume (${resumed.join(', ') || '-'}), ${queued.length} queued`);
    this.hadJob = resumed.length + queued.length > 0;
    this.queue.on('state', (j: JobInfo) => {
      this.streams.onState(j);
      if (isTerminal(j.status)) this.maybeFinish();
    });
    this.queue.on('log', (id: string, line: string, seq: number) => this.streams.onLog(id, line, seq));
    this.queue.on('log-failed', (id: string, line: string, e: Error) =>
      this.log(`job ${id}: could not write to its job.log (${e.message}): ${line}`),
    );
    this.queue.on('live', (id: string) => this.streams.onLive(id));
    this.http = o.tls ? createHttpsServer({ cert: o.tls.cert, key: o.tls.key }) : createHttpServer();
    this.http.on('request', (_req, res) => {
      res.writeHead(426, { 'content-type': 'text/plain' });
      res.end('lathe worker: connect with a WebSocket client (lathe submit, or workers.connect in the library)\n');
    });
    // ws closes a connection on frames over maxPayload; ours is larger, so that a frame just over
    // the protocol's limit gets an error reply and the connection stays up.
    this.wss = new WebSocketServer({ noServer: true, maxPayload: o.maxFrameBytes * 4 + 65536 });
    this.http.on('upgrade', (req, socket, head) => this.upgrade(req, socket, head));
    await new Promise<void>((res, rej) => {
      this.http.once('error', (e: NodeJS.ErrnoException) =>
        rej(
          new LatheError(
            `--listen ${o.host ?? '127.0.0.1'}:${o.port ?? 0}: ${e.code === 'EADDRINUSE' ? 'the port is in use' : e.message}`,
          ),
        ),
      );
      this.http.listen(o.port ?? 0, o.host ?? '127.0.0.1', () => res());
    });
    this.queue.start();
    this.log(
      `lathe worker ${VERSION} listening on ${this.url}; engine ${o.engine?.engine ?? 'tfjs'}; backend ${this.backends.backend} (webgpu: ${this.backends.backends.webgpu}); state ${o.stateDir}` +
        (this.dataRoot ? `; data root ${this.dataRoot}` : '; no data root'),
    );
  }

  // One worker per state folder: a second one would train the same jobs twice.
  private takeStateDir(): void {
    if (existsSync(this.pidFile)) {
      const pid = Number(readFileSync(this.pidFile, 'utf8'));
      let alive: boolean;
      try {
        alive = pid > 0 && pid !== process.pid && process.kill(pid, 0);
      } catch {
        alive = false;
      }
      if (alive)
        throw new LatheError(
          `--state-dir ${this.opts.stateDir}: in use by another worker (pid ${pid}); stop it or choose another folder`,
        );
    }
    writeFileSync(this.pidFile, String(process.pid), { mode: 0o600 });
  }

  private upgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void {
    socket.on('error', () => {});
    const address = clientAddress(req.socket.remoteAddress);
    const peer = `${address}:${req.socket.remotePort}`;
    const token = bearerToken(req.headers.authorization);
    if (!tokenMatches(this.opts.token, token)) {
      // Never log the presented token: only that one was refused, and from where.
      this.log(`refused connection from ${peer}: ${token === undefined ? 'no bearer token' : 'wrong token'}`);
      return refuse(socket, 401, 'Unauthorized', 'lathe worker: wrong or missing token');
    }
    const fromHere = [...this.conns].filter((c) => c.address === address).length + (this.upgrading.get(address) ?? 0);
    const total = this.conns.size + [...this.upgrading.values()].reduce((a, n) => a + n, 0);
    const o = this.opts;
    if (fromHere >= o.maxConnectionsPerClient) {
      this.log(`refused connection from ${peer}: ${fromHere} connections from ${address} already (the limit)`);
      return refuse(
        socket,
        429,
        'Too Many Requests',
        `lathe worker: too many connections from ${address}: ${fromHere} open, the limit is ${o.maxConnectionsPerClient} (lathe worker --max-connections-per-client); close some and retry`,
      );
    }
    if (total >= o.maxConnections) {
      this.log(`refused connection from ${peer}: ${total} connections already (the limit)`);
      return refuse(
        socket,
        503,
        'Service Unavailable',
        `lathe worker: too many connections: ${total} open, the limit is ${o.maxConnections} (lathe worker --max-connections); retry later`,
      );
    }
    // Counted from now: upgrades racing each other must not both slip under the cap.
    this.upgrading.set(address, (this.upgrading.get(address) ?? 0) + 1);
    let counted = true;
    const release = () => {
      if (!counted) return;
      counted = false;
      const n = this.upgrading.get(address)! - 1;
      if (n) this.upgrading.set(address, n);
      else this.upgrading.delete(address);
    };
    socket.once('close', release); // a handshake that fails never reaches the callback
    this.wss.handleUpgrade(req, socket, head, (ws) => {
      release();
      this.accept(new Conn(ws, peer, address));
    });
  }

  private accept(c: Conn): void {
    const { ws, peer } = c;
    this.conns.add(c);
    this.log(`client ${peer} connected`);
    ws.on('message', (data: RawData, isBinary: boolean) => void this.onFrame(c, data as Buffer, isBinary));
    ws.on('error', (e) => this.log(`client ${peer}: ${e.message}`));
    keepAlive(ws, this.opts.keepaliveMs, () => {
      this.log(`client ${peer} answered no ping for ${this.opts.keepaliveMs} ms; dropping it`);
      ws.terminate();
    });
    ws.on('close', () => {
      this.streams.closed(c);
      this.conns.delete(c);
      this.log(`client ${peer} disconnected`);
      this.maybeFinish();
    });
  }

  private async onFrame(c: Conn, data: Buffer, isBinary: boolean): Promise<void> {
    let re: number | undefined;
    try {
      if (data.length > this.opts.maxFrameBytes) {
        throw new ProtocolError(
          'frame-too-large',
          `frame of ${data.length} bytes is over this worker's limit of ${this.opts.maxFrameBytes}; send data as upload chunks`,
        );
      }
      if (isBinary) {
        const { header, payload } = parseClientBinary(data);
        re = header.id;
        await this.store.chunk(header.sha256, header.index, header.chunkSha256, payload);
        await c.send({ type: 'upload.ack', re, sha256: header.sha256, index: header.index });
        return;
      }
      const msg = parseClientText(data.toString('utf8'));
      re = msg.id;
      await handleMessage(this.ctx, this.streams, c, msg);
    } catch (e) {
      const pe =
        e instanceof ProtocolError
          ? e
          : e instanceof LatheError
            ? new ProtocolError('bad-request', e.message)
            : new ProtocolError('internal', `internal error: ${(e as Error).message}`);
      if (pe.code === 'internal') this.log(`client ${c.peer}: ${(e as Error).stack ?? String(e)}`);
      await c.send({ type: 'error', re: pe.re ?? re, code: pe.code, message: pe.message });
    }
  }

  private maybeFinish(): void {
    if (!this.opts.once || !this.hadJob || this.conns.size) return;
    if (this.queue.list().every((j) => isTerminal(j.status))) {
      this.log('once: the job has ended and its clients have left; stopping');
      void this.close();
    }
  }

  /** Stops listening, interrupts the running job with a checkpoint (it resumes at the next start), and releases the state folder. */
  close(): Promise<void> {
    this.closing ??= (async () => {
      for (const c of this.conns) c.ws.close(1001, 'worker stopping');
      this.wss?.close();
      await new Promise<void>((r) => (this.http?.listening ? this.http.close(() => r()) : r()));
      for (const c of this.conns) c.ws.terminate();
      await this.queue.stop();
      await unlink(this.pidFile).catch(() => {});
      this.unconfine?.();
      this.log('worker stopped');
      this.finish();
    })();
    return this.closing;
  }
}

/** A client's address for counting: IPv4 clients of a dual-stack socket appear as ::ffff:a.b.c.d. */
function clientAddress(a: string | undefined): string {
  return (a ?? '?').replace(/^::ffff:(\d+\.\d+\.\d+\.\d+)$/, '$1');
}

/** Answers an upgrade request with a plain HTTP refusal and closes the socket. */
function refuse(socket: Duplex, status: number, text: string, body: string): void {
  socket.end(
    `HTTP/1.1 ${status} ${text}\r\ncontent-type: text/plain\r\ncontent-length: ${Buffer.byteLength(body) + 1}\r\nconnection: close\r\n\r\n${body}\n`,
  );
}
