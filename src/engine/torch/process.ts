import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes, timingSafeEqual } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { z } from 'zod';
import { LatheError } from '../../errors.js';
import { EngineLost } from '../engine.js';
import { advertisedHost, launchCommand, rankFailure, type TorchLaunch } from './launch.js';
import { encodeFrame, FrameReader, ReplySchema, TORCH_PROTOCOL_VERSION, type WireTensor } from './protocol.js';

// The torch engine's process: Python with the lathe_torch package (src/engine/torch/lathe_torch),
// one per engine, spoken to in frames on stdin/stdout. A Python exception becomes a LatheError with
// its message; a process that dies fails every pending request with the exit and stderr's last lines.
// Several ranks: torchrun (through srun on Slurm) starts them, and rank 0 connects back over TCP
// with a secret; a failed rank is named with its host, and a reply that takes longer than the
// launch's timeout (a hung rank) stops them all.

/** The package root (where package.json says "lathe"), found from this module in src/ or dist/. */
function packageRoot(): string {
  let d = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const p = join(d, 'package.json');
    if (existsSync(p) && (JSON.parse(readFileSync(p, 'utf8')) as { name?: string }).name === 'lathe') return d;
    const up = dirname(d);
    if (up === d) throw new Error('cannot find the lathe package root');
    d = up;
  }
}

/** The Python that runs the engine: LATHE_PYTHON, else the project's .venv, else python3 on PATH. */
export function enginePython(): string {
  if (process.env.LATHE_PYTHON) return process.env.LATHE_PYTHON;
  const venv = join(packageRoot(), '.venv', 'bin', 'python');
  return existsSync(venv) ? venv : 'python3';
}

/** What the engine's Python has: torch's version, CUDA and its devices, bf16 support. */
export interface TorchInfo {
  python: string;
  torch: string;
  cuda: boolean;
  devices: number;
  bf16: boolean;
}

/** What probing torch found: its info, or why it cannot run. */
export type TorchProbe = { info?: TorchInfo; why?: string };

let probed: TorchProbe | undefined;
let probing: Promise<TorchProbe> | undefined;
const PROBE =
  'import json, torch; print(json.dumps({"torch": torch.__version__, "cuda": torch.cuda.is_available(), "devices": torch.cuda.device_count(), "bf16": torch.backends.mkldnn.is_available() or torch.cuda.is_available()}))';

function probeResult(
  python: string,
  r: { error?: Error; status: number | null; stdout: string; stderr: string },
): TorchProbe {
  if (r.error) return { why: `${python} cannot run (${r.error.message})` };
  if (r.status !== 0) {
    const last = r.stderr.trim().split('\n').at(-1) ?? '';
    return {
      why: /No module named 'torch'/.test(r.stderr) ? `torch is not installed for ${python}` : `${python}: ${last}`,
    };
  }
  return { info: { python, ...(JSON.parse(r.stdout.trim().split('\n').at(-1)!) as Omit<TorchInfo, 'python'>) } };
}

/** Probes the engine's Python once (importing torch takes a second or two): torch and CUDA, or why they are missing. */
export function torchInfo(): TorchProbe {
  if (probed) return probed;
  const python = enginePython();
  const r = spawnSync(python, ['-c', PROBE], { encoding: 'utf8', timeout: 120_000 });
  return (probed = probeResult(python, r));
}

/** {@link torchInfo} without blocking the event loop (a worker answering clients while it probes). */
export function torchInfoAsync(): Promise<TorchProbe> {
  if (probed) return Promise.resolve(probed);
  probing ??= new Promise<TorchProbe>((resolve) => {
    const python = enginePython();
    let stdout = '';
    let stderr = '';
    const child = spawn(python, ['-c', PROBE], { stdio: ['ignore', 'pipe', 'pipe'] });
    child.stdout!.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    child.once('error', (error) => resolve((probed ??= probeResult(python, { error, status: null, stdout, stderr }))));
    child.once('close', (status) => resolve((probed ??= probeResult(python, { status, stdout, stderr }))));
  });
  return probing;
}

/** How to get torch: the fix said with every "torch is missing" error. */
export const TORCH_FIX =
  'install it in the venv (`npm run setup` does, CPU build), or for a GPU: `.venv/bin/pip install torch --index-url https://download.pytorch.org/whl/cu128`; LATHE_PYTHON picks another Python';

/** A reply's result and buffers. */
export interface TorchReply {
  result: Record<string, unknown>;
  tensors: Record<string, WireTensor>;
}

