import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { chmod, mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import type { BackendRequest, EngineBackend } from '../engine/tfjs/backend.js';
import { WEBGPU_DRIVER_CAPABILITIES } from '../engine/tfjs/webgpu.js';
import { LatheError } from '../errors.js';
import type { AnyLock, EngineLock } from '../recipe/lock.js';
import type { Pipeline, Recipe } from '../runs/recipe.js';
import type { Run } from '../runs/run.js';
import { RunDir, type RunSummary } from '../runs/rundir.js';
import { readTokenFile } from '../worker/auth.js';
import { WorkerClient } from '../worker/client.js';
import type { StartOptions } from '../runs/run.js';
import { lockAhead } from './lock-ahead.js';
import {
  attachRemoteRun,
  submitLock,
  type LockingExecutor,
  type RemoteLockOptions,
  type RemoteStartOptions,
} from './worker.js';

const run = promisify(execFile);

// Slurm: each run is one batch job whose only task is a worker for that run (`lathe worker --once`),
// with its state in a folder the submitting machine and the compute node share. The executor
// sbatch-es it, follows it with squeue (and sacct once it leaves the queue), connects to the worker
// when it announces its URL, submits the lock, streams the run, and downloads it. scancel cancels it.
// A torch run over several nodes asks for one task per node (and `resources.gpus` GPUs on each); the
// worker runs on the first node and its trainer starts torchrun on every node with srun, with the
// c10d rendezvous on the first (src/engine/torch/launch.ts).

/** How to run workers through Slurm. */
export interface SlurmOptions {
  /** A folder shared by this machine and the compute nodes: each job's worker state, log and URL go in <sharedDir>/<id>/. */
  sharedDir: string;
  /** The worker's token file, readable on the compute nodes (the client reads it here too). */
  tokenFile: string;
  /** sbatch --partition. */
  partition?: string;
  /** GPUs per job: sbatch --gres=gpu:N. */
  gpus?: number;
  /** sbatch --cpus-per-task. */
  cpus?: number;
  /** sbatch --mem, e.g. "32G". */
  mem?: string;
  /** sbatch --time, e.g. "04:00:00". */
  time?: string;
  /** sbatch --account. */
  account?: string;
  /** More sbatch arguments, as given. */
  sbatchArgs?: string[];
  /** The worker's --backend (default: webgpu with GPUs, else cpu). */
  backend?: BackendRequest;
  /** The worker's --data-root. */
  dataRoot?: string;
  /** How to run lathe on a compute node (default: this Node binary and this package's bin/lathe.js). */
  lathe?: string[];
  /** Environment for sbatch, squeue, sacct and scancel (e.g. SLURM_CONF); default this process's. */
  env?: NodeJS.ProcessEnv;
  /** How often to poll squeue (default 1 s). */
  pollMs?: number;
  /** Give up if the worker has not announced itself this long after sbatch (default 24 h: a busy queue). */
  startTimeoutMs?: number;
  /**
   * Multi-node runs: let Slurm place the tasks (one torchrun each) wherever it finds room, several to
   * a node (`--ntasks` alone), instead of one per node. For a small or single-node test cluster.
   */
  packTasks?: boolean;
}

/** A Slurm job's state: from squeue while queued or running, else from sacct. */
export interface SlurmState {
  job: string;
  state: string;
  source: 'squeue' | 'sacct' | 'none';
}

/** The default command that runs lathe: this Node and this package's CLI (found above this module, from src/ or dist/src/). */
function defaultLathe(): string[] {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 5 && !existsSync(join(dir, 'bin', 'lathe.js')); i++) dir = dirname(dir);
  return [process.execPath, join(dir, 'bin', 'lathe.js')];
}

const quote = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;

/** The executor that runs each job as a Slurm batch job holding a worker. */
export class SlurmExecutor implements LockingExecutor {
  readonly name = 'slurm';
  readonly opts: SlurmOptions;
  private token: string;

