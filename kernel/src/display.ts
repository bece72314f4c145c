// Mime bundles for what cells show: recipe cards, runs (live charts), tables, anything else.
import { inspect } from 'node:util';
import type * as Lathe from 'lathe';

/** A Jupyter mime bundle: mime type → data. */
export type MimeBundle = Record<string, unknown>;

/** The recipe card's mime type (DESIGN contract). */
export const RECIPE_MIME = 'application/vnd.lathe.recipe+json';
/** The live run's mime type (DESIGN contract). */
export const RUN_MIME = 'application/vnd.lathe.run+json';
/** Plotly's mime type, rendered by JupyterLab's plotly renderer. */
export const PLOTLY_MIME = 'application/vnd.plotly.v1+json';

type Metric = Lathe.runs.Metric;
type RunEvent = Lathe.runs.RunEvent;
type RunSummary = Lathe.runs.RunSummary;

/** What a run display needs from a Run (a live one, or one opened from disk). */
export interface RunLike {
  id: string;
  dir: { path: string };
  lock: { id: string; recipe: { name?: string; stage: string; train: { steps: number } } };
  status: RunSummary['status'];
  summary?: RunSummary;
  metricsSoFar: Metric[];
  events: RunEvent[];
}

/** How a browser joins a run's room (lathe's `rooms.roomRef`); set by the kernel when rooms are on. */
type RoomRef = Lathe.rooms.RoomRef;
let roomRefOf: ((run: { id: string; dir: { path: string } }) => RoomRef) | undefined;
const roomRefs = new Map<string, RoomRef | undefined>();

/** Makes run bundles carry `roomRef` (a read token for the run's room), minted once per run. */
export function setRoomRefProvider(fn: ((run: { id: string; dir: { path: string } }) => RoomRef) | undefined): void {
  roomRefOf = fn;
  roomRefs.clear();
}

/** The run's room reference for browsers, or undefined when rooms are off. */
export function roomRefFor(run: { id: string; dir: { path: string } }): RoomRef | undefined {
  if (!roomRefOf) return undefined;
  const key = run.dir.path;
  if (!roomRefs.has(key)) {
    try {
      roomRefs.set(key, roomRefOf(run));
    } catch {
      // No secret readable: the chart then follows display updates only.
      roomRefs.set(key, undefined);
    }
  }
  return roomRefs.get(key);
}

// Snapshots carry at most this many metric lines; longer runs are thinned evenly (last kept).
const MAX_POINTS = 2000;

const esc = (s: unknown) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

/** A number for people: 4 significant digits, thousands grouped for big ones. */
export function fmt(v: unknown): string {
  if (typeof v !== 'number') return v === undefined || v === null ? '' : String(v);
  if (!Number.isFinite(v)) return String(v);
  if (Number.isInteger(v)) return v.toLocaleString('en-US');
  const a = Math.abs(v);
  return a !== 0 && (a < 1e-3 || a >= 1e6) ? v.toExponential(3) : String(Number(v.toPrecision(4)));
}

/** Whether a value is a lathe Recipe (by shape, so two copies of the library both count). */
export function isRecipe(v: unknown): v is Lathe.Recipe {
  return (
    !!v &&
    typeof v === 'object' &&
    'config' in v &&
    'input' in v &&
    typeof (v as { toJSON?: unknown }).toJSON === 'function' &&
    typeof (v as { lock?: unknown }).lock === 'function'
  );
}

/** Whether a value is a lathe Run. */
export function isRun(v: unknown): v is RunLike & Lathe.Run {
  return (
    !!v &&
    typeof v === 'object' &&
    'lock' in v &&
    'dir' in v &&
    'done' in v &&
    typeof (v as { onMetric?: unknown }).onMetric === 'function'
  );
}

/** Whether a value is a data inspection report (`data.inspectData`). */
export function isInspectReport(v: unknown): v is Lathe.data.InspectReport {
  return (
    !!v &&
    typeof v === 'object' &&
    Array.isArray((v as { sources?: unknown }).sources) &&
    'clean' in v &&
    'tokensPerStep' in v
  );
}

const isPlain = (v: unknown): v is Record<string, unknown> =>
  !!v && typeof v === 'object' && Object.getPrototypeOf(v) === Object.prototype;
const isScalar = (v: unknown) =>
  v === null || ['string', 'number', 'boolean', 'undefined', 'bigint'].includes(typeof v);
