import { appendFileSync, existsSync, readFileSync } from 'node:fs';
import { chmod, mkdir, readdir, readFile } from 'node:fs/promises';
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
export const TIMING_KEYS = new Set([
  'tokens_per_s',
  'elapsed_s',
  'gflops',
  'step_ms',
  'rank_tokens_per_s',
  'slowest_rank',
]);

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
  /**
   * With `private`, the run directory and everything under it is its owner's alone (0700): it holds
   * tokenized data.
   */
  static async create(lock: AnyLock, out?: string, opts: { private?: boolean } = {}): Promise<RunDir> {
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
    const mode = opts.private ? 0o700 : undefined;
    await mkdir(join(dir, 'checkpoints'), { recursive: true, mode });
    if (mode) {
      await mkdir(join(dir, 'data'), { recursive: true, mode });
      for (const d of [dir, join(dir, 'checkpoints'), join(dir, 'data')]) await chmod(d, mode);
    }
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

  /** Rewrites the lock (a resume on other resources: they are not part of its identity). */
  async writeLock(lock: AnyLock): Promise<void> {
    await writeFileAtomic(this.lockPath, JSON.stringify(lock, null, 2) + '\n');
  }

  appendMetric(m: Metric): void {
    appendFileSync(this.metricsPath, JSON.stringify(m) + '\n');
  }

  appendEvent(e: Omit<RunEvent, 'time'>): RunEvent {
    const ev = { time: new Date().toISOString(), ...e } as RunEvent;
    appendFileSync(this.eventsPath, JSON.stringify(ev) + '\n');
    return ev;
  }

  /** Metrics so far; a line that does not parse (a torn last line after a crash) is left out. */
  async readMetrics(): Promise<Metric[]> {
    return (await this.readMetricsChecked()).metrics;
  }

  /** Metrics so far, and the lines that do not parse, with their 1-based line numbers. */
  async readMetricsChecked(): Promise<{ metrics: Metric[]; bad: { line: number; text: string }[] }> {
    const text = await readFile(this.metricsPath, 'utf8').catch(() => '');
    const metrics: Metric[] = [];
    const bad: { line: number; text: string }[] = [];
    text.split('\n').forEach((l, i) => {
      if (!l.trim()) return;
      try {
        const m = JSON.parse(l) as Metric;
        if (m && typeof m === 'object' && typeof m.step === 'number') metrics.push(m);
        else bad.push({ line: i + 1, text: l });
      } catch {
        bad.push({ line: i + 1, text: l });
      }
    });
    return { metrics, bad };
  }

  /** Where lines of metrics.jsonl that do not parse are kept, never deleted. */
  get corruptMetricsPath(): string {
    return `${this.metricsPath}.corrupt`;
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

  /**
   * Drops metrics past a step (work after the last checkpoint that a resume redoes), adds `restore`
   * lines for steps up to it that metrics.jsonl lost, and moves lines that do not parse to
   * metrics.jsonl.corrupt (with their line numbers) rather than deleting them. Returns what it moved.
   */
  async truncateMetricsAfter(step: number, restore: Metric[] = []): Promise<{ corrupt: number[]; restored: number[] }> {
    const { metrics, bad } = await this.readMetricsChecked();
    if (bad.length)
      appendFileSync(this.corruptMetricsPath, bad.map((b) => `${this.metricsPath}:${b.line}: ${b.text}\n`).join(''));
    const kept = metrics.filter((m) => m.step <= step);
    const have = new Set(kept.map((m) => m.step));
    const restored = restore.filter((m) => m.step <= step && !have.has(m.step));
    const all = [...kept, ...restored].sort((a, b) => a.step - b.step);
    await writeFileAtomic(this.metricsPath, all.map((m) => JSON.stringify(m) + '\n').join(''));
    return { corrupt: bad.map((b) => b.line), restored: restored.map((m) => m.step) };
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
