import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, existsSync, readFileSync, writeFileSync } from 'node:fs';
import { mkdir, readdir, realpath, rm, stat, unlink } from 'node:fs/promises';
import { createServer as createHttpServer, type IncomingMessage, type Server } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { hostname } from 'node:os';
import { join, relative, resolve } from 'node:path';
import type { Duplex } from 'node:stream';
import { WebSocketServer, type RawData, type WebSocket } from 'ws';
import type { BackendRequest } from '../engine/tfjs/backend.js';
import { LatheError } from '../errors.js';
import { exportHf } from '../export/hf.js';
import { lockPipeline, lockRecipe, type AnyLock, type RecipeLock } from '../recipe/lock.js';
import type { ResolvedPipeline, ResolvedRecipe } from '../recipe/schema.js';
import { resolveAnyRecipe } from '../recipe/validate.js';
import { RunDir, type Metric, type RunEvent } from '../runs/rundir.js';
import { modelRunDir } from '../recipe/base.js';
import { VERSION } from '../version.js';
import { bearerToken, tokenMatches } from './auth.js';
import { chooseWorkerBackend, type WorkerBackends } from './gpu.js';
import { isTerminal, JobQueue } from './jobs.js';
import { clientLock, placeFiles, relocateLock, workerRecipe, type Relocation } from './paths.js';
import {
  CHUNK_BYTES,
  encodeBinary,
  MAX_FRAME_BYTES,
  parseClientBinary,
  parseClientText,
  PROTOCOL_VERSION,
  ProtocolError,
  type ClientMessage,
  type JobInfo,
  type WorkerHello,
} from './protocol.js';
import { BlobStore } from './store.js';

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
  /** Serve wss:// with this certificate and key (PEM). */
  tls?: { cert: string | Buffer; key: string | Buffer };
  /** Largest frame accepted (default 4 MiB); larger frames get a `frame-too-large` error. */
  maxFrameBytes?: number;
  /** Upload chunk size (default 1 MiB, at most maxFrameBytes less room for the header). */
  chunkBytes?: number;
  /** Exit (resolve `finished`) once the first job has ended and every client has gone: one worker per cluster job. */
  once?: boolean;
  /** Where log lines go (default stderr). */
  log?: (line: string) => void;
}

interface Watch {
  /** The next sequence numbers this client has not been sent. */
  metrics: number;
  events: number;
  logs: number;
  detach?: () => void;
}

interface Conn {
  ws: WebSocket;
  peer: string;
  watches: Map<string, Watch>;
}

/** A running worker: a WebSocket server in front of a persistent job queue. */
export class WorkerServer {
  readonly queue: JobQueue;
  readonly store: BlobStore;
  readonly opts: Required<Pick<WorkerOptions, 'maxFrameBytes' | 'chunkBytes'>> & WorkerOptions;
  /** Resolves when a `once` worker is done (its job ended and its clients left), or after close(). */
  readonly finished: Promise<void>;
  private http!: Server;
  private wss!: WebSocketServer;
  private conns = new Set<Conn>();
  private backends!: WorkerBackends;
  private dataRoot?: string;
  private pidFile: string;
  private finish!: () => void;
  private closing?: Promise<void>;
  private hadJob = false;

