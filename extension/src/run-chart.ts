import { Widget } from '@lumino/widgets';
import Plotly from 'plotly.js-dist-min';
import {
  DEFAULT_OPTIONS,
  evalTable,
  figure,
  progressText,
  type ChartOptions,
  type RunPayload,
  type XAxis,
} from './chart';

/** A draw the latency benchmark reads: when a snapshot left the kernel and when its points showed. */
export interface DrawRecord {
  id: string;
  step: number;
  sentAt?: number;
  drawnAt: number;
  renderMs: number;
}

declare global {
  interface Window {
    /** Last draws of every Lathe chart on the page (bounded), for tests and `npm run bench`. */
    __latheDraws?: DrawRecord[];
  }
}

function el<K extends keyof HTMLElementTagNameMap>(tag: K, cls: string, text?: string): HTMLElementTagNameMap[K] {
  const e = document.createElement(tag);
  e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

/**
 * A run chart: loss and eval loss against step or tokens, lr on a second axis, eval suite scores as
 * their own traces, several runs overlaid. Controls: x axis, EMA smoothing, log-y. Redraws coalesce,
 * so a fast stream of updates draws the latest state, never a backlog.
 */
export class RunChart extends Widget {
  private runs: RunPayload[] = [];
  private opts: ChartOptions = { ...DEFAULT_OPTIONS };
  private readonly plot = el('div', 'lathe-RunChart-plot');
  private readonly status = el('div', 'lathe-RunChart-status');
  private readonly evals = el('div', 'lathe-RunChart-evals');
  private readonly presence = el('div', 'lathe-RunChart-presence');
  private drawing: Promise<void> | null = null;
  private dirty = false;

  constructor() {
    super();
    this.addClass('lathe-RunChart');
    const bar = el('div', 'lathe-RunChart-controls');
    const x = el('select', 'lathe-RunChart-x');
    for (const v of ['step', 'tokens'] as XAxis[]) x.append(new Option(v, v));
    x.onchange = () => this.set({ x: x.value as XAxis });
    const smooth = el('input', 'lathe-RunChart-smoothing');
    Object.assign(smooth, {
      type: 'range',
      min: '0',
      max: '0.99',
      step: '0.01',
      value: String(this.opts.smoothing),
      title: 'EMA smoothing',
    });
    const smoothValue = el('span', 'lathe-RunChart-smoothingValue', this.opts.smoothing.toFixed(2));
    smooth.oninput = () => {
      smoothValue.textContent = Number(smooth.value).toFixed(2);
      this.set({ smoothing: Number(smooth.value) });
    };
    const log = el('input', 'lathe-RunChart-logy');
    log.type = 'checkbox';
    log.onchange = () => this.set({ logY: log.checked });
    const label = (text: string, ...nodes: Node[]) => {
      const l = el('label', 'lathe-RunChart-label', text);
      l.append(...nodes);
      return l;
    };
    bar.append(label('x ', x), label(' smoothing ', smooth, smoothValue), label(' log y ', log));
    this.node.append(this.status, this.presence, bar, this.plot, this.evals);
  }

  /** Shows these runs (one, or several overlaid); resolves once drawn. */
  setRuns(runs: RunPayload[]): Promise<void> {
    this.runs = runs;
    return this.schedule();
  }

  /** Shows who is watching this run (its room's presence), or why the room refused us. */
  setPresence(people: readonly { name: string; color: string; role?: string }[], refused?: string | null): void {
    this.presence.replaceChildren();
    if (refused) {
      this.presence.append(el('span', 'lathe-RunChart-refused', `room refused: ${refused}`));
      return;
    }
    if (!people.length) return;
    this.presence.append(el('span', 'lathe-RunChart-watching', 'watching: '));
    for (const p of people) {
      const chip = el('span', 'lathe-Presence', p.name);
      chip.style.borderColor = p.color;
      chip.title = p.role ? `${p.name} (${p.role})` : p.name;
      const dot = el('span', 'lathe-Presence-dot');
      dot.style.background = p.color;
      chip.prepend(dot);
      this.presence.append(chip);
    }
    this.node.dataset.watchers = people.map((p) => p.name).join(',');
  }

  /** Changes the chart options and redraws. */
  set(o: Partial<ChartOptions>): Promise<void> {
    this.opts = { ...this.opts, ...o };
    return this.schedule();
  }

  get options(): ChartOptions {
    return { ...this.opts };
  }

  private schedule(): Promise<void> {
    this.dirty = true;
    if (!this.drawing)
      this.drawing = (async () => {
        try {
          while (this.dirty) {
            this.dirty = false;
            await this.draw();
          }
        } finally {
          this.drawing = null;
        }
      })();
    return this.drawing;
  }

  private async draw(): Promise<void> {
    const t0 = performance.now();
    const fig = figure(this.runs, this.opts);
    this.status.textContent = this.runs.map(progressText).join('\n');
    await Plotly.react(this.plot, fig.data as Plotly.Data[], fig.layout as Partial<Plotly.Layout>, {
      displaylogo: false,
      responsive: true,
    });
    const renderMs = performance.now() - t0;
    const raw = this.runs.reduce((n, r) => n + r.metrics.filter((m) => typeof m.loss === 'number').length, 0);
    this.node.dataset.points = String(raw);
    this.node.dataset.drawnPoints = String(fig.data.reduce((n, d) => n + (d.x as number[]).length, 0));
    this.node.dataset.renderMs = renderMs.toFixed(1);
    this.node.dataset.status = this.runs.map((r) => r.status ?? '').join(',');
    this.renderEvals();
    const log = (window.__latheDraws ??= []);
    for (const r of this.runs)
      log.push({
        id: r.id,
        step: r.step ?? r.metrics.at(-1)?.step ?? 0,
        sentAt: r.sentAt,
        drawnAt: Date.now(),
        renderMs,
      });
    if (log.length > 2000) log.splice(0, log.length - 2000);
  }

  private renderEvals(): void {
    this.evals.replaceChildren();
    for (const r of this.runs) {
      const rows = evalTable(r);
      if (!rows.length) continue;
      const table = el('table', 'lathe-EvalTable');
      const head = table.createTHead().insertRow();
      for (const h of [this.runs.length > 1 ? `${r.name ?? r.id} suite` : 'suite', 'metric', 'value', 'step'])
        head.append(el('th', '', h));
      const body = table.createTBody();
      for (const row of rows) {
        const tr = body.insertRow();
        tr.append(
          el('td', '', row.suite),
          el('td', '', row.metric),
          el('td', 'lathe-num', row.value.toPrecision(4)),
          el('td', 'lathe-num', String(row.step)),
        );
      }
      this.evals.append(table);
    }
  }

  protected onResize(): void {
    if (this.plot.isConnected && this.runs.length) void Plotly.Plots.resize(this.plot);
  }

  dispose(): void {
    if (this.isDisposed) return;
    Plotly.purge(this.plot);
    super.dispose();
  }
}
