import { appendFileSync, existsSync, readFileSync } from 'node:fs';
import { mkdir, readdir, readFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { LatheError } from '../errors.js';
import type { AnyLock, RecipeLock } from '../recipe/lock.js';
import { writeFileAtomic } from './atomic.js';

/** One line of metrics.jsonl: always step and stage, then whatever applies. */
export interface Metric {
  step: number;
  stage: string;
  loss?: number;
  lr?: number;
  grad_norm?: number;
  tokens_per_s?: number;
  eval_loss?: number;
  [key: string]: number | number[] | string | undefined;
}

/** One line of events.jsonl. */
export interface RunEvent {
  time: string;
  type:
    | 'started'
    | 'prepared'
    | 'checkpoint'
    | 'eval'
    | 'interrupted'
    | 'cancelled'
    | 'resumed'
    | 'completed'
    | 'failed'
    | 'notice'
    | 'skipped';
  step?: number;
  message: string;
  [key: string]: unknown;
}

/** Where a run stands: running, or how it ended. */
export type RunStatus = 'running' | 'completed' | 'interrupted' | 'cancelled' | 'failed';

/** Final state of a run, as summary.json holds it. */
export interface RunSummary {
  id: string;
  lockId: string;
  stage: string;
  status: RunStatus;
  step: number;
  steps: number;
  loss?: number;
  eval_loss?: number;
  tokens: number;
  seconds: number;
  tokens_per_s?: number;
  params?: number;
  backend: string;
  lathe: string;
  error?: string;
  [key: string]: unknown;
}

/** Metric keys that measure time, not the computation, so reproduce ignores them. */
export const TIMING_KEYS = new Set(['tokens_per_s', 'elapsed_s', 'gflops', 'step_ms']);

/** The on-disk run directory (DESIGN contract): lock, metrics, events, checkpoints, summary. */
export class RunDir {
  readonly path: string;

  constructor(path: string) {
    this.path = resolve(path);
  }

  get lockPath(): string {
    return join(this.path, 'recipe.lock.json');
  }
  get metricsPath(): string {
    return join(this.path, 'metrics.jsonl');
  }
  get eventsPath(): string {
    return join(this.path, 'events.jsonl');
  }
  get summaryPath(): string {
    return join(this.path, 'summary.json');
  }
  get checkpointsDir(): string {
    return join(this.path, 'checkpoints');
  }
  get dataDir(): string {
    return join(this.path, 'data');
  }

  /** Creates a new run directory for a lock: `out` if given (must be empty), else runs/<name>-<id>[-n]. */
  static async create(lock: AnyLock, out?: string): Promise<RunDir> {
    let dir: string;
    if (out) {
      dir = resolve(out);
      if (existsSync(join(dir, 'recipe.lock.json')))
        throw new LatheError(`--out ${out}: already holds a run; use lathe resume ${out}, or choose another directory`);
    } else {
      const base = resolve(
        process.env.LATHE_RUNS_DIR ?? 'runs',
        `${(lock.recipe.name ?? lock.recipe.stage).replace(/[^\w.-]+/g, '-')}-${lock.id.slice(0, 8)}`,
      );
      dir = base;
      for (let n = 2; existsSync(dir); n++) dir = `${base}-${n}`;
    }
    await mkdir(join(dir, 'checkpoints'), { recursive: true });
    const rd = new RunDir(dir);
    await writeFileAtomic(rd.lockPath, JSON.stringify(lock, null, 2) + '\n');
    return rd;
  }

  /** Opens an existing run directory, checking it is one. */
  static open(path: string): RunDir {
    const rd = new RunDir(path);
    if (!existsSync(rd.lockPath)) throw new LatheError(`${path}: not a run directory (no recipe.lock.json)`);
    return rd;
  }

  readLock(): RecipeLock {
    try {
      return JSON.parse(readFileSync(this.lockPath, 'utf8')) as RecipeLock;
    } catch (e) {
      throw new LatheError(`${this.lockPath}: cannot read the lock (${(e as Error).message})`);
    }
  }

  appendMetric(m: Metric): void {
    appendFileSync(this.metricsPath, JSON.stringify(m) + '\n');
  }

  appendEvent(e: Omit<RunEvent, 'time'>): RunEvent {
    const ev = { time: new Date().toISOString(), ...e } as RunEvent;
    appendFileSync(this.eventsPath, JSON.stringify(ev) + '\n');
    return ev;
  }

  /** Metrics so far; a torn last line (a crash mid-write) is ignored. */
  async readMetrics(): Promise<Metric[]> {
    return readJsonl<Metric>(this.metricsPath);
  }

  async readEvents(): Promise<RunEvent[]> {
    return readJsonl<RunEvent>(this.eventsPath);
  }

  async writeSummary(s: RunSummary): Promise<void> {
    await writeFileAtomic(this.summaryPath, JSON.stringify(s, null, 2) + '\n');
  }

  async readSummary(): Promise<RunSummary | undefined> {
    return readFile(this.summaryPath, 'utf8')
      .then((t) => JSON.parse(t) as RunSummary)
      .catch(() => undefined);
  }

  /** Steps that have a complete checkpoint, ascending. */
  async checkpointSteps(): Promise<number[]> {
    const names = await readdir(this.checkpointsDir).catch(() => [] as string[]);
    return names
      .filter((n) => /^\d+$/.test(n) && existsSync(join(this.checkpointsDir, n, 'state.json')))
      .map(Number)
      .sort((a, b) => a - b);
  }

  checkpointPath(step: number): string {
    return join(this.checkpointsDir, String(step));
  }

  /** Drops metrics past a step (work after the last checkpoint that a resume redoes). */
  async truncateMetricsAfter(step: number): Promise<void> {
    const kept = (await this.readMetrics()).filter((m) => m.step <= step);
    await writeFileAtomic(this.metricsPath, kept.map((m) => JSON.stringify(m) + '\n').join(''));
  }
}

async function readJsonl<T>(path: string): Promise<T[]> {
  const text = await readFile(path, 'utf8').catch(() => '');
  const out: T[] = [];
  for (const line of text.split('\n')) {
    if (!line.trim()) continue;
    try {
      out.push(JSON.parse(line) as T);
    } catch {
      // a torn final line after a hard kill
    }
  }
  return out;
}
