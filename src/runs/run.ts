import type { ResourceRequest } from '../recipe/resources.js';
import { basename } from 'node:path';
import { LatheError } from '../errors.js';
import type { AnyLock } from '../recipe/lock.js';
import { RunDir, type Metric, type RunEvent, type RunSummary } from './rundir.js';

/** Options for starting a run on an executor. */
export interface StartOptions {
  /** Run directory to create (default: runs/<name>-<id>). */
  out?: string;
  /** Stop as if interrupted after this step (a checkpoint is written). */
  stopAfter?: number;
  /** Progress of data preparation, for progress bars. */
  onNotice?: (message: string) => void;
  /** Make the run directory its owner's alone (0700): it holds tokenized data. */
  private?: boolean;
  /** Resume: run on other resources than the lock's (a run saved on N ranks resumes on M). */
  resources?: ResourceRequest;
}

/** Where a run executes: in this process, or on a worker. Small on purpose (tslab's executor style). */
export interface Executor {
  readonly name: string;
  /** Starts a locked recipe (a stage or a pipeline); the Run streams metrics while it trains. */
  start(lock: AnyLock, opts: StartOptions): Promise<Run>;
  /** Continues a run from its last checkpoint. */
  resume(runDir: string, opts?: Omit<StartOptions, 'out'>): Promise<Run>;
}

/** How the executor that made a run controls it. */
export interface RunControls {
  interrupt(): void;
  cancel(): void;
  /** Where `resume()` continues the run when no executor is given (the local one, for local runs). */
  resumeOn?: Executor;
}

/** A run as a live object: its directory, a metric stream, and control (interrupt, cancel). */
export class Run {
  readonly dir: RunDir;
  readonly lock: AnyLock;
  /** Resolves with the summary when the run ends (completed, interrupted, cancelled or failed). */
  readonly done: Promise<RunSummary>;
  private history: Metric[] = [];
  private eventLog: RunEvent[] = [];
  private waiters = new Set<() => void>();
  private metricListeners = new Set<(m: Metric) => void>();
  private eventListeners = new Set<(e: RunEvent) => void>();
  private finished = false;
  private controls: RunControls;
  private final?: RunSummary;
  // Whether this object drives a live execution (else it was opened from disk), and whether interrupt()/cancel() was asked: resume() needs both.
  private readonly attached: boolean;
  private stopRequested = false;

  /** @internal Executors create runs; users get them from `recipe.run()` or `runs.open()`. */
  constructor(
    dir: RunDir,
    lock: AnyLock,
    execution: Promise<RunSummary> | undefined,
    controls?: RunControls,
    history: Metric[] = [],
  ) {
    this.dir = dir;
    this.lock = lock;
    this.history = history;
    this.controls = controls ?? { interrupt() {}, cancel() {} };
    this.attached = execution !== undefined;
    const exec = execution ?? dir.readSummary().then((s) => s ?? missingSummary(dir, lock, history));
    this.done = exec.then(
      (s) => this.finish(s),
      (e: unknown) => {
        this.finish(undefined);
        throw e;
      },
    );
    // An unobserved failure still surfaces through done; avoid an unhandled rejection here.
    this.done.catch(() => {});
  }

  /** The run id: its directory name. */
  get id(): string {
    return basename(this.dir.path);
  }

  /** Status now. */
  get status(): RunSummary['status'] {
    return this.final?.status ?? 'running';
  }

  /** The summary, once the run has ended. */
  get summary(): RunSummary | undefined {
    return this.final;
  }

  /** Metrics so far (a copy). */
  get metricsSoFar(): Metric[] {
    return this.history.slice();
  }

  /** @internal Called by the executor for each metric line. */
  pushMetric(m: Metric): void {
    this.history.push(m);
    for (const l of this.metricListeners) l(m);
    this.wake();
  }

  /** @internal Called by the executor for each event. */
  pushEvent(e: RunEvent): void {
    this.eventLog.push(e);
    for (const l of this.eventListeners) l(e);
  }

  /** Calls fn for every future metric; returns a function that unsubscribes. */
  onMetric(fn: (m: Metric) => void): () => void {
    this.metricListeners.add(fn);
    return () => this.metricListeners.delete(fn);
  }

  /** Calls fn for every future event; returns a function that unsubscribes. */
  onEvent(fn: (e: RunEvent) => void): () => void {
    this.eventListeners.add(fn);
    return () => this.eventListeners.delete(fn);
  }

  /** Every metric from the start, then live ones as they come, until the run ends. */
  async *metrics(): AsyncGenerator<Metric> {
    let i = 0;
    for (;;) {
      while (i < this.history.length) yield this.history[i++]!;
      if (this.finished) return;
      await new Promise<void>((r) => this.waiters.add(r));
    }
  }

  /** Events so far. */
  get events(): RunEvent[] {
    return this.eventLog.slice();
  }

  /** Stops at the next step boundary, writing a checkpoint; `resume` continues it. */
  interrupt(): void {
    this.stopRequested = true;
    this.controls.interrupt();
  }

  /** Stops at the next step boundary, writing a checkpoint, and marks the run cancelled. */
  cancel(): void {
    this.stopRequested = true;
    this.controls.cancel();
  }

  /**
   * Continues this run from its last checkpoint (in this process, or `on` an executor) and, like
   * `recipe.run()`, resolves with the new Run once that stops; `runs.resume(dir)` returns at once instead.
   * After `interrupt()` it first waits for this run to stop; a completed run has nothing to resume.
   */
  async resume(opts: { on?: Executor; stopAfter?: number } = {}): Promise<Run> {
    if (this.attached && !this.finished && !this.stopRequested)
      throw new LatheError(`run ${this.id} is still running: interrupt() it first, then resume()`);
    await this.done.catch(() => {});
    const executor = opts.on ?? this.controls.resumeOn;
    if (!executor) throw new LatheError(`run ${this.id}: no executor to resume it on; pass { on }`);
    const next = await executor.resume(this.dir.path, { stopAfter: opts.stopAfter });
    await next.done;
    return next;
  }

  private wake(): void {
    const w = [...this.waiters];
    this.waiters.clear();
    for (const f of w) f();
  }

  private finish(s: RunSummary | undefined): RunSummary {
    this.final = s;
    this.finished = true;
    this.wake();
    return s!;
  }
}

function missingSummary(dir: RunDir, lock: AnyLock, history: Metric[]): RunSummary {
  const last = history.at(-1);
  return {
    id: basename(dir.path),
    lockId: lock.id,
    stage: lock.recipe.stage,
    status: 'interrupted',
    step: last?.step ?? 0,
    steps: lock.recipe.train.steps,
    loss: last?.loss,
    tokens: Number(last?.tokens ?? 0),
    seconds: 0,
    backend: lock.backend,
    lathe: lock.lathe,
  };
}
