// The kernel's end of the `lathe.runs` comm: the Runs panel lists this kernel's runs, follows one, and
// cancels or interrupts one. The messages are declared once, in the library (src/rooms/runs-comm.ts).
import type * as Lathe from 'lathe';
import {
  parseFrontendMessage,
  RUNS_TARGET,
  type RunInfo,
  type RunsKernelMessage,
} from '../../dist/src/rooms/runs-comm.js';
import type { Comm, CommManager } from './comms.js';
import { roomRefFor } from './display.js';
import type { Message } from './wire.js';

/** A run's list entry. */
export function runInfo(run: Lathe.Run): RunInfo {
  const last = run.metricsSoFar.at(-1);
  const ref = roomRefFor(run);
  return {
    id: run.id,
    room: ref?.name ?? `run:${run.id}`,
    dir: run.dir.path,
    name: run.lock.recipe.name ?? null,
    stage: run.lock.recipe.stage,
    status: run.status,
    step: run.summary?.step ?? last?.step ?? 0,
    steps: run.summary?.steps ?? run.lock.recipe.train.steps,
    loss: run.summary?.loss ?? last?.loss ?? null,
    live: run.status === 'running',
    ...(ref ? { roomRef: ref } : {}),
    ...worldOf(run.lock.recipe.resources),
  };
}

/** The world of a multi-rank run, for the Runs panel. */
function worldOf(r: { gpus: number; nodes: number; parallel: string } | undefined): Pick<RunInfo, 'world'> {
  return r && r.gpus * r.nodes > 1 ? { world: { ranks: r.gpus * r.nodes, parallel: r.parallel } } : {};
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
    const send = (m: RunsKernelMessage, parent: Message) => comm.send({ ...m }, parent);
    const follows = new Map<string, () => void>();
    const list = () => known().map(runInfo);
    const stopStarts = onRunStart((run) => send({ type: 'started', run: runInfo(run) }, openMsg));
    send({ type: 'runs', runs: list() }, openMsg);

    comm.onMsg((data, msg) => {
      const parsed = parseFrontendMessage(data);
      if (!parsed.ok) {
        // Echo what can be read of the request, so the frontend can tell which one failed.
        const { type, id } = (typeof data === 'object' && data !== null ? data : {}) as Record<string, unknown>;
        const echo = { request: typeof type === 'string' ? type : null, id: typeof id === 'string' ? id : null };
        return send({ type: 'error', ...echo, field: parsed.field, message: parsed.error }, msg);
      }
      const req = parsed.message;
      if (req.type === 'list') return send({ type: 'runs', runs: list() }, msg);
      const run = known().find((r) => r.id === req.id);
      if (!run)
        return send({ type: 'error', request: req.type, id: req.id, message: `no run ${req.id} in this kernel` }, msg);
      switch (req.type) {
        case 'follow': {
          follows.get(run.id)?.();
          send({ type: 'snapshot', id: run.id, run: runInfo(run), metrics: run.metricsSoFar, events: run.events }, msg);
          if (run.status !== 'running') {
            send({ type: 'done', id: run.id, summary: run.summary ?? null, run: runInfo(run) }, msg);
            return;
          }
          const offMetric = run.onMetric((metric) => send({ type: 'metric', id: run.id, metric }, msg));
          const offEvent = run.onEvent((event) => send({ type: 'event', id: run.id, event }, msg));
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
              send({ type: 'done', id: run.id, summary: run.summary ?? null, run: runInfo(run) }, msg);
            });
          return;
        }
        case 'unfollow':
          follows.get(run.id)?.();
          return send({ type: 'ack', request: 'unfollow', id: run.id }, msg);
        case 'cancel':
          if (!(req.by && cancelAs(run, req.by))) run.cancel();
          return send({ type: 'ack', request: 'cancel', id: run.id }, msg);
        case 'interrupt':
          run.interrupt();
          return send({ type: 'ack', request: 'interrupt', id: run.id }, msg);
      }
    });
    comm.onClose(() => {
      stopStarts();
      for (const stop of [...follows.values()]) stop();
    });
  });
}
