// The `lathe.runs` comm target: the Runs panel lists this kernel's runs, follows one, and cancels one.
//
// Frontend → kernel: {type:'list'} | {type:'follow', id} | {type:'unfollow', id} | {type:'cancel', id} | {type:'interrupt', id}
// Kernel → frontend: {type:'runs', runs} | {type:'started', run} | {type:'snapshot', id, run, metrics, events}
//                    | {type:'metric', id, metric} | {type:'event', id, event} | {type:'done', id, summary, run}
//                    | {type:'ack', request, id} | {type:'error', request?, id?, message}
import type * as Lathe from 'lathe';
import type { Comm, CommManager } from './comms.js';
import { roomRefFor } from './display.js';

/** The comm target name. */
export const RUNS_TARGET = 'lathe.runs';

/** What the panel shows for one run. */
export interface RunInfo {
  id: string;
  room: string;
  dir: string;
  name: string | null;
  stage: string;
  status: string;
  step: number;
  steps: number;
  loss: number | null;
  live: boolean;
  /** How a browser joins the run's room (a read token), when run rooms are on. */
  roomRef?: unknown;
}

/** A run's list entry. */
export function runInfo(run: Lathe.Run): RunInfo {
  const last = run.metricsSoFar.at(-1);
  return {
    id: run.id,
    room: roomRefFor(run)?.name ?? `run:${run.id}`,
    dir: run.dir.path,
    name: run.lock.recipe.name ?? null,
    stage: run.lock.recipe.stage,
    status: run.status,
    step: run.summary?.step ?? last?.step ?? 0,
    steps: run.summary?.steps ?? run.lock.recipe.train.steps,
    loss: run.summary?.loss ?? last?.loss ?? null,
    live: run.status === 'running',
    ...(roomRefFor(run) ? { roomRef: roomRefFor(run) } : {}),
  };
}

/** Registers `lathe.runs`; `known()` lists the runs this kernel has seen (live first). */
export function registerRunsTarget(
  comms: CommManager,
  known: () => Lathe.Run[],
  onRunStart: (fn: (run: Lathe.Run) => void) => () => void,
  /** Cancels on behalf of a named collaborator (recorded in the run's room); false when it cannot. */
  cancelAs: (run: Lathe.Run, by: string) => boolean = () => false,
): void {
  comms.registerTarget(RUNS_TARGET, (comm: Comm, _data, openMsg) => {
    const follows = new Map<string, () => void>();
    const find = (id: unknown) => known().find((r) => r.id === id);
    const list = () => known().map(runInfo);
    const stopStarts = onRunStart((run) => comm.send({ type: 'started', run: runInfo(run) }, openMsg));
    comm.send({ type: 'runs', runs: list() }, openMsg);

    comm.onMsg((data, msg) => {
      const type = data.type;
      if (type === 'list') return comm.send({ type: 'runs', runs: list() }, msg);
      const run = find(data.id);
      if (!run)
        return comm.send(
          { type: 'error', request: type, id: data.id ?? null, message: `no run ${String(data.id)} in this kernel` },
          msg,
        );
      switch (type) {
        case 'follow': {
          follows.get(run.id)?.();
          comm.send(
            { type: 'snapshot', id: run.id, run: runInfo(run), metrics: run.metricsSoFar, events: run.events },
            msg,
          );
          if (run.status !== 'running') {
            comm.send({ type: 'done', id: run.id, summary: run.summary ?? null, run: runInfo(run) }, msg);
            return;
          }
          const offMetric = run.onMetric((metric) => comm.send({ type: 'metric', id: run.id, metric }, msg));
          const offEvent = run.onEvent((event) => comm.send({ type: 'event', id: run.id, event }, msg));
          let stopped = false;
          const stop = () => {
            stopped = true;
            offMetric();
            offEvent();
            follows.delete(run.id);
          };
          follows.set(run.id, stop);
          void run.done
            .catch(() => undefined)
            .then(() => {
              if (stopped) return;
              stop();
              comm.send({ type: 'done', id: run.id, summary: run.summary ?? null, run: runInfo(run) }, msg);
            });
          return;
        }
        case 'unfollow':
          follows.get(run.id)?.();
          return comm.send({ type: 'ack', request: 'unfollow', id: run.id }, msg);
        case 'cancel':
          if (!(typeof data.by === 'string' && data.by && cancelAs(run, data.by))) run.cancel();
          return comm.send({ type: 'ack', request: 'cancel', id: run.id }, msg);
        case 'interrupt':
          run.interrupt();
          return comm.send({ type: 'ack', request: 'interrupt', id: run.id }, msg);
        default:
          return comm.send(
            { type: 'error', request: type ?? null, message: `unknown request ${JSON.stringify(type)}` },
            msg,
          );
      }
    });
    comm.onClose(() => {
      stopStarts();
      for (const stop of [...follows.values()]) stop();
    });
  });
}
