import { randomBytes } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { appendFileSync, existsSync, mkdirSync, readFileSync } from 'node:fs';
import { chmod, mkdir, readdir, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { localExecutor } from '../runs/local.js';
import type { AnyLock } from '../recipe/lock.js';
import type { Run } from '../runs/run.js';
import { RunDir, type Metric, type RunEvent, type RunSummary } from '../runs/rundir.js';
import { writeFileAtomic } from '../runs/atomic.js';
import { TERMINAL, type JobInfo } from './protocol.js';

// The worker's job queue, persisted under <state>/jobs/<id>/: job.json (the record, written
// atomically on every change of status), run/ (the run directory), inputs/ (the job's files) and
// job.log (one line per entry; line n is log entry n, so a client that connects later is sent the
// lines it has not seen, numbered like metrics). Job folders are 0700: they hold a client's data and
// its model. Jobs train one at a time in this process, on the
// same core as a local run. A job found
// "running" when the worker starts was cut off (kill -9, a lost node): it resumes from its last
// checkpoint, which on cpu gives the metrics an uninterrupted run gives, to the bit.

/** A job as persisted: its public info plus the lock it trains (worker paths). */
export interface JobRecord extends JobInfo {
  lock: AnyLock;
  /** Stop as if interrupted after this step (tests, and `--stop-after`). */
  stopAfter?: number;
}

/** A running job: its Run, and the events its earlier attempts wrote (the stream's first part). */
export interface LiveJob {
  run: Run;
  earlierEvents: RunEvent[];
}

/**
 * The persistent queue. Emits 'state' (JobInfo) on every status change, 'live' (id) when a job's Run
 * starts, 'log' (id, line, seq) for each line written to a job's log, and 'log-failed' (id, line,
 * error) when a line could not be written.
 */
export class JobQueue extends EventEmitter {
  readonly dir: string;
  private records = new Map<string, JobRecord>();
  private liveJobs = new Map<string, LiveJob>();
  private stopping = false;
  private wake?: () => void;
  private loop?: Promise<void>;
  // Lines in each job's job.log, counted from the file on first use and kept from then on.
  private logLines = new Map<string, number>();

  constructor(stateDir: string) {
    super();
    this.dir = join(stateDir, 'jobs');
  }

  /** The folder of a job. */
  jobDir(id: string): string {
    return join(this.dir, id);
  }

  /** The run directory of a job. */
  runDir(id: string): string {
    return join(this.dir, id, 'run');
  }

  /** The inputs folder of a job (its lock's baseDir). */
  inputsDir(id: string): string {
    return join(this.dir, id, 'inputs');
  }

  /**
   * Reads every job.json; a job that was running when the worker stopped is queued to resume first.
   * A folder without a record is a submission cut off before it was queued: it is removed.
   */
  async load(): Promise<{ resumed: string[]; queued: string[] }> {
    await mkdir(this.dir, { recursive: true, mode: 0o700 });
    await chmod(this.dir, 0o700);
    const resumed: string[] = [];
    const queued: string[] = [];
    for (const id of (await readdir(this.dir)).sort()) {
      const text = await readFile(join(this.dir, id, 'job.json'), 'utf8').catch(() => undefined);
      if (!text) {
        await rm(join(this.dir, id), { recursive: true, force: true });
        continue;
      }
      const rec = JSON.parse(text) as JobRecord;
      this.records.set(id, rec);
      if (rec.status === 'running') resumed.push(id);
      if (rec.status === 'queued') queued.push(id);
    }
    return { resumed, queued };
  }

  /** A new job id: sortable by creation time, unique by a random suffix. */
  newId(): string {
    const t = new Date().toISOString().replace(/[-:]/g, '').replace('T', '-').slice(0, 15);
    return `${t}-${randomBytes(3).toString('hex')}`;
  }

  /** Queues a job whose inputs are already in place. */
  async add(id: string, lock: AnyLock, opts: { name?: string; stopAfter?: number } = {}): Promise<JobInfo> {
    const rec: JobRecord = {
      id,
      name: opts.name ?? lock.recipe.name ?? lock.recipe.stage,
      status: 'queued',
      stage: lock.recipe.stage,
      backend: lock.backend,
      lockId: lock.id,
      step: 0,
      steps: lock.recipe.train.steps,
      createdAt: new Date().toISOString(),
      restarts: 0,
      lock,
      stopAfter: opts.stopAfter,
    };
    this.records.set(id, rec);
    await this.save(rec);
    this.log(id, `queued ${rec.name} (${rec.stage}, ${rec.steps} steps, ${rec.backend}, lock ${rec.lockId})`);
    this.emit('state', info(rec));
    this.wake?.();
    return info(rec);
  }

  /** Every job, oldest first. */
  list(): JobInfo[] {
    return [...this.records.values()]
      .sort((a, b) => a.createdAt.localeCompare(b.createdAt) || a.id.localeCompare(b.id))
      .map(info);
  }

  /** One job's info, if it exists. */
  get(id: string): JobInfo | undefined {
    const r = this.records.get(id);
    return r && info(r);
  }

  /** The lock a job trains (worker paths). */
  lock(id: string): AnyLock | undefined {
    return this.records.get(id)?.lock;
  }

  /** The job's Run while it trains. */
  live(id: string): LiveJob | undefined {
    return this.liveJobs.get(id);
  }

  /** Cancels a job: a queued one at once; a running one stops at the next step with a checkpoint (`interrupt` leaves it resumable). */
  async cancel(id: string, mode: 'cancel' | 'interrupt' = 'cancel'): Promise<JobInfo | undefined> {
    const rec = this.records.get(id);
    if (!rec) return undefined;
    if (rec.status === 'queued') {
      rec.status = mode === 'cancel' ? 'cancelled' : 'interrupted';
      rec.endedAt = new Date().toISOString();
      await this.save(rec);
      this.log(id, `${rec.status} before it started`);
      this.emit('state', info(rec));
      return info(rec);
    }
    const live = this.liveJobs.get(id);
    if (rec.status === 'running' && live) {
      this.log(id, `${mode} requested at step ${rec.step}`);
      if (mode === 'cancel') live.run.cancel();
      else live.run.interrupt();
      await live.run.done.catch(() => {});
      await this.settled(id);
    }
    return this.get(id);
  }

  /** Puts an interrupted (or failed, or cancelled) job back in the queue; it resumes from its last checkpoint. */
  async requeue(id: string): Promise<JobInfo | undefined> {
    const rec = this.records.get(id);
    if (!rec) return undefined;
    if (rec.status === 'completed' || rec.status === 'queued' || rec.status === 'running') return info(rec);
    rec.status = 'queued';
    rec.endedAt = undefined;
    rec.error = undefined;
    await this.save(rec);
    this.log(id, 'queued again; it resumes from its last checkpoint');
    this.emit('state', info(rec));
    this.wake?.();
    return info(rec);
  }

  /** Starts training queued jobs, one at a time, resumed ones first. */
  start(): void {
    if (this.loop) return;
    this.loop = this.process();
  }

  /** Stops after interrupting the running job with a checkpoint; it stays "running" on disk, so the next start resumes it. */
  async stop(): Promise<void> {
    this.stopping = true;
    for (const live of this.liveJobs.values()) live.run.interrupt();
    this.wake?.();
    await this.loop;
  }

  private logPath(id: string): string {
    return join(this.jobDir(id), 'job.log');
  }

  /**
   * How many lines a job's log holds: the sequence number its next line gets. Counted from job.log
   * once; a torn last line (the worker killed mid-write) is ended first, so it counts as one line
   * and the next line does not run into it.
   */
  logCount(id: string): number {
    let n = this.logLines.get(id);
    if (n === undefined) {
      let text: string;
      try {
        text = readFileSync(this.logPath(id), 'utf8');
      } catch {
        text = '';
      }
      if (text && !text.endsWith('\n')) {
        appendFileSync(this.logPath(id), '\n');
        text += '\n';
      }
      n = text ? text.split('\n').length - 1 : 0;
      this.logLines.set(id, n);
    }
    return n;
  }

  /** A job's log lines from sequence number `from` on, read from job.log. */
  readLog(id: string, from = 0): string[] {
    const n = this.logCount(id);
    if (from >= n) return [];
    return readFileSync(this.logPath(id), 'utf8').split('\n').slice(from, n);
  }

  /**
   * Appends a line to a job's log, then tells listeners with its sequence number. Writing and
   * telling happen in one synchronous step, so a reader of the file plus the listeners sees every
   * line once.
   */
  log(id: string, line: string): void {
    // One entry, one line: newlines inside (a stack trace) would shift every later number.
    const stamped = `${new Date().toISOString()} ${line.replace(/\r?\n/g, ' \u23ce ')}`;
    const seq = this.logCount(id);
    try {
      mkdirSync(this.jobDir(id), { recursive: true, mode: 0o700 });
      appendFileSync(this.logPath(id), stamped + '\n');
    } catch (e) {
      // Not written (disk full?): not numbered either, or replay and live numbers would disagree.
      this.emit('log-failed', id, stamped, e);
      return;
    }
    this.logLines.set(id, seq + 1);
    this.emit('log', id, stamped, seq);
  }

  private async process(): Promise<void> {
    while (!this.stopping) {
      const next = this.next();
      if (!next) {
        await new Promise<void>((r) => (this.wake = r));
        this.wake = undefined;
        continue;
      }
      await this.runJob(next);
    }
  }

  private next(): JobRecord | undefined {
    const all = [...this.records.values()].sort(
      (a, b) => a.createdAt.localeCompare(b.createdAt) || a.id.localeCompare(b.id),
    );
    return all.find((r) => r.status === 'running') ?? all.find((r) => r.status === 'queued');
  }

  private pending = new Map<string, Promise<void>>();

  /** Waits until a job's final status is saved. */
  private async settled(id: string): Promise<void> {
    await this.pending.get(id);
  }

  private async runJob(rec: JobRecord): Promise<void> {
    let done!: () => void;
    this.pending.set(rec.id, new Promise<void>((r) => (done = r)));
    try {
      await this.train(rec);
    } finally {
      done();
      this.pending.delete(rec.id);
    }
  }

  private async train(rec: JobRecord): Promise<void> {
    const dir = this.runDir(rec.id);
    const rd = new RunDir(dir);
    const wasRunning = rec.status === 'running';
    const resuming = existsSync(rd.lockPath);
    if (resuming) {
      const s = await rd.readSummary();
      // Finished, but the worker stopped before it wrote the job's record.
      if (s && s.status === 'completed') return this.finish(rec, s);
    }
    rec.status = 'running';
    rec.startedAt ??= new Date().toISOString();
    if (wasRunning) rec.restarts += 1;
    await this.save(rec);
    this.emit('state', info(rec));
    let run: Run;
    const earlierEvents = resuming ? await rd.readEvents() : [];
    try {
      if (resuming) {
        const last = (await rd.checkpointSteps()).at(-1);
        this.log(
          rec.id,
          `resuming ${wasRunning ? 'after the worker stopped' : 'as requested'}, from ${last === undefined ? 'the start (no checkpoint yet)' : `the checkpoint at step ${last}`}`,
        );
        run = await localExecutor.resume(dir, { stopAfter: rec.stopAfter });
      } else {
        await rm(dir, { recursive: true, force: true });
        await mkdir(this.jobDir(rec.id), { recursive: true, mode: 0o700 });
        this.log(rec.id, `training on ${rec.backend}`);
        run = await localExecutor.start(rec.lock, {
          out: dir,
          stopAfter: rec.stopAfter,
          onNotice: (m) => this.log(rec.id, m),
          // A job's run holds a client's tokenized data.
          private: true,
        });
      }
    } catch (e) {
      return this.fail(rec, e);
    }
    const offs = [
      run.onMetric((m: Metric) => {
        rec.step = m.step;
        if (typeof m.loss === 'number') rec.loss = m.loss;
      }),
      run.onEvent((e) => {
        if (e.type === 'failed' || e.type === 'notice') this.log(rec.id, `${e.type}: ${e.message}`);
      }),
    ];
    this.liveJobs.set(rec.id, { run, earlierEvents });
    this.emit('live', rec.id);
    try {
      const summary = await run.done;
      if (this.stopping && summary.status === 'interrupted') {
        // The worker is shutting down: keep the job "running" so the next start resumes it.
        this.log(rec.id, `stopped with the worker at step ${summary.step}; it resumes when the worker starts again`);
        rec.step = summary.step;
        await this.save(rec);
        return;
      }
      await this.finish(rec, summary);
    } catch (e) {
      await this.fail(rec, e);
    } finally {
      offs.forEach((off) => off());
      this.liveJobs.delete(rec.id);
    }
  }

  private async finish(rec: JobRecord, s: RunSummary): Promise<void> {
    rec.status = s.status === 'running' ? 'failed' : s.status;
    rec.step = s.step;
    rec.loss = s.loss;
    rec.error = s.error;
    rec.endedAt = new Date().toISOString();
    await this.save(rec);
    this.log(
      rec.id,
      `${rec.status} at step ${rec.step}/${rec.steps}${s.loss !== undefined ? `, loss ${s.loss.toFixed(4)}` : ''}${s.error ? `: ${s.error}` : ''}`,
    );
    this.emit('state', info(rec));
  }

  private async fail(rec: JobRecord, e: unknown): Promise<void> {
    rec.status = 'failed';
    rec.error = e instanceof Error ? e.message : String(e);
    rec.endedAt = new Date().toISOString();
    await this.save(rec);
    this.log(rec.id, `failed: ${rec.error}`);
    this.emit('state', info(rec));
  }

  private async save(rec: JobRecord): Promise<void> {
    await mkdir(this.jobDir(rec.id), { recursive: true, mode: 0o700 });
    await writeFileAtomic(join(this.jobDir(rec.id), 'job.json'), JSON.stringify(rec, null, 1) + '\n');
  }
}

/** A record's public part (no lock). */
export function info(rec: JobRecord): JobInfo {
  const { lock: _lock, stopAfter: _s, ...rest } = rec;
  return { ...rest };
}

/** True when a job does no more work. */
export function isTerminal(status: JobInfo['status']): boolean {
  return TERMINAL.has(status);
}