  private constructor(opts: WorkerOptions) {
    const maxFrameBytes = opts.maxFrameBytes ?? MAX_FRAME_BYTES;
    const chunkBytes = Math.min(opts.chunkBytes ?? CHUNK_BYTES, maxFrameBytes - 1024);
    this.opts = { ...opts, maxFrameBytes, chunkBytes, stateDir: resolve(opts.stateDir) };
    this.queue = new JobQueue(this.opts.stateDir);
    this.store = new BlobStore(this.opts.stateDir, chunkBytes);
    this.pidFile = join(this.opts.stateDir, 'worker.pid');
    this.finished = new Promise((r) => (this.finish = r));
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
  get hello(): WorkerHello {
    return {
      worker: hostname(),
      lathe: VERSION,
      protocol: PROTOCOL_VERSION,
      backend: this.backends.backend,
      backends: this.backends.backends,
      dataRoot: this.dataRoot !== undefined,
      maxFrameBytes: this.opts.maxFrameBytes,
      chunkBytes: this.opts.chunkBytes,
    };
  }

  private log(line: string): void {
    (this.opts.log ?? ((l: string) => process.stderr.write(`${l}\n`)))(`${new Date().toISOString()} ${line}`);
  }

  private async init(): Promise<void> {
    const o = this.opts;
    await mkdir(o.stateDir, { recursive: true });
    this.takeStateDir();
    if (o.dataRoot !== undefined) {
      const real = await realpath(o.dataRoot).catch(() => undefined);
      if (!real || !(await stat(real)).isDirectory())
        throw new LatheError(`--data-root ${o.dataRoot}: not a directory`);
      this.dataRoot = real;
    }
    this.backends = await chooseWorkerBackend(o.backend ?? 'auto', (l) => this.log(l));
    const { resumed, queued } = await this.queue.load();
    for (const id of resumed)
      this.queue.log(id, 'the worker restarted while this job was running; it resumes from its last checkpoint');
    if (resumed.length || queued.length)
      this.log(`jobs: ${resumed.length} to resume (${resumed.join(', ') || '-'}), ${queued.length} queued`);
    this.hadJob = resumed.length + queued.length > 0;
    this.queue.on('state', (j: JobInfo) => this.onState(j));
    this.queue.on('log', (id: string, line: string, seq: number) => this.onLog(id, line, seq));
    this.queue.on('log-failed', (id: string, line: string, e: Error) =>
      this.log(`job ${id}: could not write to its job.log (${e.message}): ${line}`),
    );
    this.queue.on('live', (id: string) => {
      for (const c of this.conns) {
        const w = c.watches.get(id);
        if (w) this.attachLive(c, id, w);
      }
    });
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
      `lathe worker ${VERSION} listening on ${this.url}; backend ${this.backends.backend} (webgpu: ${this.backends.backends.webgpu}); state ${o.stateDir}` +
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
    writeFileSync(this.pidFile, String(process.pid));
  }

  private upgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void {
    const peer = `${req.socket.remoteAddress}:${req.socket.remotePort}`;
    const token = bearerToken(req.headers.authorization);
    if (!tokenMatches(this.opts.token, token)) {
      // Never log the presented token: only that one was refused, and from where.
      this.log(`refused connection from ${peer}: ${token === undefined ? 'no bearer token' : 'wrong token'}`);
      socket.end(
        'HTTP/1.1 401 Unauthorized\r\ncontent-type: text/plain\r\nconnection: close\r\n\r\nlathe worker: wrong or missing token\n',
      );
      return;
    }
    this.wss.handleUpgrade(req, socket, head, (ws) => this.accept(ws, peer));
  }

  private accept(ws: WebSocket, peer: string): void {
    const c: Conn = { ws, peer, watches: new Map() };
    this.conns.add(c);
    this.log(`client ${peer} connected`);
    ws.on('message', (data: RawData, isBinary: boolean) => void this.onFrame(c, data as Buffer, isBinary));
    ws.on('error', (e) => this.log(`client ${peer}: ${e.message}`));
    ws.on('close', () => {
      for (const w of c.watches.values()) w.detach?.();
      this.conns.delete(c);
      this.log(`client ${peer} disconnected`);
      this.maybeFinish();
    });
  }

  private send(c: Conn, msg: Record<string, unknown>): Promise<void> {
    if (c.ws.readyState !== c.ws.OPEN) return Promise.resolve();
    return new Promise((r) => c.ws.send(JSON.stringify({ v: PROTOCOL_VERSION, ...msg }), () => r()));
  }

  private sendBinary(c: Conn, header: Record<string, unknown>, payload: Uint8Array): Promise<void> {
    if (c.ws.readyState !== c.ws.OPEN) return Promise.reject(new Error('client disconnected'));
    return new Promise((res, rej) =>
      c.ws.send(encodeBinary({ v: PROTOCOL_VERSION, ...header }, payload), (e) => (e ? rej(e) : res())),
    );
  }

  private reply(c: Conn, re: number, type: string, body: Record<string, unknown> = {}): Promise<void> {
    return this.send(c, { type, re, ...body });
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
        await this.reply(c, re, 'upload.ack', { sha256: header.sha256, index: header.index });
        return;
      }
      const msg = parseClientText(data.toString('utf8'));
      re = msg.id;
      await this.handle(c, msg);
    } catch (e) {
      const pe =
        e instanceof ProtocolError
          ? e
          : e instanceof LatheError
            ? new ProtocolError('bad-request', e.message)
            : new ProtocolError('internal', `internal error: ${(e as Error).message}`);
      if (pe.code === 'internal') this.log(`client ${c.peer}: ${(e as Error).stack ?? String(e)}`);
      await this.send(c, { type: 'error', re: pe.re ?? re, code: pe.code, message: pe.message });
    }
  }

  private relocation(inputs: string, baseDir: string): Relocation {
    return { clientBaseDir: baseDir, inputs, dataRoot: this.dataRoot };
  }

  private checkBackend(backend: string): void {
    const why = this.backends.backends[backend as 'cpu'];
    if (why !== 'ok')
      throw new ProtocolError(
        'backend',
        `backend ${backend} is not available on this worker: ${why ?? 'unknown backend'}`,
      );
  }

  private async handle(c: Conn, m: ClientMessage): Promise<void> {
    switch (m.type) {
      case 'hello':
        return this.reply(c, m.id, 'welcome', { ...this.hello });
      case 'upload.begin': {
        const s = await this.store.begin(m.sha256, m.bytes, m.chunkBytes);
        return this.reply(c, m.id, 'upload.status', { ...s });
      }
      case 'upload.end': {
        const r = await this.store.end(m.sha256);
        return this.reply(c, m.id, 'upload.done', { sha256: m.sha256, bytes: r.bytes });
      }
      case 'lock':
        return this.reply(c, m.id, 'locked', { lock: await this.lockOnWorker(m) });
      case 'submit': {
        const lock = m.lock as unknown as AnyLock;
        checkLockShape(lock);
        this.checkBackend(lock.backend);
        const id = this.queue.newId();
        const inputs = this.queue.inputsDir(id);
        try {
          const workerLock = await relocateLock(lock, m.files, this.relocation(inputs, lock.baseDir), this.store);
          const job = await this.queue.add(id, workerLock, { name: m.name, stopAfter: m.stopAfter });
          this.hadJob = true;
          this.log(`client ${c.peer} submitted job ${id} (${job.name})`);
          return this.reply(c, m.id, 'submitted', { job });
        } catch (e) {
          await rm(this.queue.jobDir(id), { recursive: true, force: true });
          throw e;
        }
      }
      case 'jobs':
        return this.reply(c, m.id, 'jobs', { jobs: this.queue.list() });
      case 'job': {
        const job = this.queue.get(m.job);
        if (!job) throw new ProtocolError('not-found', `job: no job "${m.job}" on this worker`, m.id);
        return this.reply(c, m.id, 'job', { job, lock: this.queue.lock(m.job) });
      }
      case 'cancel': {
        const before = this.queue.get(m.job);
        if (!before) throw new ProtocolError('not-found', `cancel: no job "${m.job}" on this worker`, m.id);
        const job = await this.queue.cancel(m.job, m.mode);
        return this.reply(c, m.id, 'cancelled', { job, was: before.status });
      }
      case 'requeue': {
        const job = await this.queue.requeue(m.job);
        if (!job) throw new ProtocolError('not-found', `requeue: no job "${m.job}" on this worker`, m.id);
        return this.reply(c, m.id, 'requeued', { job });
      }
      case 'watch':
        return this.watch(c, m.id, m.job, { metrics: m.metrics, events: m.events, logs: m.logs });
      case 'unwatch': {
        c.watches.get(m.job)?.detach?.();
        c.watches.delete(m.job);
        return this.reply(c, m.id, 'unwatched', { job: m.job });
      }
      case 'fetch':
        return this.fetch(c, m.id, m.job, m.what);
    }
  }

  /** Locks a recipe that names `worker:` data: the files are hashed here, and the lock returned in client form. */
  private async lockOnWorker(m: Extract<ClientMessage, { type: 'lock' }>): Promise<AnyLock> {
    this.checkBackend(m.backend);
    const staging = join(this.opts.stateDir, 'staging', randomBytes(6).toString('hex'));
    const r = this.relocation(staging, m.baseDir);
    try {
      await placeFiles(m.files, r, this.store);
      const config = checkResolved(await workerRecipe(m.recipe, r), 'recipe') as ResolvedRecipe | ResolvedPipeline;
      const lock =
        config.stage === 'pipeline'
          ? await lockPipeline(
              { ...(config as ResolvedPipeline), backend: m.backend },
              { baseDir: staging, backend: m.backend },
            )
          : await lockRecipe(
              { ...(config as ResolvedRecipe), backend: m.backend },
              { baseDir: staging, backend: m.backend },
            );
      return clientLock(lock, r);
    } finally {
      await rm(staging, { recursive: true, force: true });
    }
  }

  // ---- streaming: metrics, events and log lines by sequence number (their line in metrics.jsonl / events.jsonl / job.log) ----

  private async watch(
    c: Conn,
    re: number,
    job: string,
    from: { metrics: number; events: number; logs: number },
  ): Promise<void> {
    const info = this.queue.get(job);
    if (!info) throw new ProtocolError('not-found', `watch: no job "${job}" on this worker`, re);
    c.watches.get(job)?.detach?.();
    const w: Watch = { ...from };
    c.watches.set(job, w);
    // The log lines so far, read in the same synchronous step that makes the watch visible to
    // onLog: a line is either in the file now or arrives through onLog later, never both or neither.
    const lines = this.queue.readLog(job, w.logs);
    for (const line of lines) void this.send(c, { type: 'log', job, seq: w.logs++, line });
    await this.reply(c, re, 'watching', { job: info });
    if (this.queue.live(job)) return this.attachLive(c, job, w);
    // Not training now: what the run directory holds, then (if it is queued) the live stream when it starts.
    const rd = new RunDir(this.queue.runDir(job));
    const [ms, es] = await Promise.all([rd.readMetrics(), rd.readEvents()]);
    if (c.watches.get(job) !== w) return;
    if (this.queue.live(job)) return this.attachLive(c, job, w);
    this.flush(c, job, w, ms, es);
    const now = this.queue.get(job)!;
    if (isTerminal(now.status)) await this.send(c, { type: 'state', job: now });
  }

  private flush(c: Conn, job: string, w: Watch, ms: Metric[], es: RunEvent[]): void {
    for (let i = w.metrics; i < ms.length; i++) void this.send(c, { type: 'metric', job, seq: i, metric: ms[i] });
    w.metrics = Math.max(w.metrics, ms.length);
    for (let i = w.events; i < es.length; i++) void this.send(c, { type: 'event', job, seq: i, event: es[i] });
    w.events = Math.max(w.events, es.length);
  }

  // Synchronous from snapshot to subscription, so no point is lost or sent twice.
  private attachLive(c: Conn, job: string, w: Watch): void {
    const live = this.queue.live(job);
    if (!live) return;
    w.detach?.();
    const ms = live.run.metricsSoFar;
    const es = [...live.earlierEvents, ...live.run.events];
    this.flush(c, job, w, ms, es);
    let mi = ms.length;
    let ei = es.length;
    const offM = live.run.onMetric((m) => {
      const seq = mi++;
      if (seq >= w.metrics) {
        w.metrics = seq + 1;
        void this.send(c, { type: 'metric', job, seq, metric: m });
      }
    });
    const offE = live.run.onEvent((e) => {
      const seq = ei++;
      if (seq >= w.events) {
        w.events = seq + 1;
        void this.send(c, { type: 'event', job, seq, event: e });
      }
    });
    w.detach = () => {
      offM();
      offE();
    };
  }

  private broadcast(job: string, msg: Record<string, unknown>): void {
    for (const c of this.conns) if (c.watches.has(job)) void this.send(c, msg);
  }

  private onLog(job: string, line: string, seq: number): void {
    for (const c of this.conns) {
      const w = c.watches.get(job);
      if (!w || seq < w.logs) continue;
      w.logs = seq + 1;
      void this.send(c, { type: 'log', job, seq, line });
    }
  }

  private onState(j: JobInfo): void {
    this.broadcast(j.id, { type: 'state', job: j });
    if (isTerminal(j.status)) {
      for (const c of this.conns) c.watches.get(j.id)?.detach?.();
      this.maybeFinish();
    }
  }

  private maybeFinish(): void {
    if (!this.opts.once || !this.hadJob || this.conns.size) return;
    if (this.queue.list().every((j) => isTerminal(j.status))) {
      this.log('once: the job has ended and its clients have left; stopping');
      void this.close();
    }
  }

  // ---- fetch: the run directory (or its latest checkpoint, or an HF export) as chunked binary frames ----

  private async fetch(c: Conn, re: number, job: string, what: 'run' | 'checkpoint' | 'export'): Promise<void> {
    const info = this.queue.get(job);
    if (!info) throw new ProtocolError('not-found', `fetch: no job "${job}" on this worker`, re);
    const dir = this.queue.runDir(job);
    if (!existsSync(join(dir, 'recipe.lock.json')))
      throw new ProtocolError('not-found', `fetch: job "${job}" has no run directory yet (it is ${info.status})`, re);
    let root = dir;
    let files: string[];
    if (what === 'export') {
      if (this.queue.live(job))
        throw new ProtocolError(
          'bad-request',
          `fetch: job "${job}" is still training; export it when it has ended`,
          re,
        );
      root = join(this.queue.jobDir(job), 'export-hf');
      if (!existsSync(join(root, 'config.json'))) {
        await rm(root, { recursive: true, force: true });
        await exportHf(dir, root);
      }
      files = await walk(root);
    } else files = await runFiles(dir, what);
    let bytes = 0;
    for (const rel of files) {
      const h = createHash('sha256');
      let offset = 0;
      for await (const chunk of createReadStream(join(root, rel), { highWaterMark: this.opts.chunkBytes })) {
        const buf = chunk as Buffer;
        h.update(buf);
        await this.sendBinary(c, { type: 'file.chunk', re, path: rel, offset }, buf);
        offset += buf.length;
      }
      if (offset === 0) await this.sendBinary(c, { type: 'file.chunk', re, path: rel, offset: 0 }, new Uint8Array(0));
      await this.send(c, { type: 'file.done', re, path: rel, bytes: offset, sha256: h.digest('hex') });
      bytes += offset;
    }
    await this.reply(c, re, 'fetched', { job, what, files: files.length, bytes });
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
      this.log('worker stopped');
      this.finish();
    })();
    return this.closing;
  }
}

