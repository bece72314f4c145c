// Pure logic of the Runs panel: rows from run directories and kernel run infos, merged by directory.
import type { RunInfo } from '../../dist/src/rooms/runs-comm.js';
import { parseMetrics, type MetricLine, type RunPayload } from './chart';

/** Where a run lives: a run directory in the workspace, a live run in a kernel, or a remote worker. */
export type RunSource = 'workspace' | 'kernel' | 'worker';

/** One row of the Runs panel. */
export interface RunRow {
  /** Stable key: the run directory relative to the server root when known, else the run id. */
  key: string;
  id: string;
  name: string;
  stage: string;
  status: string;
  step: number;
  steps: number;
  loss: number | null;
  tokensPerS: number | null;
  /** Seconds trained so far (or in total, once done). */
  elapsed: number | null;
  /** Run directory relative to the server root, when it is inside the workspace. */
  dir: string | null;
  source: RunSource;
  /** Kernel id, for live runs (cancel goes through its `lathe.runs` comm). */
  kernelId?: string;
  /** Epoch ms the run started, for a live elapsed clock. */
  startedAt?: number;
  /** The run's room (kernel runs, when run rooms are on). */
  roomRef?: { name: string; path: string; param: string; token: string; role: string };
  /** A run over several ranks: how many, and the slowest when it lags (see {@link ranksOf}). */
  ranks: RanksCell | null;
}

/** The Runs panel's ranks cell: "2 ddp", and the straggler named when one lags. */
export interface RanksCell {
  text: string;
  /** Every rank's tokens/s, for the tooltip. */
  title: string;
  straggler: number | null;
}

/** A rank slower than this share of the median is named (as src/train/ranks.ts does). */
const STRAGGLER_SHARE = 0.8;

/** The ranks cell from the world size and the last metric line's per-rank tokens/s. */
export function ranksOf(world: { ranks: number; parallel: string } | null, last?: MetricLine): RanksCell | null {
  if (!world || world.ranks < 2) return null;
  const rates = Array.isArray(last?.rank_tokens_per_s) ? (last.rank_tokens_per_s as number[]) : [];
  const cell: RanksCell = { text: `${world.ranks} ${world.parallel}`, title: '', straggler: null };
  if (rates.length < 2) return cell;
  const sorted = [...rates].sort((a, b) => a - b);
  // The median of the other ranks: with two ranks, the slowest is compared with the faster one.
  const median = sorted[1 + Math.floor((sorted.length - 2) / 2)]!;
  const slow = rates.indexOf(sorted[0]!);
  cell.title = rates.map((x, i) => `rank ${i}: ${Math.round(x)} tok/s`).join('\n');
  if (sorted[0]! < STRAGGLER_SHARE * median) {
    cell.straggler = slow;
    cell.text += ` · rank ${slow} slow`;
  }
  return cell;
}

function worldOfLock(lock: Record<string, unknown>): { ranks: number; parallel: string } | null {
  const r = ((lock.recipe ?? {}) as Record<string, unknown>).resources as
    { gpus?: number; nodes?: number; parallel?: string } | undefined;
  if (!r) return null;
  return { ranks: (r.gpus ?? 1) * (r.nodes ?? 1), parallel: r.parallel ?? 'ddp' };
}

/** Path of `abs` relative to the server root, or null when outside it. */
export function workspacePath(abs: string, serverRoot: string): string | null {
  const root = serverRoot.replace(/\/+$/, '');
  if (abs === root) return '';
  return abs.startsWith(root + '/') ? abs.slice(root.length + 1) : null;
}