  constructor(opts: SlurmOptions) {
    this.opts = { ...opts, sharedDir: resolve(opts.sharedDir) };
    this.token = readTokenFile(opts.tokenFile, 'tokenFile');
  }

  private get env(): NodeJS.ProcessEnv {
    return this.opts.env ?? process.env;
  }

  /** The backend the job's worker will use: a named one as asked, else the executor's, else webgpu with GPUs and cpu without. */
  backendFor(request: BackendRequest | undefined): EngineBackend {
    const b =
      request && request !== 'auto'
        ? request
        : this.opts.backend && this.opts.backend !== 'auto'
          ? this.opts.backend
          : this.opts.gpus
            ? 'webgpu'
            : 'cpu';
    return b;
  }

  /** Locks a recipe here, for the backend (or torch engine) and resources the worker will use. */
  lockRecipe(recipe: Recipe | Pipeline, opts: RemoteLockOptions = {}): Promise<AnyLock> {
    return lockAhead(recipe, opts, {
      backendFor: (b: BackendRequest | undefined) => this.backendFor(b),
      defaultDevice: this.opts.gpus ? 'cuda' : 'cpu',
      where: 'Slurm (name the file on the shared filesystem)',
    });
  }

  /**
   * The sbatch arguments for a job folder (without the script). A lock over several nodes asks for
   * one task per node (torchrun's), and its GPUs per node on CUDA.
   */
  sbatchArgs(dir: string, name: string, lock?: AnyLock): string[] {
    const o = this.opts;
    const args = [
      '--parsable',
      `--job-name=lathe-${name.replace(/[^\w.-]+/g, '-')}`,
      `--output=${join(dir, 'slurm-%j.out')}`,
      `--chdir=${dir}`,
    ];
    const res = lock?.recipe.resources;
    if (o.partition) args.push(`--partition=${o.partition}`);
    if (res && res.nodes > 1)
      args.push(...(o.packTasks ? [`--ntasks=${res.nodes}`] : [`--nodes=${res.nodes}`, '--ntasks-per-node=1']));
    const gpus = lock?.engine?.device === 'cuda' && res ? Math.max(res.gpus, o.gpus ?? 0) : o.gpus;
    if (gpus) args.push(`--gres=gpu:${gpus}`);
    if (o.cpus) args.push(`--cpus-per-task=${o.cpus}`);
    if (o.mem) args.push(`--mem=${o.mem}`);
    if (o.time) args.push(`--time=${o.time}`);
    if (o.account) args.push(`--account=${o.account}`);
    return [...args, ...(o.sbatchArgs ?? [])];
  }

  /** The batch script: exec a worker for this one job, announcing its URL in the job folder. */
  script(dir: string, backend: EngineBackend, engine?: EngineLock): string {
    const o = this.opts;
    const cmd = [
      ...(o.lathe ?? defaultLathe()),
      'worker',
      '--listen',
      '0.0.0.0:0',
      '--token-file',
      resolve(o.tokenFile),
      '--state-dir',
      join(dir, 'worker'),
      '--announce',
      join(dir, 'worker.url'),
      '--backend',
      backend,
      '--once',
      ...(engine ? ['--engine', 'torch', '--device', engine.device, '--dtype', engine.dtype] : []),
      ...(o.dataRoot ? ['--data-root', resolve(o.dataRoot)] : []),
    ];
    return [
      '#!/bin/bash',
      '# A Lathe worker for one run; it stops when the run has ended and its client has left.',
      // Vulkan (Dawn's backend) needs the driver's graphics libraries in a GPU container.
      ...(backend === 'webgpu' ? [`export NVIDIA_DRIVER_CAPABILITIES=${WEBGPU_DRIVER_CAPABILITIES}`] : []),
      `exec ${cmd.map(quote).join(' ')}`,
      '',
    ].join('\n');
  }