const METRIC_KEYS = ['loss', 'eval_loss', 'perplexity', 'accuracy', 'score', 'pass_rate', 'reward'];

/** Whether a value reads best as a table: rows of flat records, or one flat record of metrics (an eval result). */
export function isTabular(v: unknown): v is Record<string, unknown>[] | Record<string, unknown> {
  if (Array.isArray(v))
    return (
      v.length > 0 &&
      v.length <= 5000 &&
      v.every((r) => isPlain(r) && Object.values(r).every((x) => isScalar(x) || isPlain(x) || Array.isArray(x)))
    );
  return isPlain(v) && Object.values(v).every(isScalar) && METRIC_KEYS.some((k) => typeof v[k] === 'number');
}

/** The bundle for any value: lathe objects get their own views, everything else util.inspect. */
export function bundleOf(value: unknown, lathe?: typeof Lathe): MimeBundle {
  if (isRecipe(value)) return recipeBundle(value);
  if (isRun(value)) return runBundle(value);
  if (isInspectReport(value)) return inspectBundle(value, lathe);
  if (isRecipeDiff(value)) return diffBundle(value);
  if (isTabular(value)) return tableBundle(Array.isArray(value) ? value : [value]);
  return {
    'text/plain':
      typeof value === 'string' ? value : inspect(value, { depth: 4, maxArrayLength: 100, breakLength: 100 }),
  };
}

// The parts of a resolved recipe the card reads; every stage has them in some form.
interface CardFields {
  name?: string;
  stage: string;
  seed?: number;
  backend?: string;
  from?: string;
  data?: { sources?: { name?: string; path?: string | string[]; weight?: number }[] };
  tokenizer?: { path?: string; vocabSize?: number };
  model?: {
    arch?: string;
    dim?: number;
    layers?: number;
    heads?: number;
    context?: number;
    experts?: number;
    topK?: number;
  };
  train?: Record<string, unknown>;
  reward?: { module?: string; export?: string };
  judge?: { reward?: { module?: string; export?: string }; model?: string };
  /** A pipeline's stage recipes. */
  stages?: CardFields[];
}

const base = (p: string) => p.split(/[\\/]/).pop() ?? p;
const moduleName = (r: { module?: string; export?: string }) => `${base(r.module ?? '')}#${r.export ?? 'default'}`;

// What one stage trains on and how: model (only where it is not the base's), data, tokenizer, training.
function stageRows(c: CardFields): [string, string][] {
  const m = c.model ?? {};
  const t = c.train ?? {};
  const rows: [string, string][] = [];
  // A post-training stage with `from` takes its architecture and tokenizer from that base.
  const own = !c.from;
  if (own && m.arch)
    rows.push([
      'model',
      `${m.arch} · ${m.layers} layers · dim ${m.dim} · ${m.heads} heads · context ${m.context}${m.arch === 'moe' ? ` · ${m.experts} experts top-${m.topK}` : ''}`,
    ]);
  const sources = c.data?.sources ?? [];
  if (sources.length)
    rows.push([
      'data',
      sources
        .map(
          (s) =>
            `${
              s.name ??
              [s.path]
                .flat()
                .map((p) => base(String(p)))
                .join(' + ')
            }${s.weight !== undefined ? ` (weight ${s.weight})` : ''}`,
        )
        .join(', '),
    ]);
  if (own && c.tokenizer) rows.push(['tokenizer', c.tokenizer.path ?? `BPE, ${c.tokenizer.vocabSize} tokens`]);
  const reward = c.reward ?? c.judge?.reward;
  if (reward) rows.push([c.stage === 'grpo' ? 'reward' : 'judge', moduleName(reward)]);
  else if (c.judge?.model) rows.push(['judge', `reward model ${c.judge.model}`]);
  const training = [
    t.steps !== undefined && `${t.steps} steps`,
    t.batchSize !== undefined && `batch ${t.batchSize}`,
    t.lr !== undefined && `lr ${fmt(t.lr)}`,
    t.fimRate ? `FIM ${t.fimRate}` : '',
    t.groupSize !== undefined && `${t.groupSize} completions per prompt`,
    t.samplesPerPrompt !== undefined && `${t.samplesPerPrompt} samples per prompt`,
    t.beta !== undefined && `β ${fmt(t.beta)}`,
  ]
    .filter(Boolean)
    .join(' · ');
  if (training) rows.push(['training', training]);
  return rows;
}

