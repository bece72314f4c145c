import { LatheError } from '../errors.js';
import { checkResources, worldSize } from '../engine/select.js';
import { isPipelineLock, type AnyLock } from '../recipe/lock.js';
import { resourcesFor, type ResourceRequest } from '../recipe/resources.js';
import { executeStage, type Sink } from '../train/execute.js';
import { executePipeline } from '../train/pipeline.js';
import type { StopSignal } from '../train/loop.js';
import type { EngineBackend } from '../engine/tfjs/backend.js';
import type { Executor, StartOptions } from './run.js';
import { registerLive } from './live.js';
import { Run } from './run.js';
import { RunDir, type RunSummary } from './rundir.js';

function runSink(rd: RunDir, run: Run): Sink {
  return {
    emit: (m) => {
      rd.appendMetric(m);
      run.pushMetric(m);
    },
    event: (e) => run.pushEvent(rd.appendEvent(e)),
    replay: (ms) => ms.forEach((m) => run.pushMetric(m)),
  };
}

/** Reads a run directory's lock, a stage's or a pipeline's. */
function readAnyLock(rd: RunDir): AnyLock {
  return rd.readLock() as AnyLock;
}

function launch(rd: RunDir, lock: AnyLock, opts: StartOptions & { resume: boolean; backend?: EngineBackend }): Run {
  const stop: StopSignal = {};
  let resolveExec!: (p: Promise<RunSummary>) => void;
  const exec = new Promise<RunSummary>((r) => (resolveExec = r)).then((p) => p);
  const run = new Run(rd, lock, exec, {
    interrupt: () => void (stop.reason ??= 'interrupt'),
    cancel: () => void (stop.reason = 'cancel'),
    resumeOn: localExecutor,
  });
  resolveExec(
    isPipelineLock(lock)
      ? executePipeline(rd, lock, run, stop, opts)
      : executeStage(rd, lock, run.id, runSink(rd, run), stop, opts),
  );
  registerLive(run);
  return run;
}

/** A run resumed on other resources: the lock records them (its id stays), and an event says so. */
async function moveRun(rd: RunDir, lock: AnyLock, req: ResourceRequest): Promise<AnyLock> {
  const was = lock.recipe.resources;
  const resources = resourcesFor(req, was);
  checkResources(resources, lock.engine);
  const moved = { ...lock, recipe: { ...lock.recipe, resources } } as AnyLock;
  if (isPipelineLock(moved)) moved.stages = moved.stages.map((st) => ({ ...st, recipe: { ...st.recipe, resources } }));
  await rd.writeLock(moved);
  const ranks = (r: typeof was) => `${worldSize(r)} rank${worldSize(r) === 1 ? '' : 's'}${r ? ` (${r.parallel})` : ''}`;
  rd.appendEvent({ type: 'notice', message: `resources: resuming on ${ranks(resources)}; it ran on ${ranks(was)}` });
  return moved;
}

/** The executor that trains in this process (the notebook kernel or the CLI). */
export const localExecutor: Executor = {
  name: 'local',
  async start(lock, opts) {
    const rd = await RunDir.create(lock, opts.out, { private: opts.private });
    return launch(rd, lock, { ...opts, resume: false });
  },
  /** Continues a run here; `backend` moves a tfjs run to another backend (its checkpoints load on every one). */
  async resume(runDir: string, opts: Omit<StartOptions, 'out'> & { backend?: EngineBackend } = {}) {
    const rd = RunDir.open(runDir);
    let lock = readAnyLock(rd);
    const summary = await rd.readSummary();
    if (summary?.status === 'completed')
      throw new LatheError(`${runDir}: run already completed ${summary.step} steps; nothing to resume`);
    if (opts.resources) lock = await moveRun(rd, lock, opts.resources);
    return launch(rd, lock, { ...opts, resume: true });
  },
};