function checkLockShape(lock: AnyLock): void {
  const bad = (field: string, want: string) =>
    new ProtocolError('bad-message', `submit: field "lock.${field}": expected ${want}`);
  if (typeof lock.id !== 'string') throw bad('id', 'a string');
  if (!['cpu', 'wasm', 'webgpu'].includes(lock.backend)) throw bad('backend', 'cpu, wasm or webgpu');
  if (!lock.recipe || typeof lock.recipe !== 'object' || typeof lock.recipe.stage !== 'string')
    throw bad('recipe', 'a resolved recipe');
  if (typeof lock.baseDir !== 'string') throw bad('baseDir', 'a string');
  if (
    lock.recipe.stage === 'pipeline'
      ? !Array.isArray((lock as { stages?: unknown }).stages)
      : !Array.isArray((lock as { data?: unknown }).data)
  ) {
    throw bad(lock.recipe.stage === 'pipeline' ? 'stages' : 'data', 'an array');
  }
  // The recipe inside must still be a valid recipe (it drives everything the worker does).
  try {
    if (lock.recipe.stage === 'pipeline')
      (lock as { stages: RecipeLock[] }).stages.forEach((st, i) =>
        checkResolved(st.recipe, `lock.stages[${i}].recipe`),
      );
    checkResolved(lock.recipe, 'lock.recipe');
  } catch (e) {
    throw new ProtocolError('bad-message', `submit: ${(e as Error).message}`);
  }
}