const cardHtml = (title: string, rows: [string, string][], extra: string, json: unknown) =>
  `<div class="lathe-recipe" style="border:1px solid #ccc;border-radius:6px;padding:8px 12px;display:inline-block;font-family:sans-serif;font-size:13px">` +
  `<div style="font-weight:bold;margin-bottom:4px">${esc(title)}</div><table>` +
  rows
    .map(
      ([k, v]) =>
        `<tr><td style="color:#666;padding-right:12px;text-align:left">${esc(k)}</td><td style="text-align:left">${esc(v)}</td></tr>`,
    )
    .join('') +
  `</table>${extra}<details><summary style="cursor:pointer;color:#666">recipe JSON</summary><pre>${esc(JSON.stringify(json, null, 2))}</pre></details></div>`;

/** A recipe card (a stage recipe or a pipeline): the recipe as written and resolved, a small HTML card and a text summary. */
export function recipeBundle(r: Lathe.Recipe | Lathe.recipe.Pipeline): MimeBundle {
  const c = r.config as unknown as CardFields;
  const title = c.name ?? `${c.stage} recipe`;
  const backend: [string, string][] = c.backend
    ? [['backend', `${c.backend}${c.seed !== undefined ? ` · seed ${c.seed}` : ''}`]]
    : [];
  const payload = {
    version: 1,
    name: c.name ?? null,
    stage: c.stage,
    file: r.file ?? null,
    recipe: r.toJSON(),
    resolved: r.config,
  };
  if (c.stage === 'pipeline' && c.stages) return pipelineCard(c, c.stages, title, backend, payload);
  const rows: [string, string][] = [
    ['stage', c.stage],
    ...(c.from ? [['from', c.from] as [string, string]] : []),
    ...stageRows(c),
    ...backend,
  ];
  const text = [`Recipe ${title}`, ...rows.map(([k, v]) => `  ${k.padEnd(9)} ${v}`)].join('\n');
  return { [RECIPE_MIME]: payload, 'text/html': cardHtml(title, rows, '', r.toJSON()), 'text/plain': text };
}

// A pipeline's card: the chain, then one row per stage saying where it starts, its data and its training.
function pipelineCard(
  c: CardFields,
  stages: CardFields[],
  title: string,
  backend: [string, string][],
  payload: Record<string, unknown>,
): MimeBundle {
  const rows: [string, string][] = [
    ['stages', stages.map((s) => s.stage).join(' → ')],
    [
      'training',
      `${fmt(Number(c.train?.steps ?? stages.reduce((a, s) => a + Number(s.train?.steps ?? 0), 0)))} steps in all, each stage from the previous one's final checkpoint`,
    ],
    ...backend,
  ];
  const table = stages.map((s, i) => {
    const fields = Object.fromEntries(stageRows({ ...s, from: i > 0 ? 'previous stage' : (c.from ?? s.from) }));
    return {
      '#': i + 1,
      stage: s.stage,
      'starts from': i > 0 ? `stage ${i}'s final checkpoint` : (c.from ?? s.from ?? 'a fresh model'),
      ...(fields.model ? { model: fields.model } : {}),
      data: fields.data ?? '',
      ...(fields.reward || fields.judge ? { reward: fields.reward ?? fields.judge } : {}),
      training: fields.training ?? '',
    };
  });
  const t = tableBundle(
    table,
    ['#', 'stage', 'starts from', 'model', 'data', 'reward', 'training'].filter((k) => table.some((r) => k in r)),
  );
  const text = [
    `Pipeline ${title}`,
    ...rows.map(([k, v]) => `  ${k.padEnd(9)} ${v}`),
    '',
    ...String(t['text/plain'])
      .split('\n')
      .map((l) => `  ${l}`),
  ].join('\n');
  return {
    [RECIPE_MIME]: {
      ...payload,
      stages: table.map((s, i) => ({
        index: i,
        stage: s.stage,
        steps: Number(stages[i]!.train?.steps ?? 0),
        from: s['starts from'],
      })),
    },
    'text/html': cardHtml(title, rows, String(t['text/html']), payload.recipe),
    'text/plain': text,
  };
}