/** A rank of the engine, as rank 0 reported it. */
export interface RankInfo {
  rank: number;
  pid: number;
  host: string;
}

const ConnectSchema = z.object({
  secret: z.string(),
  ranks: z.array(z.object({ rank: z.number().int(), pid: z.number().int(), host: z.string() })),
});

/** A port free on this machine now (for the rendezvous store torchrun opens next). */
function freePort(host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, host, () => {
      const port = (s.address() as AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

/** One engine process (or one set of ranks). Requests are written in order and answered in order. */
export class TorchProcess {
  private readonly reader = new FrameReader();
  private readonly pending = new Map<
    number,
    { resolve: (r: TorchReply) => void; reject: (e: Error) => void; op: string }
  >();
  private nextId = 1;
  private writing: Promise<void> = Promise.resolve();
  private stderr = '';
  private dead?: string;
  private watchdog?: NodeJS.Timeout;
  private socket?: Socket;
  /** The ranks: one entry for a single process. */
  ranks: RankInfo[];

  private constructor(
    private readonly child: ChildProcess,
    private readonly out: NodeJS.WritableStream | undefined,
    private readonly launch?: TorchLaunch,
  ) {
    this.ranks = [{ rank: 0, pid: child.pid ?? 0, host: advertisedHost() }];
    child.stderr!.on('data', (d: Buffer) => (this.stderr = (this.stderr + d.toString()).slice(-16000)));
    child.on('error', (e) => this.fail(`cannot start ${child.spawnfile}: ${e.message}`));
    child.on('exit', (code, signal) => {
      const rank = launch ? rankFailure(this.stderr) : undefined;
      const tail = this.stderr.trim().split('\n').slice(-3).join(' | ');
      const what = launch
        ? `the torch engine's ranks stopped (${signal ?? `code ${code}`})`
        : `the torch engine process exited (${signal ?? `code ${code}`})`;
      this.fail(rank ? `${what}: ${rank}` : `${what}${tail ? `: ${tail}` : ''}`);
    });
  }

  /** Starts one engine process, spoken to on stdin/stdout. */
  static spawn(opts: { threads?: number } = {}): TorchProcess {
    const child = spawn(enginePython(), ['-m', 'lathe_torch'], {
      stdio: ['pipe', 'pipe', 'pipe'],
      env: TorchProcess.env(opts.threads),
    });
    child.stdin!.on('error', () => {});
    const p = new TorchProcess(child, child.stdin!);
    child.stdout!.on('data', (d: Buffer) => p.onData(d));
    return p;
  }

  /**
   * Starts the ranks of a launch and waits for rank 0 to connect (or for the launch to fail, or
   * for `launch.timeoutMs` to pass).
   */
  static async launch(l: TorchLaunch, o: { device: string; threads?: number }): Promise<TorchProcess> {
    // A multi-node job whose other nodes an executor started (Kubernetes) gave them this node's
    // engine port and the run's secret up front (LATHE_ENGINE_PORT, LATHE_ENGINE_SECRET).
    const secret = (l.launcher === 'join' && process.env.LATHE_ENGINE_SECRET) || randomBytes(24).toString('hex');
    const fixedPort = l.launcher === 'join' ? Number(process.env.LATHE_ENGINE_PORT ?? 0) : 0;
    const local = l.launcher === 'local';
    const server: Server = createServer();
    const port = await new Promise<number>((resolve, reject) => {
      server.once('error', (e) => reject(new LatheError(`torch engine: cannot listen for rank 0 (${e.message})`)));
      server.listen(fixedPort, local ? '127.0.0.1' : '0.0.0.0', () => resolve((server.address() as AddressInfo).port));
    });
    const env = {
      ...TorchProcess.env(o.threads),
      LATHE_PARALLEL: l.parallel,
      LATHE_DEVICE: o.device,
      LATHE_ENGINE_ADDR: `${local ? '127.0.0.1' : advertisedHost()}:${port}`,
      LATHE_ENGINE_SECRET: secret,
      LATHE_DIST_TIMEOUT: String(Math.max(1, Math.round(l.timeoutMs / 1000))),
    };
    const rdzv = l.launcher === 'srun' ? await freePort('0.0.0.0') : 0;
    const argv = launchCommand(
      l,
      enginePython(),
      rdzv,
      process.env.LATHE_RDZV_ID ?? randomBytes(6).toString('hex'),
      env,
    );
    // Its own process group: stopping the run stops every rank (torchrun's children included).
    const child = spawn(argv[0]!, argv.slice(1), { stdio: ['ignore', 'pipe', 'pipe'], env, detached: true });
    child.stdout!.on('data', (d: Buffer) => process.stderr.write(d));
    const p = new TorchProcess(child, undefined, l);
    try {
      await p.accept(server, secret, l.timeoutMs);
    } finally {
      server.close();
    }
    return p;
  }

  /**
   * Runs this node's ranks of a multi-node run that another node controls (`lathe engine-node`):
   * torchrun joins the rendezvous and its rank 0, wherever it lands, connects to `engineAddr` with
   * the run's secret. Resolves with torchrun's exit code.
   */
  static joinRun(
    l: TorchLaunch,
    o: { device: string; engineAddr: string; secret: string; signal?: AbortSignal },
  ): Promise<number> {
    const env = {
      ...TorchProcess.env(),
      LATHE_PARALLEL: l.parallel,
      LATHE_DEVICE: o.device,
      LATHE_ENGINE_ADDR: o.engineAddr,
      LATHE_ENGINE_SECRET: o.secret,
      LATHE_DIST_TIMEOUT: String(Math.max(1, Math.round(l.timeoutMs / 1000))),
    };
    const argv = launchCommand(
      { ...l, launcher: 'join', rdzvHost: false },
      enginePython(),
      0,
      process.env.LATHE_RDZV_ID ?? 'lathe',
      env,
    );
    // torchrun passes SIGTERM on to its ranks.
    const child = spawn(argv[0]!, argv.slice(1), {
      stdio: ['ignore', 'inherit', 'inherit'],
      env,
      signal: o.signal,
      killSignal: 'SIGTERM',
    });
    child.on('error', () => {});
    return new Promise((resolve) => child.on('exit', (code, signal) => resolve(code ?? (signal ? 128 : 1))));
  }

  private static env(threads?: number): NodeJS.ProcessEnv {
    const env: NodeJS.ProcessEnv = {
      ...process.env,
      PYTHONPATH: join(packageRoot(), 'src', 'engine', 'torch'),
      PYTHONUNBUFFERED: '1',
    };
    if (threads) env.OMP_NUM_THREADS = String(threads);
    // Bit-exact resume needs the same sums in every process: MKL's conditional numerical
    // reproducibility makes them independent of buffer alignment, and fixed thread teams of load.
    env.MKL_CBWR ??= 'AUTO';
    env.MKL_DYNAMIC ??= 'FALSE';
    env.OMP_DYNAMIC ??= 'FALSE';
    return env;
  }

  /** Waits for rank 0's connection: its first frame carries the secret and every rank's pid and host. */
  private accept(server: Server, secret: string, timeoutMs: number): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.fail(`no rank connected within ${Math.round(timeoutMs / 1000)} s${this.tail()}`);
        this.kill();
        reject(new EngineLost(`torch engine: ${this.dead}`));
      }, timeoutMs);
      const died = () => {
        clearTimeout(timer);
        reject(new EngineLost(`torch engine: ${this.dead ?? 'the ranks stopped before connecting'}`));
      };
      this.child.once('exit', () => setImmediate(died));
      server.on('connection', (sock) => {
        const reader = new FrameReader();
        const first = (d: Buffer) => {
          let frames;
          try {
            frames = reader.push(d);
          } catch {
            sock.destroy();
            return;
          }
          if (!frames.length) return;
          sock.off('data', first);
          const hello = ConnectSchema.safeParse((frames[0]!.header as { result?: unknown }).result);
          const given = Buffer.from(hello.success ? hello.data.secret : '');
          if (!hello.success || given.length !== secret.length || !timingSafeEqual(given, Buffer.from(secret))) {
            sock.destroy(); // not our rank 0
            return;
          }
          clearTimeout(timer);
          this.child.off('exit', died);
          this.ranks = hello.data.ranks;
          this.socket = sock;
          sock.setNoDelay(true);
          sock.on('data', (x: Buffer) => this.onData(x));
          sock.on('error', () => {});
          sock.on('close', () => {
            // torchrun reports the failed rank as it exits; give it a moment before saying less.
            setTimeout(() => this.fail(`rank 0 hung up${this.tail()}`), 5000).unref();
          });
          for (const f of frames.slice(1)) this.dispatch(f);
          resolve();
        };
        sock.on('data', first);
        sock.on('error', () => {});
      });
    });
  }

  /** The process id: the engine's, or torchrun's (tests kill ranks through {@link ranks}). */
  get pid(): number | undefined {
    return this.child.pid;
  }

  private tail(): string {
    const rank = this.launch ? rankFailure(this.stderr) : undefined;
    if (rank) return `: ${rank}`;
    const t = this.stderr.trim().split('\n').slice(-3).join(' | ');
    return t ? `: ${t}` : '';
  }

  private fail(why: string): void {
    this.dead ??= why;
    clearTimeout(this.watchdog);
    for (const p of this.pending.values()) p.reject(new EngineLost(`torch engine: ${p.op}: ${this.dead}`));
    this.pending.clear();
  }

  /** Stops every rank (the process group of a launch). */
  private kill(): void {
    // torchrun starts each rank in a session of its own: the launch's group does not reach them.
    if (this.launch) {
      const here = new Set([hostname(), advertisedHost()]);
      for (const r of this.ranks) {
        if (!here.has(r.host) || r.pid <= 0) continue;
        try {
          process.kill(r.pid, 'SIGKILL');
        } catch {
          // already gone
        }
      }
    }
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    try {
      if (this.launch && this.child.pid) process.kill(-this.child.pid, 'SIGKILL');
      else this.child.kill('SIGKILL');
    } catch {
      this.child.kill('SIGKILL');
    }
  }

  /** A launch's pending replies must come within its timeout: a hung rank stops the run, never blocks it. */
  private armWatchdog(): void {
    if (!this.launch) return;
    clearTimeout(this.watchdog);
    if (!this.pending.size) return;
    const op = this.pending.values().next().value!.op;
    this.watchdog = setTimeout(() => {
      this.fail(
        `no reply to ${op} within ${Math.round(this.launch!.timeoutMs / 1000)} s: a rank hangs (resources.timeoutSeconds)${this.tail()}`,
      );
      this.kill();
    }, this.launch.timeoutMs);
    this.watchdog.unref();
  }

  private onData(d: Buffer): void {
    let frames;
    try {
      frames = this.reader.push(d);
    } catch (e) {
      this.fail(`unreadable reply (${(e as Error).message})`);
      this.kill();
      return;
    }
    for (const f of frames) this.dispatch(f);
  }

  private dispatch(f: { header: Record<string, unknown>; tensors: Record<string, WireTensor> }): void {
    const parsed = ReplySchema.safeParse(f.header);
    if (!parsed.success) {
      this.fail(`unreadable reply: ${parsed.error.issues[0]?.path.join('.')}: ${parsed.error.issues[0]?.message}`);
      this.kill();
      return;
    }
    const r = parsed.data;
    const p = r.id === null ? undefined : this.pending.get(r.id);
    if (!p) return;
    this.pending.delete(r.id!);
    this.armWatchdog();
    if (r.ok) p.resolve({ result: r.result, tensors: f.tensors });
    else p.reject(new LatheError(`torch engine: ${p.op}: ${r.error}${r.user ? '' : `\n${r.trace.trimEnd()}`}`));
  }

  /** Sends a request and resolves with its reply (in the order requests were made). */
  request(
    op: string,
    args: Record<string, unknown> = {},
    tensors: Record<string, WireTensor> = {},
  ): Promise<TorchReply> {
    if (this.dead) return Promise.reject(new EngineLost(`torch engine: ${op}: ${this.dead}`));
    const id = this.nextId++;
    const reply = new Promise<TorchReply>((resolve, reject) => this.pending.set(id, { resolve, reject, op }));
    if (this.pending.size === 1) this.armWatchdog();
    const chunks = encodeFrame({ v: TORCH_PROTOCOL_VERSION, id, op, args }, tensors);
    this.writing = this.writing.then(() => this.write(chunks));
    return reply;
  }

  private async write(chunks: Buffer[]): Promise<void> {
    const out = (this.socket ?? this.out)!;
    for (const c of chunks) {
      if (this.dead) return;
      if (!out.write(c))
        await new Promise<void>((r) => {
          const done = () => {
            out.off('drain', done);
            this.child.off('exit', done);
            r();
          };
          out.once('drain', done);
          this.child.once('exit', done);
        });
    }
  }

  /** Asks the process to stop, and kills it (every rank) if it does not within a few seconds. */
  async close(): Promise<void> {
    if (this.dead) {
      this.kill();
      return;
    }
    const exited = new Promise<void>((r) => this.child.once('exit', () => r()));
    this.request('shutdown').catch(() => {});
    const timer = setTimeout(() => this.kill(), this.launch ? 15000 : 5000);
    await exited;
    clearTimeout(timer);
  }
}
