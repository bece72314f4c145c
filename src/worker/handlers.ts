import { randomBytes } from 'node:crypto';
import { mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { LatheError } from '../errors.js';
import { lockPipeline, lockRecipe, type AnyLock, type RecipeLock } from '../recipe/lock.js';
import type { ResolvedPipeline, ResolvedRecipe } from '../recipe/schema.js';
import { resolveAnyRecipe } from '../recipe/validate.js';
import { sendJobFiles } from './files.js';
import { clientLock, placeFiles, relocateLock, workerRecipe, type Relocation } from './paths.js';
import { ProtocolError, type ClientMessage } from './protocol.js';
import type { Session, WorkerContext } from './session.js';
import type { JobStreams } from './stream.js';

// The worker's answer to each request, by type. A handler replies, or throws a ProtocolError (or a
// LatheError, sent as `bad-request`) that the transport turns into an error reply.

type Msg<T extends ClientMessage['type']> = Extract<ClientMessage, { type: T }>;

/** Handles one validated request from a client. */
export async function handleMessage(
  ctx: WorkerContext,
  streams: JobStreams,
  c: Session,
  m: ClientMessage,
): Promise<void> {
  const { queue, store } = ctx;
  switch (m.type) {
    case 'hello':
      return c.send({ type: 'welcome', re: m.id, ...(await ctx.hello()) });
    case 'upload.begin': {
      const s = await store.begin(m.sha256, m.bytes, m.chunkBytes);
      return c.send({ type: 'upload.status', re: m.id, ...s });
    }
    case 'upload.end': {
      const r = await store.end(m.sha256);
      return c.send({ type: 'upload.done', re: m.id, sha256: m.sha256, bytes: r.bytes });
    }
    case 'lock':
      return c.send({ type: 'locked', re: m.id, lock: { ...(await lockOnWorker(ctx, m)) } });
    case 'submit':
      return submit(ctx, c, m);
    case 'jobs':
      return c.send({ type: 'jobs', re: m.id, jobs: queue.list() });
    case 'job': {
      const job = queue.get(m.job);
      if (!job) throw new ProtocolError('not-found', `job: no job "${m.job}" on this worker`, m.id);
      return c.send({ type: 'job', re: m.id, job, lock: { ...queue.lock(m.job) } });
    }
    case 'cancel': {
      const before = queue.get(m.job);
      if (!before) throw new ProtocolError('not-found', `cancel: no job "${m.job}" on this worker`, m.id);
      const job = (await queue.cancel(m.job, m.mode))!;
      return c.send({ type: 'cancelled', re: m.id, job, was: before.status });
    }
    case 'requeue': {
      const job = await queue.requeue(m.job);
      if (!job) throw new ProtocolError('not-found', `requeue: no job "${m.job}" on this worker`, m.id);
      return c.send({ type: 'requeued', re: m.id, job });
    }
    case 'watch':
      return streams.watch(c, m.id, m.job, { metrics: m.metrics, events: m.events, logs: m.logs });
    case 'unwatch':
      streams.unwatch(c, m.job);
      return c.send({ type: 'unwatched', re: m.id, job: m.job });
    case 'fetch':
      return sendJobFiles(ctx, c, m.id, m.job, m.what);
  }
}

function relocation(ctx: WorkerContext, inputs: string, baseDir: string): Relocation {
  return { clientBaseDir: baseDir, inputs, dataRoot: ctx.dataRoot };
}

function checkBackend(ctx: WorkerContext, backend: string): void {
  const why = ctx.backends.backends[backend as 'cpu'];
  if (why !== 'ok')
    throw new ProtocolError(
      'backend',
      `backend ${backend} is not available on this worker: ${why ?? 'unknown backend'}`,
    );
}

/** Queues a job: its lock checked, its files placed under the job's inputs, its paths mapped to the worker. */
async function submit(ctx: WorkerContext, c: Session, m: Msg<'submit'>): Promise<void> {
  const lock = m.lock as unknown as AnyLock;
  checkLockShape(lock);
  checkBackend(ctx, lock.backend);
  const { queue } = ctx;
  const id = queue.newId();
  const inputs = queue.inputsDir(id);
  try {
    // Made here, before the inputs are placed in it, so that it is 0700 from the start.
    await mkdir(queue.jobDir(id), { recursive: true, mode: 0o700 });
    const workerLock = await relocateLock(lock, m.files, relocation(ctx, inputs, lock.baseDir), ctx.store);
    const job = await queue.add(id, workerLock, { name: m.name, stopAfter: m.stopAfter });
    ctx.jobAdded();
    ctx.log(`client ${c.peer} submitted job ${id} (${job.name})`);
    return c.send({ type: 'submitted', re: m.id, job });
  } catch (e) {
    await rm(queue.jobDir(id), { recursive: true, force: true });
    throw e;
  }
}

/** Locks a recipe that names `worker:` data: the files are hashed here, and the lock returned in client form. */
async function lockOnWorker(ctx: WorkerContext, m: Msg<'lock'>): Promise<AnyLock> {
  checkBackend(ctx, m.backend);
  const staging = join(ctx.stateDir, 'staging', randomBytes(6).toString('hex'));
  const r = relocation(ctx, staging, m.baseDir);
  try {
    await mkdir(staging, { recursive: true, mode: 0o700 });
    await placeFiles(m.files, r, ctx.store);
    const config = checkResolved(await workerRecipe(m.recipe, r), 'recipe') as ResolvedRecipe | ResolvedPipeline;
    const lock =
      config.stage === 'pipeline'
        ? await lockPipeline(
            { ...(config as ResolvedPipeline), backend: m.backend },
            { baseDir: staging, backend: m.backend, engine: m.engine },
          )
        : await lockRecipe(
            { ...(config as ResolvedRecipe), backend: m.backend },
            { baseDir: staging, backend: m.backend, engine: m.engine },
          );
    return clientLock(lock, r);
  } finally {
    await rm(staging, { recursive: true, force: true });
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
  if (lock.baseDir.includes('\0')) throw bad('baseDir', 'a path without NUL bytes');
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