/** One line of progress: run id, step of steps, loss, eval loss, speed, status (with a bar unless `bar` is false). */
export function progressLine(run: RunLike, bar = true): string {
  const ms = run.metricsSoFar;
  const last = ms.at(-1);
  const steps = run.summary?.steps ?? run.lock.recipe.train.steps;
  const step = run.summary?.step ?? last?.step ?? 0;
  const lastEval = [...ms].reverse().find((m) => typeof m.eval_loss === 'number')?.eval_loss;
  const parts = [`run ${run.id}`, `step ${step}/${steps}`];
  const loss = run.summary?.loss ?? last?.loss;
  if (typeof loss === 'number') parts.push(`loss ${fmt(loss)}`);
  if (typeof lastEval === 'number') parts.push(`eval ${fmt(lastEval)}`);
  if (typeof last?.tokens_per_s === 'number') parts.push(`${fmt(Math.round(last.tokens_per_s))} tok/s`);
  const ended = run.events.filter((e) => ['interrupted', 'cancelled', 'completed', 'failed'].includes(e.type)).at(-1);
  parts.push(ended && run.status !== 'running' ? `${run.status}: ${ended.message}` : run.status);
  const drawn = bar && steps > 0 ? `[${'█'.repeat(Math.round((20 * step) / steps)).padEnd(20, '·')}] ` : '';
  return drawn + parts.join(' · ');
}

function thin<T>(xs: T[]): T[] {
  if (xs.length <= MAX_POINTS) return xs;
  const every = Math.ceil(xs.length / MAX_POINTS);
  const out = xs.filter((_, i) => i % every === 0);
  if (out.at(-1) !== xs.at(-1)) out.push(xs.at(-1)!);
  return out;
}

/** One plotted series. */
export interface Series {
  name: string;
  x: number[];
  y: number[];
  markers?: boolean;
}

/** The loss curves of a run: training loss, and held-out loss where evaluated. */
export function runSeries(run: RunLike, metrics: string[] = ['loss', 'eval_loss'], prefix = ''): Series[] {
  const ms = thin(run.metricsSoFar);
  return metrics
    .map((key) => {
      const pts = ms.filter((m) => typeof m[key] === 'number');
      return {
        name: prefix + key,
        x: pts.map((m) => m.step),
        y: pts.map((m) => m[key] as number),
        markers: key.startsWith('eval'),
      };
    })
    .filter((s) => s.x.length > 0);
}

/** A Plotly figure of series over steps. */
export function plotlyFigure(series: Series[], title: string): Record<string, unknown> {
  return {
    data: series.map((s) => ({
      type: 'scatter',
      mode: s.markers ? 'lines+markers' : 'lines',
      name: s.name,
      x: s.x,
      y: s.y,
    })),
    layout: {
      title: { text: title, font: { size: 13 } },
      height: 320,
      margin: { l: 50, r: 20, t: 40, b: 40 },
      // Whole steps on short runs (Plotly would tick at halves).
      xaxis: { title: { text: 'step' }, ...(Math.max(0, ...series.flatMap((s) => s.x)) <= 10 ? { dtick: 1 } : {}) },
      yaxis: { title: { text: 'loss' } },
    },
  };
}

const COLORS = ['#1f77b4', '#ff7f0e', '#2ca02c', '#d62728', '#9467bd', '#8c564b'];

