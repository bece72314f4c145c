import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { LatheError } from '../../errors.js';
import { encodeFrame, FrameReader, ReplySchema, TORCH_PROTOCOL_VERSION, type WireTensor } from './protocol.js';

// The torch engine's process: Python with the lathe_torch package (src/engine/torch/lathe_torch),
// one per engine, spoken to in frames on stdin/stdout. A Python exception becomes a LatheError with
// its message; a process that dies fails every pending request with the exit and stderr's last lines.

/** The package root (where package.json says "lathe"), found from this module in src/ or dist/. */
export function packageRoot(): string {
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

/** One engine process. Requests are written in order and answered in order. */
export class TorchProcess {
  private readonly child: ChildProcess;
  private readonly reader = new FrameReader();
  private readonly pending = new Map<
    number,
    { resolve: (r: TorchReply) => void; reject: (e: Error) => void; op: string }
  >();
  private nextId = 1;
  private writing: Promise<void> = Promise.resolve();
  private stderr = '';
  private dead?: string;

  constructor(opts: { threads?: number } = {}) {
    const python = enginePython();
    const env: NodeJS.ProcessEnv = {
      ...process.env,
      PYTHONPATH: join(packageRoot(), 'src', 'engine', 'torch'),
      PYTHONUNBUFFERED: '1',
    };
    if (opts.threads) env.OMP_NUM_THREADS = String(opts.threads);
    this.child = spawn(python, ['-m', 'lathe_torch'], { stdio: ['pipe', 'pipe', 'pipe'], env });
    this.child.stdout!.on('data', (d: Buffer) => this.onData(d));
    this.child.stderr!.on('data', (d: Buffer) => (this.stderr = (this.stderr + d.toString()).slice(-4000)));
    this.child.stdin!.on('error', () => {});
    this.child.on('error', (e) => this.fail(`cannot start ${python}: ${e.message}`));
    this.child.on('exit', (code, signal) => {
      const tail = this.stderr.trim().split('\n').slice(-3).join(' | ');
      this.fail(`the torch engine process exited (${signal ?? `code ${code}`})${tail ? `: ${tail}` : ''}`);
    });
  }

  /** The process id (tests kill it). */
  get pid(): number | undefined {
    return this.child.pid;
  }

  private fail(why: string): void {
    this.dead ??= why;
    for (const p of this.pending.values()) p.reject(new LatheError(`torch engine: ${p.op}: ${this.dead}`));
    this.pending.clear();
  }

  private onData(d: Buffer): void {
    let frames;
    try {
      frames = this.reader.push(d);
    } catch (e) {
      this.fail(`unreadable reply (${(e as Error).message})`);
      this.child.kill('SIGKILL');
      return;
    }
    for (const f of frames) {
      const parsed = ReplySchema.safeParse(f.header);
      if (!parsed.success) {
        this.fail(`unreadable reply: ${parsed.error.issues[0]?.path.join('.')}: ${parsed.error.issues[0]?.message}`);
        this.child.kill('SIGKILL');
        return;
      }
      const r = parsed.data;
      const p = r.id === null ? undefined : this.pending.get(r.id);
      if (!p) continue;
      this.pending.delete(r.id!);
      if (r.ok) p.resolve({ result: r.result, tensors: f.tensors });
      else p.reject(new LatheError(`torch engine: ${p.op}: ${r.error}${r.user ? '' : `\n${r.trace.trimEnd()}`}`));
    }
  }

  /** Sends a request and resolves with its reply (in the order requests were made). */
  request(
    op: string,
    args: Record<string, unknown> = {},
    tensors: Record<string, WireTensor> = {},
  ): Promise<TorchReply> {
    if (this.dead) return Promise.reject(new LatheError(`torch engine: ${op}: ${this.dead}`));
    const id = this.nextId++;
    const reply = new Promise<TorchReply>((resolve, reject) => this.pending.set(id, { resolve, reject, op }));
    const chunks = encodeFrame({ v: TORCH_PROTOCOL_VERSION, id, op, args }, tensors);
    this.writing = this.writing.then(() => this.write(chunks));
    return reply;
  }

  private async write(chunks: Buffer[]): Promise<void> {
    const stdin = this.child.stdin!;
    for (const c of chunks) {
      if (this.dead) return;
      if (!stdin.write(c))
        await new Promise<void>((r) => {
          const done = () => {
            stdin.off('drain', done);
            this.child.off('exit', done);
            r();
          };
          stdin.once('drain', done);
          this.child.once('exit', done);
        });
    }
  }

  /** Asks the process to stop, and kills it if it does not within a few seconds. */
  async close(): Promise<void> {
    if (this.dead) return;
    const exited = new Promise<void>((r) => this.child.once('exit', () => r()));
    this.request('shutdown').catch(() => {});
    const timer = setTimeout(() => this.child.kill('SIGKILL'), 5000);
    await exited;
    clearTimeout(timer);
  }
}