  /** Submits a batch job for `lock`'s worker; returns its Slurm job id and folder. */
  async sbatch(lock: AnyLock): Promise<{ job: string; dir: string }> {
    const dir = join(
      this.opts.sharedDir,
      `${new Date().toISOString().replace(/[-:.]/g, '').slice(0, 15)}-${randomBytes(3).toString('hex')}`,
    );
    await mkdir(dir, { recursive: true });
    const script = join(dir, 'job.sh');
    await writeFile(script, this.script(dir, lock.backend, lock.engine));
    await chmod(script, 0o755);
    const out = await run('sbatch', [...this.sbatchArgs(dir, lock.recipe.name ?? lock.recipe.stage, lock), script], {
      env: this.env,
    }).catch((e: Error & { stderr?: string }) => {
      throw new LatheError(`sbatch failed: ${(e.stderr || e.message).trim()}`, 1);
    });
    const job = out.stdout.trim().split(';')[0]!;
    if (!/^\d+$/.test(job)) throw new LatheError(`sbatch printed "${out.stdout.trim()}", not a job id`, 1);
    return { job, dir };
  }

  /** A job's state: squeue while it is queued or running, then sacct (the accounting database, or the job completion log with -c). */
  async state(job: string): Promise<SlurmState> {
    const q = await run('squeue', ['-h', '-j', job, '-o', '%T'], { env: this.env }).catch(() => undefined);
    const s = q?.stdout.trim();
    if (s) return { job, state: s, source: 'squeue' };
    for (const args of [
      ['-n', '-X', '-P', '-j', job, '-o', 'State'],
      ['-c', '-n', '-X', '-P', '-j', job, '-o', 'State'],
    ]) {
      const a = await run('sacct', args, { env: this.env }).catch(() => undefined);
      const st = a?.stdout.trim().split('\n')[0]?.split(' ')[0];
      if (st) return { job, state: st, source: 'sacct' };
    }
    return { job, state: 'UNKNOWN', source: 'none' };
  }

  /** Cancels a Slurm job (its worker checkpoints on SIGTERM). */
  async cancel(job: string): Promise<void> {
    await run('scancel', [job], { env: this.env }).catch((e: Error & { stderr?: string }) => {
      throw new LatheError(`scancel ${job} failed: ${(e.stderr || e.message).trim()}`, 1);
    });
  }

  /** Waits for the job's worker to announce its URL; an error if the job leaves the queue first. */
  private async waitForWorker(job: string, dir: string): Promise<string> {
    const file = join(dir, 'worker.url');
    const deadline = Date.now() + (this.opts.startTimeoutMs ?? 24 * 3600_000);
    for (;;) {
      const st = await this.state(job);
      if (st.state === 'RUNNING' && existsSync(file)) return (await readFile(file, 'utf8')).trim();
      if (st.source !== 'squeue') {
        const out = join(dir, `slurm-${job}.out`);
        const tail = existsSync(out) ? readFileSync(out, 'utf8').trim().split('\n').slice(-5).join('\n') : '';
        throw new LatheError(
          `slurm job ${job} ended (${st.state}) before its worker started${tail ? `:\n${tail}` : ''}\n(see ${out})`,
          1,
        );
      }
      if (Date.now() > deadline) {
        await this.cancel(job).catch(() => {});
        throw new LatheError(`slurm job ${job} did not start its worker in time (still ${st.state}); cancelled it`, 1);
      }
      await new Promise((r) => setTimeout(r, this.opts.pollMs ?? 1000));
    }
  }