/** A static SVG line chart, for frontends without Plotly (and reopened notebooks with no kernel). */
export function svgChart(series: Series[], width = 480, height = 180): string {
  const pts = series.flatMap((s) => s.x.map((x, i) => [x, s.y[i]!] as const)).filter(([, y]) => Number.isFinite(y));
  if (!pts.length)
    return `<svg width="${width}" height="40"><text x="8" y="24" font-size="12" fill="#666">waiting for the first step…</text></svg>`;
  const [x0, x1] = [Math.min(...pts.map((p) => p[0])), Math.max(...pts.map((p) => p[0]))];
  const [y0, y1] = [Math.min(...pts.map((p) => p[1])), Math.max(...pts.map((p) => p[1]))];
  const L = 44,
    R = 8,
    T = 8,
    B = 20;
  const sx = (x: number) => L + ((x - x0) / (x1 - x0 || 1)) * (width - L - R);
  const sy = (y: number) => T + (1 - (y - y0) / (y1 - y0 || 1)) * (height - T - B);
  const lines = series.map((s, i) => {
    const d = s.x.map((x, j) => `${sx(x).toFixed(1)},${sy(s.y[j]!).toFixed(1)}`).join(' ');
    return `<polyline fill="none" stroke="${COLORS[i % COLORS.length]}" stroke-width="1.5" points="${d}"/>`;
  });
  const legend = series.map((s, i) => `<tspan fill="${COLORS[i % COLORS.length]}">■ ${esc(s.name)}</tspan>`).join(' ');
  return (
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height + 16}" font-family="sans-serif" font-size="10">` +
    `<rect x="${L}" y="${T}" width="${width - L - R}" height="${height - T - B}" fill="none" stroke="#ddd"/>` +
    `<text x="${L - 4}" y="${T + 8}" text-anchor="end" fill="#666">${esc(fmt(y1))}</text>` +
    `<text x="${L - 4}" y="${height - B}" text-anchor="end" fill="#666">${esc(fmt(y0))}</text>` +
    `<text x="${L}" y="${height - 6}" fill="#666">step ${esc(fmt(x0))}</text>` +
    `<text x="${width - R}" y="${height - 6}" text-anchor="end" fill="#666">${esc(fmt(x1))}</text>` +
    lines.join('') +
    `<text x="${L}" y="${height + 12}">${legend}</text></svg>`
  );
}

/** A run's bundle: the lathe run view, a Plotly chart, HTML (line + SVG chart) and one line of text. */
export function runBundle(run: RunLike): MimeBundle {
  const metrics = run.metricsSoFar;
  const series = runSeries(run);
  const line = progressLine(run);
  // The progress line is the chart's title, so it shows whichever renderer the frontend picks.
  const title = progressLine(run, false);
  return {
    [RUN_MIME]: {
      version: 1,
      id: run.id,
      name: run.lock.recipe.name ?? null,
      room: roomRefFor(run)?.name ?? `run:${run.id}`,
      dir: run.dir.path,
      lockId: run.lock.id,
      stage: run.lock.recipe.stage,
      status: run.status,
      step: run.summary?.step ?? metrics.at(-1)?.step ?? 0,
      steps: run.summary?.steps ?? run.lock.recipe.train.steps,
      metrics: thin(metrics),
      sampled: metrics.length > MAX_POINTS,
      events: run.events.slice(-20),
      summary: run.summary ?? null,
      // When this snapshot leaves the kernel; the browser benchmark measures metric-to-pixel latency from it.
      sentAt: Date.now(),
      ...(roomRefFor(run) ? { roomRef: roomRefFor(run) } : {}),
    },
    [PLOTLY_MIME]: plotlyFigure(series, title),
    'text/html': `<div class="lathe-run"><div style="font-family:monospace;font-size:12px">${esc(line)}</div>${svgChart(series)}</div>`,
    'text/plain': line,
  };
}

type Change = { path: string; kind: 'changed' | 'added' | 'removed'; before?: unknown; after?: unknown };

/** `recipe.diff(a, b)`'s result: a non-empty array of { path, kind, before?, after? }. */
function isRecipeDiff(v: unknown): v is Change[] {
  return (
    Array.isArray(v) &&
    v.length > 0 &&
    v.every(
      (c) =>
        !!c &&
        typeof c === 'object' &&
        typeof (c as Change).path === 'string' &&
        ['changed', 'added', 'removed'].includes((c as Change).kind),
    )
  );
}

/** A recipe diff: the recipe card's diff view (highlighted), with a table as the fallback. */
export function diffBundle(changes: Change[], a = 'before', b = 'after'): MimeBundle {
  const rows = changes.map((c) => ({
    field: c.path,
    change: c.kind,
    [a]: c.kind === 'added' ? '' : fmtAny(c.before),
    [b]: c.kind === 'removed' ? '' : fmtAny(c.after),
  }));
  return { [RECIPE_MIME]: { version: 1, diff: { a, b, changes } }, ...tableBundle(rows, ['field', 'change', a, b]) };
}

const fmtAny = (v: unknown) => (typeof v === 'string' ? v : JSON.stringify(v));

