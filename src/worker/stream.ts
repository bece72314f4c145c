import { RunDir, type Metric, type RunEvent } from '../runs/rundir.js';
import { isTerminal } from './jobs.js';
import { ProtocolError, type JobInfo } from './protocol.js';
import type { Session, WatchCursor, WorkerContext } from './session.js';

// Watches: a job's metrics, events and log lines pushed to the clients that follow it, by sequence
// number (their line in metrics.jsonl / events.jsonl / job.log). What the job wrote before the watch
// began is sent first, then what it writes, without gaps or repeats.

/** The pushes of every job to every client that watches it. */
export class JobStreams {
  constructor(
    private readonly ctx: WorkerContext,
    private readonly sessions: () => Iterable<Session>,
  ) {}

  /** Starts (or restarts) a client's watch of a job from the given sequence numbers, and replies `watching`. */
  async watch(
    c: Session,
    re: number,
    job: string,
    from: { metrics: number; events: number; logs: number },
  ): Promise<void> {
    const { queue } = this.ctx;
    const info = queue.get(job);
    if (!info) throw new ProtocolError('not-found', `watch: no job "${job}" on this worker`, re);
    c.watches.get(job)?.detach?.();
    const w: WatchCursor = { ...from };
    c.watches.set(job, w);
    // The log lines so far, read in the same synchronous step that makes the watch visible to
    // onLog: a line is either in the file now or arrives through onLog later, never both or neither.
    const lines = queue.readLog(job, w.logs);
    for (const line of lines) void c.send({ type: 'log', job, seq: w.logs++, line });
    await c.send({ type: 'watching', re, job: info });
    if (queue.live(job)) return this.attachLive(c, job, w);
    // Not training now: what the run directory holds, then (if it is queued) the live stream when it starts.
    const rd = new RunDir(queue.runDir(job));
    const [ms, es] = await Promise.all([rd.readMetrics(), rd.readEvents()]);
    if (c.watches.get(job) !== w) return;
    if (queue.live(job)) return this.attachLive(c, job, w);
    flush(c, job, w, ms, es);
    const now = queue.get(job)!;
    if (isTerminal(now.status)) await c.send({ type: 'state', job: now });
  }

  /** Stops a client's watch of a job. */
  unwatch(c: Session, job: string): void {
    c.watches.get(job)?.detach?.();
    c.watches.delete(job);
  }

  /** A job's Run started: every watch of it follows the live stream from where it stands. */
  onLive(job: string): void {
    for (const c of this.sessions()) {
      const w = c.watches.get(job);
      if (w) this.attachLive(c, job, w);
    }
  }

  /** A line was written to a job's log. */
  onLog(job: string, line: string, seq: number): void {
    for (const c of this.sessions()) {
      const w = c.watches.get(job);
      if (!w || seq < w.logs) continue;
      w.logs = seq + 1;
      void c.send({ type: 'log', job, seq, line });
    }
  }

  /** A job changed status: its watchers are told; an ended job's live subscriptions stop. */
  onState(j: JobInfo): void {
    for (const c of this.sessions()) if (c.watches.has(j.id)) void c.send({ type: 'state', job: j });
    if (isTerminal(j.status)) for (const c of this.sessions()) c.watches.get(j.id)?.detach?.();
  }

  /** A client left: its subscriptions stop. */
  closed(c: Session): void {
    for (const w of c.watches.values()) w.detach?.();
  }

  // Synchronous from snapshot to subscription, so no point is lost or sent twice.
  private attachLive(c: Session, job: string, w: WatchCursor): void {
    const live = this.ctx.queue.live(job);
    if (!live) return;
    w.detach?.();
    const ms = live.run.metricsSoFar;
    const es = [...live.earlierEvents, ...live.run.events];
    flush(c, job, w, ms, es);
    let mi = ms.length;
    let ei = es.length;
    const offM = live.run.onMetric((m) => {
      const seq = mi++;
      if (seq >= w.metrics) {
        w.metrics = seq + 1;
        void c.send({ type: 'metric', job, seq, metric: m });
      }
    });
    const offE = live.run.onEvent((e) => {
      const seq = ei++;
      if (seq >= w.events) {
        w.events = seq + 1;
        void c.send({ type: 'event', job, seq, event: e });
      }
    });
    w.detach = () => {
      offM();
      offE();
    };
  }
}

function flush(c: Session, job: string, w: WatchCursor, ms: Metric[], es: RunEvent[]): void {
  for (let i = w.metrics; i < ms.length; i++) void c.send({ type: 'metric', job, seq: i, metric: ms[i]! });
  w.metrics = Math.max(w.metrics, ms.length);
  for (let i = w.events; i < es.length; i++) void c.send({ type: 'event', job, seq: i, event: es[i]! });
  w.events = Math.max(w.events, es.length);
}