  /** Waits until a job has left the queue, and returns its final state. */
  async waitGone(job: string, timeoutMs = 120_000): Promise<SlurmState> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const st = await this.state(job);
      if (st.source !== 'squeue' || Date.now() > deadline) return st;
      await new Promise((r) => setTimeout(r, this.opts.pollMs ?? 1000));
    }
  }

  /** sbatch-es a worker, then submits the lock to it once it listens; the Run is live at once (pending jobs wait in Slurm's queue). */
  async start(lock: AnyLock, opts: RemoteStartOptions = {}): Promise<Run> {
    const rd = await RunDir.create(lock, opts.out);
    const { job, dir } = await this.sbatch(lock).catch(async (e: unknown) => {
      await rm(rd.path, { recursive: true, force: true });
      throw e;
    });
    opts.onNotice?.(`slurm job ${job} submitted (${dir})`);
    return this.follow(rd, lock, job, dir, opts, async (client) => (await submitLock(client, lock, opts)).job.id);
  }

  private follow(
    rd: RunDir,
    lock: AnyLock,
    job: string,
    dir: string,
    opts: Omit<StartOptions, 'out'>,
    pick: (c: WorkerClient) => Promise<string>,
  ): Run {
    let cancelled = false;
    const record = (extra: Record<string, unknown>) =>
      writeFile(join(rd.path, 'slurm.json'), JSON.stringify({ job, dir, ...extra }, null, 2) + '\n');
    const source = (async () => {
      await record({});
      let url: string;
      try {
        url = await this.waitForWorker(job, dir);
      } catch (e) {
        if (!cancelled) throw e;
        throw new LatheError(`slurm job ${job} was cancelled before its worker started`, 1);
      }
      opts.onNotice?.(`slurm job ${job}: worker at ${url}`);
      const client = await WorkerClient.connect(url, { token: this.token, log: opts.onNotice });
      const remote = await pick(client);
      return {
        client,
        job: remote,
        after: async (s: RunSummary) => {
          // A cancelled run frees its allocation now, scancel-ed before we leave: once its last client
          // has gone a --once worker ends by itself, and Slurm would record COMPLETED, not CANCELLED.
          // Otherwise the worker stops by itself once we left.
          if (s.status === 'cancelled') await this.cancel(job).catch(() => {});
          client.close();
          const final = await this.waitGone(job);
          await record({ worker: url, job_state: final.state, state_from: final.source });
          opts.onNotice?.(`slurm job ${job}: ${final.state}`);
        },
      };
    })();
    return attachRemoteRun(rd, lock, source, {
      onNotice: opts.onNotice,
      onCancel: async () => {
        cancelled = true;
        await this.cancel(job);
      },
    });
  }

  /** Resumes a run whose Slurm job ended early: a new batch job starts a worker on the same state, which resumes the job from its last checkpoint. */
  async resume(runDir: string, opts: Omit<StartOptions, 'out'> = {}): Promise<Run> {
    const rd = RunDir.open(runDir);
    const p = join(rd.path, 'slurm.json');
    const w = join(rd.path, 'worker.json');
    if (!existsSync(p) || !existsSync(w))
      throw new LatheError(
        `${runDir}: not a run started through Slurm that reached its worker (no slurm.json and worker.json)`,
      );
    const prev = JSON.parse(readFileSync(p, 'utf8')) as { dir: string };
    const remote = (JSON.parse(readFileSync(w, 'utf8')) as { job: string }).job;
    const lock = rd.readLock() as AnyLock;
    await writeFile(join(prev.dir, 'job.sh'), this.script(prev.dir, lock.backend, lock.engine));
    const out = await run(
      'sbatch',
      [...this.sbatchArgs(prev.dir, lock.recipe.name ?? lock.recipe.stage, lock), join(prev.dir, 'job.sh')],
      { env: this.env },
    );
    const job = out.stdout.trim().split(';')[0]!;
    await rm(join(prev.dir, 'worker.url'), { force: true });
    await rm(rd.metricsPath, { force: true });
    await rm(rd.eventsPath, { force: true });
    return this.follow(rd, lock, job, prev.dir, opts, async (client) => {
      const info = (await client.jobs()).find((j) => j.id === remote);
      if (!info) throw new LatheError(`${runDir}: the worker has no job ${remote}`);
      if (info.status !== 'running' && info.status !== 'queued' && info.status !== 'completed')
        await client.requeue(remote);
      return remote;
    });
  }
}

/** An executor that runs each job as a Slurm batch job: `r.run({ on: workers.slurm({ sharedDir, tokenFile, gpus: 1 }) })`. */
export function slurm(opts: SlurmOptions): SlurmExecutor {
  return new SlurmExecutor(opts);
}
