// Pure chart logic for run renderers: series from metrics lines, EMA smoothing, decimation and the
// plotly figure. No DOM here, so the root vitest tests it directly.

/** One metrics.jsonl line (DESIGN: always `step` and `stage`). */
export interface MetricLine {
  step: number;
  stage?: string;
  tokens?: number;
  [key: string]: unknown;
}

/** A run as the run MIME type carries it (`application/vnd.lathe.run+json`). */
export interface RunPayload {
  version?: number;
  id: string;
  name?: string | null;
  room?: string;
  dir?: string;
  stage?: string;
  status?: string;
  step?: number;
  steps?: number;
  metrics: MetricLine[];
  sampled?: boolean;
  events?: unknown[];
  summary?: Record<string, unknown> | null;
  /** Kernel's wall clock (ms) when this snapshot left it; the latency benchmark reads it. */
  sentAt?: number;
  /** The run's room and a read token for it (present when run rooms are on). */
  roomRef?: { name: string; path: string; param: string; token: string; role: string; expires?: string };
}

/** Several runs overlaid (`{ runs: [...] }` in the run MIME type). */
export interface ComparePayload {
  version?: number;
  runs: RunPayload[];
}

export type XAxis = 'step' | 'tokens';

/** What the user picked in the chart's controls. */
export interface ChartOptions {
  x: XAxis;
  /** EMA weight in [0, 1): 0 is raw, 0.9 is heavy smoothing (TensorBoard's convention). */
  smoothing: number;
  logY: boolean;
  /** Most points drawn per trace; longer series are decimated. */
  maxPoints: number;
}

export const DEFAULT_OPTIONS: ChartOptions = { x: 'step', smoothing: 0.6, logY: false, maxPoints: 2000 };

export interface Series {
  name: string;
  key: string;
  x: number[];
  y: number[];
  axis: 'y' | 'y2';
  dash?: 'dot' | 'dash';
  mode: 'lines' | 'lines+markers';
}

/** Exponential moving average with debiasing, so the first points are not pulled to zero. */
export function ema(values: readonly number[], weight: number): number[] {
  if (!(weight > 0)) return values.slice();
  const w = Math.min(weight, 0.999);
  const out = new Array<number>(values.length);
  let acc = 0;
  let n = 0;
  for (let i = 0; i < values.length; i++) {
    const v = values[i]!;
    if (!Number.isFinite(v)) {
      out[i] = v;
      continue;
    }
    acc = acc * w + (1 - w) * v;
    n++;
    out[i] = acc / (1 - Math.pow(w, n));
  }
  return out;
}

/**
 * Min/max decimation: splits x into buckets and keeps each bucket's first, min, max and last point, so
 * spikes survive (a plain stride would drop them). Returns the indices kept, in order.
 */
export function decimate(x: readonly number[], y: readonly number[], maxPoints: number): number[] {
  const n = x.length;
  if (n <= maxPoints || maxPoints < 8) return Array.from({ length: n }, (_, i) => i);
  const buckets = Math.floor(maxPoints / 4);
  const keep: number[] = [];
  for (let b = 0; b < buckets; b++) {
    const lo = Math.floor((b * n) / buckets);
    const hi = Math.floor(((b + 1) * n) / buckets);
    if (hi <= lo) continue;
    let min = lo;
    let max = lo;
    for (let i = lo; i < hi; i++) {
      const v = y[i]!;
      if (v < y[min]! || !Number.isFinite(y[min]!)) min = i;
      if (v > y[max]! || !Number.isFinite(y[max]!)) max = i;
    }
    for (const i of [lo, min, max, hi - 1].sort((a, c) => a - c)) if (keep.at(-1) !== i) keep.push(i);
  }
  return keep;
}

const SERIES: { key: string; name: string; axis: 'y' | 'y2'; dash?: 'dot' | 'dash' }[] = [
  { key: 'loss', name: 'loss', axis: 'y' },
  { key: 'eval_loss', name: 'eval loss', axis: 'y', dash: 'dash' },
  { key: 'lr', name: 'lr', axis: 'y2', dash: 'dot' },
];

/** Metric keys that are charted as their own traces: the standard ones, eval suite scores, stage rewards. */
export function chartKeys(metrics: readonly MetricLine[]): string[] {
  const keys = new Set<string>();
  for (const m of metrics) for (const k of Object.keys(m)) if (typeof m[k] === 'number') keys.add(k);
  const standard = SERIES.map((s) => s.key).filter((k) => keys.has(k));
  const evals = [...keys].filter((k) => k.startsWith('eval/')).sort();
  const stage = ['reward', 'reward_mean', 'accuracy', 'margin', 'chosen_reward', 'rejected_reward'].filter((k) =>
    keys.has(k),
  );
  return [...standard, ...evals, ...stage];
}