/** A row from the files of a run directory (any may be missing while a run starts). */
export function rowFromDir(
  dir: string,
  files: {
    lock?: Record<string, unknown> | null;
    summary?: Record<string, unknown> | null;
    metrics?: MetricLine[];
    events?: { time?: string; type?: string }[];
  },
): RunRow {
  const lock = files.lock ?? {};
  const recipe = (lock.recipe ?? {}) as Record<string, unknown>;
  const train = (recipe.train ?? {}) as Record<string, unknown>;
  const s = files.summary ?? null;
  const last = files.metrics?.at(-1);
  const started = files.events?.find((e) => e.type === 'started')?.time;
  const status = (s?.status as string | undefined) ?? (files.metrics?.length ? 'running' : 'starting');
  const name = (recipe.name as string | undefined) ?? dir.split('/').pop() ?? dir;
  return {
    key: dir,
    id: (s?.id as string | undefined) ?? dir.split('/').pop() ?? dir,
    name,
    stage: (s?.stage as string | undefined) ?? (recipe.stage as string | undefined) ?? '',
    status,
    step: (s?.step as number | undefined) ?? last?.step ?? 0,
    steps: (s?.steps as number | undefined) ?? (train.steps as number | undefined) ?? 0,
    loss: num(s?.loss) ?? num(last?.loss),
    tokensPerS: num(s?.tokens_per_s) ?? num(last?.tokens_per_s),
    elapsed: num(s?.seconds) ?? null,
    dir,
    source: 'workspace',
    startedAt: started ? Date.parse(started) : undefined,
    ranks: ranksOf(worldOfLock(lock), last),
  };
}

function num(v: unknown): number | null {
  return typeof v === 'number' && Number.isFinite(v) ? v : null;
}

/** A row from a kernel's RunInfo plus the last metric it streamed. */
export function rowFromKernel(
  info: RunInfo,
  kernelId: string,
  serverRoot: string,
  last?: MetricLine,
  startedAt?: number,
): RunRow {
  const dir = workspacePath(info.dir, serverRoot);
  return {
    key: dir ?? info.id,
    id: info.id,
    name: info.name ?? info.id,
    stage: info.stage,
    status: info.status,
    step: last?.step ?? info.step,
    steps: info.steps,
    loss: num(last?.loss) ?? info.loss,
    tokensPerS: num(last?.tokens_per_s),
    elapsed: null,
    dir,
    source: 'kernel',
    kernelId,
    startedAt,
    ranks: ranksOf(info.world ?? null, last),
    ...(info.roomRef ? { roomRef: info.roomRef } : {}),
  };
}

/** Kernel rows win over directory rows for the same run (they are live); newest first otherwise. */
export function mergeRows(
  workspace: readonly RunRow[],
  kernel: readonly RunRow[],
  worker: readonly RunRow[] = [],
): RunRow[] {
  const byKey = new Map<string, RunRow>();
  for (const r of workspace) byKey.set(r.key, r);
  for (const r of [...worker, ...kernel]) {
    const prev = byKey.get(r.key);
    byKey.set(
      r.key,
      prev ? { ...prev, ...r, elapsed: r.elapsed ?? prev.elapsed, startedAt: r.startedAt ?? prev.startedAt } : r,
    );
  }
  const live = (r: RunRow) => (r.status === 'running' ? 1 : 0);
  return [...byKey.values()].sort(
    (a, b) => live(b) - live(a) || (b.startedAt ?? 0) - (a.startedAt ?? 0) || a.key.localeCompare(b.key),
  );
}

/** "1h 02m", "3m 05s", "42s". */
export function formatElapsed(seconds: number | null): string {
  if (seconds === null || !Number.isFinite(seconds)) return '';
  const s = Math.max(0, Math.round(seconds));
  if (s >= 3600) return `${Math.floor(s / 3600)}h ${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
  if (s >= 60) return `${Math.floor(s / 60)}m ${String(s % 60).padStart(2, '0')}s`;
  return `${s}s`;
}

/** A chart payload from a run directory's files. */
export function payloadFromDir(row: RunRow, metricsText: string): RunPayload {
  return {
    id: row.id,
    name: row.name,
    dir: row.dir ?? undefined,
    stage: row.stage,
    status: row.status,
    step: row.step,
    steps: row.steps,
    metrics: parseMetrics(metricsText),
  };
}
