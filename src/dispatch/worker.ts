import { appendFileSync, existsSync, readFileSync } from 'node:fs';
import { rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { engineFromEnv, worldSize, type EngineRequest } from '../engine/select.js';
import { resourcesFor, type ResourceRequest } from '../recipe/resources.js';
import type { BackendRequest, EngineBackend } from '../engine/tfjs/backend.js';
import { LatheError } from '../errors.js';
import { lockPipeline, lockRecipe, type AnyLock, type EngineLock } from '../recipe/lock.js';
import type { Pipeline, Recipe } from '../runs/recipe.js';
import type { ResolvedPipeline, ResolvedRecipe, Resources } from '../recipe/schema.js';
import { registerLive } from '../runs/live.js';
import { localExecutor } from '../runs/local.js';
import { Run } from '../runs/run.js';
import { RunDir, type RunSummary } from '../runs/rundir.js';
import {
  ConnectionLost,
  WorkerClient,
  WorkerError,
  type ConnectOptions,
  type UploadResult,
  type Watch,
} from '../worker/client.js';
import { isWorkerPath, lockFiles, recipeFiles, recipePathFields } from '../worker/paths.js';
import { TERMINAL, type JobInfo } from '../worker/protocol.js';
import type { Executor, StartOptions } from '../runs/run.js';

// Runs on a worker: the recipe is locked for the worker's backend, the files it needs are uploaded
// by content hash (only those the worker lacks), and the job is submitted. The Run this returns
// mirrors the remote run directory as it streams, so it charts like a local run; when the job ends
// the run directory (metrics, events, summary, final checkpoint) is downloaded into it.

/** Where a remote run came from, kept in its local run directory (worker.json) for resume. */
interface RemoteRef {
  url: string;
  job: string;
}

/** Options of a remote start beyond the local ones. */
export interface RemoteStartOptions extends StartOptions {
  /** A job name shown by `lathe jobs` (default: the recipe's name or stage). */
  name?: string;
}

/** An executor that locks recipes itself (Recipe.start asks it to): a worker has its own backends and data. */
export interface LockingExecutor extends Executor {
  lockRecipe(recipe: Recipe | Pipeline, opts: RemoteLockOptions): Promise<AnyLock>;
}

/** What a lock made for a worker may override: steps, the backend, and the engine, device and dtype. */
export interface RemoteLockOptions extends Omit<EngineRequest, 'backend'>, ResourceRequest {
  steps?: number;
  backend?: BackendRequest;
}

/** True for an executor that locks recipes itself. */
export function isLockingExecutor(e: Executor | undefined): e is LockingExecutor {
  return !!e && typeof (e as Partial<LockingExecutor>).lockRecipe === 'function';
}

/** A recipe's config with train.steps replaced (warmup clamped to fit), as Recipe.lock does. */
export function withSteps<T extends ResolvedRecipe | ResolvedPipeline>(config: T, steps: number | undefined): T {
  if (steps === undefined) return config;
  if (!Number.isInteger(steps) || steps < 1) throw new LatheError(`--steps: must be a positive integer, got ${steps}`);
  const c = structuredClone(config);
  const fix = (t: { steps: number; warmupSteps: number }) => {
    t.steps = steps;
    t.warmupSteps = Math.min(t.warmupSteps, Math.max(0, steps - 1));
  };
  if (c.stage === 'pipeline') {
    for (const st of (c as ResolvedPipeline).stages) fix(st.train);
    (c as ResolvedPipeline).train.steps = steps * (c as ResolvedPipeline).stages.length;
  } else fix((c as ResolvedRecipe).train);
  return c;
}

/** The executor for one worker connection. `workers.connect(url, { token })` makes one. */
export class WorkerExecutor implements LockingExecutor {
  readonly name: string;
  readonly client: WorkerClient;
  /** What the last start uploaded (for progress reports and tests). */
  lastUpload: UploadResult[] = [];
  /** The job the last start submitted. */
  lastJob?: JobInfo;

  constructor(client: WorkerClient) {
    this.client = client;
    this.name = `worker ${client.url}`;
  }

  /** The worker's URL. */
  get url(): string {
    return this.client.url;
  }

  /**
   * The backend a job gets: a named one must be available on the worker (else an error saying why);
   * `auto`, or a recipe that names none, takes the worker's own.
   */
  backendFor(request: BackendRequest | undefined): EngineBackend {
    const h = this.client.hello;
    if (request === undefined || request === 'auto') return h.backend;
    const why = h.backends[request];
    if (why !== 'ok') throw new LatheError(`backend ${request} is not available on the worker at ${this.url}: ${why}`);
    return request;
  }

  /**
   * The torch engine a job gets (undefined: tfjs): the client's request, else the environment's, else
   * the recipe's, else the worker's default; torch must be on the worker, and CUDA for device cuda.
   */
  engineFor(request: EngineRequest): EngineLock | undefined {
    const e = this.client.hello.engines;
    const kind = request.engine ?? e?.default ?? 'tfjs';
    const torch = e?.torch;
    if (kind === 'tfjs' || (kind === 'auto' && !torch)) {
      if (request.dtype === 'bf16')
        throw new LatheError('dtype bf16: the tfjs engine computes in fp32; use --engine torch', 2);
      return undefined;
    }
    if (!torch)
      throw new LatheError(
        `engine torch is not available on the worker at ${this.url}: ${e?.torchWhy ?? 'the worker predates the torch engine'}`,
        2,
      );
    const device = request.device ?? e?.device ?? (torch.cuda ? 'cuda' : 'cpu');
    if (device === 'cuda' && !torch.cuda)
      throw new LatheError(`device cuda: torch ${torch.version} on the worker at ${this.url} sees no CUDA device`, 2);
    return { kind: 'torch', device, dtype: request.dtype ?? e?.dtype ?? 'fp32', torch: torch.version };
  }

  /** Several ranks need torch on the worker, and on one CUDA machine no more GPUs than it has. */
  private checkResources(r: Resources | undefined, engine: EngineLock | undefined): void {
    if (worldSize(r) <= 1) return;
    if (!engine) throw new LatheError(`resources: ${worldSize(r)} ranks need the torch engine (--engine torch)`, 2);
    const have = this.client.hello.engines?.torch?.devices ?? 0;
    if (engine.device === 'cuda' && r!.nodes === 1 && r!.gpus > have)
      throw new LatheError(`resources.gpus: ${r!.gpus} GPUs asked for, the worker at ${this.url} has ${have}`, 2);
  }

  /** Locks a recipe for this worker; recipes that name `worker:` data are locked by the worker, which hashes that data where it lives. */
  async lockRecipe(recipe: Recipe | Pipeline, opts: RemoteLockOptions = {}): Promise<AnyLock> {
    const input = recipe.input as EngineRequest;
    const env = engineFromEnv();
    const engine = this.engineFor({
      engine: opts.engine ?? env.engine ?? input.engine,
      device: opts.device ?? env.device ?? input.device,
      dtype: opts.dtype ?? env.dtype ?? input.dtype,
    });
    const backend = engine
      ? 'cpu'
      : this.backendFor(opts.backend ?? env.backend ?? (recipe.input as { backend?: BackendRequest }).backend);
    const named = engine ? { engine: 'torch' as const, device: engine.device, dtype: engine.dtype } : {};
    const resources = resourcesFor(opts, recipe.config.resources);
    this.checkResources(resources, engine);
    const config = withSteps(
      { ...recipe.config, backend, ...named, ...(resources ? { resources } : {}) } as ResolvedRecipe | ResolvedPipeline,
      opts.steps,
    );
    const onWorker = recipePathFields(config as unknown as Record<string, unknown>).some((f) => isWorkerPath(f.value));
    if (!onWorker) {
      return config.stage === 'pipeline'
        ? lockPipeline(config as ResolvedPipeline, { baseDir: recipe.baseDir, backend, engine })
        : lockRecipe(config as ResolvedRecipe, { baseDir: recipe.baseDir, backend, engine });
    }
    if (!this.client.hello.dataRoot)
      throw new LatheError(`the recipe names worker: data, but the worker at ${this.url} has no --data-root`);
    const stages = config.stage === 'pipeline' ? (config as ResolvedPipeline).stages : [config as ResolvedRecipe];
    const files = (
      await Promise.all(stages.map((s) => recipeFiles(s as unknown as Record<string, unknown>, recipe.baseDir)))
    ).flat();
    this.lastUpload = await this.client.uploadAll(files);
    const r = await this.client.request({
      type: 'lock',
      recipe: config as unknown as Record<string, unknown>,
      baseDir: recipe.baseDir,
      backend,
      engine,
      files,
    });
    return r.lock as unknown as AnyLock;
  }

  /** Uploads what the lock needs, submits it, and returns the live Run (its directory mirrors the worker's). */
  async start(lock: AnyLock, opts: RemoteStartOptions = {}): Promise<Run> {
    // The local directory first: a clash with an existing run is found before anything reaches the worker.
    const rd = await RunDir.create(lock, opts.out);
    const { job, uploads } = await submitLock(this.client, lock, opts).catch(async (e: unknown) => {
      await rm(rd.path, { recursive: true, force: true });
      throw e;
    });
    this.lastUpload = uploads;
    this.lastJob = job;
    return attachRemoteRun(rd, lock, Promise.resolve({ client: this.client, job: job.id }), {
      onNotice: opts.onNotice,
    });
  }

  /**
   * Follows a job already on the worker (submitted from anywhere; queued, running or ended) into a
   * local run directory: its metrics, events and log lines from the start, without gaps or repeats,
   * then its files (metrics, events, summary, final checkpoint) once it ends. `out` may be the
   * mirror an earlier submit or attach of the same job left; it is brought up to date. Otherwise
   * a new directory holds the lock as the worker holds it (its paths are the worker's).
   */
  async attach(job: string, opts: { out?: string; onNotice?: (m: string) => void } = {}): Promise<Run> {
    const { job: info, lock } = await this.client.job(job).catch((e: unknown) => {
      throw e instanceof WorkerError && e.code === 'not-found'
        ? new LatheError(`--attach ${job}: the worker at ${this.url} has no such job (see lathe jobs)`)
        : e;
    });
    this.lastJob = info;
    let rd: RunDir;
    let runLock: AnyLock = lock;
    if (opts.out && existsSync(join(opts.out, 'recipe.lock.json'))) {
      rd = RunDir.open(opts.out);
      const ref = readRef(rd);
      if (ref?.job !== job)
        throw new LatheError(
          `--out ${opts.out}: already holds ${ref ? `the mirror of job ${ref.job}` : 'a run'}, not job ${job}; choose another directory`,
        );
      runLock = rd.readLock() as AnyLock;
      // The worker streams the whole history again: start the mirror's streams over.
      await rm(rd.metricsPath, { force: true });
      await rm(rd.eventsPath, { force: true });
    } else rd = await RunDir.create(lock, opts.out);
    return attachRemoteRun(rd, runLock, Promise.resolve({ client: this.client, job }), { onNotice: opts.onNotice });
  }

  /** Follows a remote run again from its local directory (worker.json names the job); an interrupted job is queued again first. */
  async resume(runDir: string, opts: Omit<StartOptions, 'out'> = {}): Promise<Run> {
    const rd = RunDir.open(runDir);
    const ref = readRef(rd);
    if (!ref)
      throw new LatheError(`${runDir}: not a run of a worker (no worker.json); resume it locally with lathe resume`);
    const info = (await this.client.jobs()).find((j) => j.id === ref.job);
    if (!info) throw new LatheError(`${runDir}: the worker at ${this.url} has no job ${ref.job}`);
    if (info.status === 'completed')
      throw new LatheError(`${runDir}: job ${ref.job} already completed ${info.step} steps; nothing to resume`);
    if (TERMINAL.has(info.status)) await this.client.requeue(ref.job);
    // Start the mirror over: the worker streams the whole history again.
    await rm(rd.metricsPath, { force: true });
    await rm(rd.eventsPath, { force: true });
    return attachRemoteRun(rd, rd.readLock() as AnyLock, Promise.resolve({ client: this.client, job: ref.job }), opts);
  }

  /** Every job on the worker. */
  jobs(): Promise<JobInfo[]> {
    return this.client.jobs();
  }

  /** Cancels a job on the worker. */
  cancel(job: string): Promise<{ job: JobInfo; was: JobInfo['status'] }> {
    return this.client.cancel(job);
  }

  /** Closes the connection (jobs go on training on the worker). */
  close(): void {
    this.client.close();
  }
}

/** Uploads the files a lock needs (only what the worker lacks) and submits it; returns the queued job. */
export async function submitLock(
  client: WorkerClient,
  lock: AnyLock,
  opts: RemoteStartOptions = {},
): Promise<{ job: JobInfo; uploads: UploadResult[] }> {
  const files = await lockFiles(lock);
  const total = files.reduce((a, f) => a + f.bytes, 0);
  opts.onNotice?.(`uploading what the worker lacks of ${files.length} file(s), ${(total / 1e6).toFixed(1)} MB`);
  const uploads = await client.uploadAll(files);
  if (files.length)
    opts.onNotice?.(
      `uploaded ${uploads.reduce((a, u) => a + u.sent, 0)} chunk(s); ${uploads.filter((u) => u.sent === 0).length} file(s) were already on the worker`,
    );
  const r = await client.request({
    type: 'submit',
    lock: lock as unknown as Record<string, unknown>,
    files,
    name: opts.name,
    stopAfter: opts.stopAfter,
  });
  const job = r.job;
  opts.onNotice?.(`submitted job ${job.id} to ${client.url}`);
  return { job, uploads };
}

function readRef(rd: RunDir): RemoteRef | undefined {
  const p = join(rd.path, 'worker.json');
  return existsSync(p) ? (JSON.parse(readFileSync(p, 'utf8')) as RemoteRef) : undefined;
}

/**
 * A Run that mirrors a job on a worker into a local run directory: metrics and events as they stream
 * (by sequence number, so a reconnect neither loses nor repeats a point), then the worker's files
 * when the job ends. `source` resolves once the job exists (a cluster job may first wait in a queue).
 */
export function attachRemoteRun(
  rd: RunDir,
  lock: AnyLock,
  source: Promise<{ client: WorkerClient; job: string; after?: (s: RunSummary) => Promise<void> }>,
  opts: { onNotice?: (m: string) => void; onCancel?: () => Promise<void> } = {},
): Run {
  let settle!: (p: Promise<RunSummary>) => void;
  const exec = new Promise<Promise<RunSummary>>((r) => (settle = r)).then((p) => p);
  let target: { client: WorkerClient; job: string } | undefined;
  const control = (mode: 'cancel' | 'interrupt') => {
    if (target)
      void target.client.cancel(target.job, mode).catch((e: Error) => opts.onNotice?.(`${mode}: ${e.message}`));
    else if (mode === 'cancel') void opts.onCancel?.();
  };
  const run = new Run(rd, lock, exec, {
    interrupt: () => control('interrupt'),
    cancel: () => control('cancel'),
    resumeOn: localExecutor,
  });
  settle(
    source.then(async ({ client, job, after }) => {
      target = { client, job };
      await writeFile(
        join(rd.path, 'worker.json'),
        JSON.stringify({ url: client.url, job } satisfies RemoteRef, null, 2) + '\n',
      );
      const summary = await follow(rd, run, client, job, opts.onNotice);
      await after?.(summary);
      return summary;
    }),
  );
  registerLive(run);
  return run;
}

async function follow(
  rd: RunDir,
  run: Run,
  client: WorkerClient,
  job: string,
  onNotice?: (m: string) => void,
): Promise<RunSummary> {
  let watch: Watch | undefined;
  let lostHandler: ((e: Error) => void) | undefined;
  try {
    const final = await new Promise<JobInfo>((resolve, reject) => {
      lostHandler = (e: Error) =>
        reject(
          new LatheError(
            `${e.message}; job ${job} keeps training on the worker (see lathe jobs; lathe submit --wait reconnects by itself)`,
            1,
          ),
        );
      client.once('lost', lostHandler);
      watch = client.watch(job, {
        metric: (m) => {
          rd.appendMetric(m);
          run.pushMetric(m);
        },
        event: (e) => {
          appendFileSync(rd.eventsPath, JSON.stringify(e) + '\n');
          run.pushEvent(e);
        },
        log: (line) => onNotice?.(`worker: ${line}`),
        state: (j) => {
          if (TERMINAL.has(j.status)) resolve(j);
        },
      });
    });
    watch?.close();
    // The worker's files are the record: download them (the client-side lock stays, its paths are this machine's).
    for (let attempt = 0; ; attempt++) {
      try {
        await client.fetch(job, rd.path, 'run', (p) => p === 'recipe.lock.json');
        break;
      } catch (e) {
        // A job that ended before its run directory existed (cancelled in the queue, failed to start) has nothing to download.
        if (e instanceof WorkerError && e.code === 'not-found') break;
        if (!(e instanceof ConnectionLost) || attempt >= 5) throw e;
        await client.ready();
      }
    }
    const fetched = await rd.readSummary();
    if (fetched) {
      // The local directory is this run's record here: its own id, and where it trained.
      fetched.id = run.id;
      fetched.worker = { url: client.url, job };
      await rd.writeSummary(fetched);
    }
    const summary: RunSummary =
      fetched ??
      ({
        id: run.id,
        lockId: final.lockId,
        stage: final.stage,
        status: final.status === 'queued' ? 'cancelled' : final.status,
        step: final.step,
        steps: final.steps,
        tokens: 0,
        seconds: 0,
        backend: final.backend,
        lathe: run.lock.lathe,
        error: final.error,
        worker: { url: client.url, job },
      } satisfies RunSummary);
    if (!fetched) await rd.writeSummary(summary);
    if (summary.status === 'failed')
      throw new LatheError(`job ${job} on ${client.url} failed: ${summary.error ?? 'no reason given'}`, 1);
    return summary;
  } finally {
    watch?.close();
    if (lostHandler) client.off('lost', lostHandler);
  }
}

/** Connects to a worker (ws:// or wss://) and returns its executor: `await r.run({ on: await workers.connect(url, { token }) })`. */
export async function connect(url: string, opts: ConnectOptions): Promise<WorkerExecutor> {
  return new WorkerExecutor(await WorkerClient.connect(url, opts));
}