/** Series for one run; `prefix` names the run when several are overlaid. */
export function runSeries(run: RunPayload, opts: ChartOptions, prefix = ''): Series[] {
  const out: Series[] = [];
  for (const key of chartKeys(run.metrics)) {
    const spec = SERIES.find((s) => s.key === key);
    const xs: number[] = [];
    const ys: number[] = [];
    for (const m of run.metrics) {
      const v = m[key];
      const xv = opts.x === 'tokens' ? m.tokens : m.step;
      if (typeof v === 'number' && typeof xv === 'number') {
        xs.push(xv);
        ys.push(v);
      }
    }
    if (!xs.length) continue;
    // Sparse series (eval points every N steps) are smoothed by nobody: each point is a measurement.
    const dense = xs.length > 1 && xs.length >= run.metrics.length / 2;
    const smooth = key === 'lr' || !dense ? ys : ema(ys, opts.smoothing);
    const idx = decimate(xs, smooth, opts.maxPoints);
    out.push({
      name: prefix + (spec?.name ?? key),
      key,
      x: idx.map((i) => xs[i]!),
      y: idx.map((i) => smooth[i]!),
      axis:
        spec?.axis ?? (key.startsWith('eval/') && !key.endsWith('/loss') && !key.endsWith('/perplexity') ? 'y2' : 'y'),
      dash: spec?.dash,
      mode: dense ? 'lines' : 'lines+markers',
    });
  }
  return out;
}

const FINISHED = new Set(['completed', 'interrupted', 'cancelled', 'failed']);

/**
 * The run as shown: the display snapshot, or the room's curve when the room has at least as much
 * (snapshots are thinned past 2000 points; the room holds every point). A finished status wins.
 */
export function mergeRoom(
  snap: RunPayload,
  room: { metrics: MetricLine[]; meta: Record<string, unknown> } | null,
): RunPayload {
  if (!room || (room.metrics.length < snap.metrics.length && !snap.sampled) || !room.metrics.length) return snap;
  const roomStatus = room.meta.status as string | undefined;
  const status = FINISHED.has(snap.status ?? '') ? snap.status : (roomStatus ?? snap.status);
  return { ...snap, metrics: room.metrics, status, step: room.metrics.at(-1)?.step ?? snap.step };
}

/** Normalizes the run MIME data: one run or several. */
export function payloadRuns(data: RunPayload | ComparePayload): RunPayload[] {
  return 'runs' in data && Array.isArray(data.runs) ? data.runs : [data as RunPayload];
}

/** Title line: run id, step of steps, last loss, status. */
export function progressText(run: RunPayload): string {
  const last = run.metrics.at(-1);
  const loss = typeof last?.loss === 'number' ? ` · loss ${last.loss.toFixed(4)}` : '';
  const tps = typeof last?.tokens_per_s === 'number' ? ` · ${Math.round(last.tokens_per_s)} tok/s` : '';
  const steps = run.steps ? `/${run.steps}` : '';
  return `${run.name ?? run.id} · ${run.stage ?? ''} · step ${run.step ?? last?.step ?? 0}${steps}${loss}${tps} · ${run.status ?? 'unknown'}`;
}

/** A plotly figure (data + layout) for one or several runs; scattergl past `glAbove` points per trace. */
export function figure(
  runs: readonly RunPayload[],
  opts: ChartOptions,
  glAbove = 5000,
): { data: Record<string, unknown>[]; layout: Record<string, unknown> } {
  const many = runs.length > 1;
  const series = runs.flatMap((r) => runSeries(r, opts, many ? `${r.name ?? r.id} ` : ''));
  const hasY2 = series.some((s) => s.axis === 'y2');
  return {
    data: series.map((s) => ({
      type: s.x.length > glAbove ? 'scattergl' : 'scatter',
      mode: s.mode,
      name: s.name,
      x: s.x,
      y: s.y,
      yaxis: s.axis,
      line: s.dash ? { dash: s.dash } : undefined,
      hovertemplate: `${s.name}<br>${opts.x} %{x}<br>%{y:.4g}<extra></extra>`,
    })),
    layout: {
      title: { text: many ? runs.map((r) => r.name ?? r.id).join(' vs ') : progressText(runs[0]!), font: { size: 13 } },
      xaxis: { title: { text: opts.x } },
      yaxis: { title: { text: 'loss' }, type: opts.logY ? 'log' : 'linear' },
      ...(hasY2 ? { yaxis2: { title: { text: 'lr / score' }, overlaying: 'y', side: 'right', showgrid: false } } : {}),
      hovermode: 'x unified',
      margin: { l: 55, r: hasY2 ? 60 : 20, t: 40, b: 45 },
      height: 340,
      legend: { orientation: 'h', y: -0.2 },
      uirevision: 'lathe',
    },
  };
}

/** Latest eval suite scores per suite, for the eval table under the chart. */
export function evalTable(run: RunPayload): { suite: string; metric: string; value: number; step: number }[] {
  const latest = new Map<string, { suite: string; metric: string; value: number; step: number }>();
  for (const m of run.metrics)
    for (const [k, v] of Object.entries(m)) {
      if (!k.startsWith('eval/') || typeof v !== 'number') continue;
      const [, suite = '', metric = ''] = k.split('/');
      latest.set(k, { suite, metric, value: v, step: m.step });
    }
  return [...latest.values()].sort((a, b) => a.suite.localeCompare(b.suite) || a.metric.localeCompare(b.metric));
}

/** Parses metrics.jsonl text, skipping a torn last line (a run still writing). */
export function parseMetrics(text: string): MetricLine[] {
  const out: MetricLine[] = [];
  for (const line of text.split('\n')) {
    if (!line.trim()) continue;
    try {
      const m = JSON.parse(line) as MetricLine;
      if (typeof m.step === 'number') out.push(m);
    } catch {
      // A line being written; the next poll reads it whole.
    }
  }
  return out;
}