/** Several runs on one chart (e.g. dense against MoE). */
export function compareBundle(runs: RunLike[], metrics: string[] = ['loss']): MimeBundle {
  const series = runs.flatMap((r) => runSeries(r, metrics, `${r.lock.recipe.name ?? r.id} `));
  const text = runs.map((r) => progressLine(r)).join('\n');
  return {
    // Lathe's chart overlays the runs (with its controls); plotly's figure is the fallback.
    [RUN_MIME]: {
      version: 1,
      runs: runs.map((r) => ({ ...(runBundle(r)[RUN_MIME] as object), name: r.lock.recipe.name ?? r.id })),
    },
    [PLOTLY_MIME]: plotlyFigure(series, runs.map((r) => r.lock.recipe.name ?? r.id).join(' vs ')),
    'text/html': `<div class="lathe-compare">${svgChart(series)}<pre style="font-size:11px">${esc(text)}</pre></div>`,
    'text/plain': text,
  };
}

/** A table from records: HTML and aligned text. */
export function tableBundle(rows: Record<string, unknown>[], columns?: string[]): MimeBundle {
  const cols = columns ?? [...new Set(rows.flatMap((r) => Object.keys(r)))];
  const cell = (v: unknown) => (isScalar(v) ? fmt(v) : JSON.stringify(v));
  const body = rows.map((r) => cols.map((c) => cell(r[c])));
  const num = cols.map((c) => rows.every((r) => r[c] === undefined || typeof r[c] === 'number'));
  const width = cols.map((c, i) => Math.max(c.length, ...body.map((r) => r[i]!.length)));
  const pad = (s: string, i: number) => (num[i] ? s.padStart(width[i]!) : s.padEnd(width[i]!));
  const text = [
    cols.map(pad).join('  '),
    width.map((w) => '-'.repeat(w)).join('  '),
    ...body.map((r) => r.map(pad).join('  ')),
  ].join('\n');
  const th = cols.map((c, i) => `<th style="text-align:${num[i] ? 'right' : 'left'}">${esc(c)}</th>`).join('');
  const trs = body
    .map(
      (r) =>
        `<tr>${r.map((v, i) => `<td style="text-align:${num[i] ? 'right' : 'left'}">${esc(v)}</td>`).join('')}</tr>`,
    )
    .join('');
  return {
    'text/html': `<table class="lathe-table"><thead><tr>${th}</tr></thead><tbody>${trs}</tbody></table>`,
    'text/plain': text,
  };
}

/** A data inspection report: a table per source, then cleaning counts and rejected lines. */
export function inspectBundle(rep: Lathe.data.InspectReport, lathe?: typeof Lathe): MimeBundle {
  const rows = rep.sources.map((s) => ({
    source: s.name,
    weight: s.weight,
    docs: s.docs,
    'held-out docs': s.heldOutDocs,
    bytes: s.bytes,
    tokens: s.tokens,
    'held-out tokens': s.heldOutTokens,
    epochs: Number(s.epochs.toFixed(2)),
  }));
  const c = rep.clean;
  const cleaning = [
    { check: 'documents in', count: c.docsIn },
    { check: 'documents kept', count: c.docsOut },
    { check: 'exact duplicates removed', count: c.exactDuplicates },
    { check: 'near duplicates removed', count: c.nearDuplicates },
    { check: 'too short', count: c.tooShort },
    { check: 'too long', count: c.tooLong },
    { check: 'NFC-normalised', count: c.nfcChanged },
    { check: 'control characters removed', count: c.controlCharsRemoved },
    ...Object.entries(c.pii).map(([k, v]) => ({ check: `PII scrubbed: ${k}`, count: v as number })),
    { check: 'rejected lines', count: rep.rejected },
  ];
  const sources = tableBundle(rows);
  const clean = tableBundle(cleaning);
  const rejections = rep.rejections.length
    ? `<details><summary>rejected lines</summary><pre>${esc(rep.rejections.map((r) => `${r.file}:${r.line}: ${r.reason}`).join('\n'))}</pre></details>`
    : '';
  const html =
    `<div class="lathe-inspect">${sources['text/html']}` +
    `<p>tokenizer: ${esc(rep.vocabSize)} tokens · training: ${esc(rep.steps)} steps × ${esc(rep.tokensPerStep)} tokens</p>${clean['text/html']}${rejections}</div>`;
  const text = lathe?.data.formatInspect
    ? lathe.data.formatInspect(rep)
    : `${sources['text/plain']}\n\n${clean['text/plain']}`;
  return { 'text/html': html, 'text/plain': text };
}