/**
 * Validates a resolved recipe again (a stage, or each stage of a pipeline: a resolved pipeline carries
 * fields its input form does not allow, such as the summed train.steps).
 */
function checkResolved<T>(recipe: T, field: string): T {
  const r = recipe as { stage?: unknown; stages?: unknown };
  try {
    if (r.stage === 'pipeline') {
      if (!Array.isArray(r.stages)) throw new Error('stages: expected an array');
      r.stages.forEach((st, i) => checkResolved(st, `${field}.stages[${i}]`));
      return recipe;
    }
    return resolveAnyRecipe(recipe) as T;
  } catch (e) {
    throw new LatheError(`field "${field}": ${(e as Error).message}`);
  }
}

async function walk(root: string, sub = ''): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(join(root, sub), { withFileTypes: true })) {
    const rel = sub ? join(sub, e.name) : e.name;
    if (e.isDirectory()) out.push(...(await walk(root, rel)));
    else if (e.isFile()) out.push(rel);
  }
  return out.sort();
}

/**
 * The files of a run directory worth downloading: lock, metrics, events, summary, the tokenizer and the
 * latest checkpoint of each run directory in it (a pipeline's stages too); or, for `checkpoint`, just
 * what loading the model needs.
 */
async function runFiles(dir: string, what: 'run' | 'checkpoint'): Promise<string[]> {
  const all = await walk(dir);
  const runDirs = all.filter((f) => f.endsWith('recipe.lock.json')).map((f) => f.slice(0, -'recipe.lock.json'.length));
  const latest = new Set<string>();
  for (const rd of runDirs) {
    const steps = all
      .filter((f) => f.startsWith(`${rd}checkpoints/`))
      .map((f) => f.slice(`${rd}checkpoints/`.length).split('/')[0]!)
      .filter((s) => /^\d+$/.test(s))
      .map(Number);
    if (steps.length) latest.add(`${rd}checkpoints/${Math.max(...steps)}/`);
  }
  const keep = (f: string) => {
    const rd = runDirs.filter((r) => f.startsWith(r)).sort((a, b) => b.length - a.length)[0] ?? '';
    const rest = f.slice(rd.length);
    if (rest.startsWith('checkpoints/')) return [...latest].some((l) => f.startsWith(l));
    if (rest.startsWith('data/')) return rest === 'data/tokenizer.json';
    return !rest.startsWith('.') && !rest.includes('/.tmp');
  };
  const files = all.filter(keep);
  if (what === 'run') return files;
  const model = relative(dir, modelRunDir(dir));
  const pre = model ? `${model}/` : '';
  return files.filter(
    (f) =>
      f === 'recipe.lock.json' ||
      f === 'summary.json' ||
      (f.startsWith(pre) &&
        (f.slice(pre.length).startsWith('checkpoints/') ||
          f.slice(pre.length) === 'data/tokenizer.json' ||
          f.slice(pre.length) === 'recipe.lock.json')),
  );
}
