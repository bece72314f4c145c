// The "Runs" side panel, the view: rows from the workspace scanner (workspace-runs.ts) and from each
// `lathe` kernel's `lathe.runs` comm (kernel-runs.ts), merged (runs-model.ts), drawn as a table.
import type { JupyterFrontEnd } from '@jupyterlab/application';
import { MainAreaWidget } from '@jupyterlab/apputils';
import { PageConfig } from '@jupyterlab/coreutils';
import type { Kernel } from '@jupyterlab/services';
import { Widget } from '@lumino/widgets';
import { parseMetrics, type RunPayload } from './chart';
import { KernelRuns } from './kernel-runs';
import { currentIdentity, joinRoom, type RunRoom } from './room';
import { RunChart } from './run-chart';
import { formatElapsed, mergeRows, rowFromKernel, type RunRow } from './runs-model';
import { readText, RUN_FOLDERS, scanWorkspace } from './workspace-runs';

const KERNEL_NAME = 'lathe';

/**
 * The "Runs" side panel: run directories in the workspace, live runs in `lathe` kernels (through their
 * `lathe.runs` comm). Click a run to open its chart; select several to compare; cancel live runs.
 */
export class RunsPanel extends Widget {
  private workspace: RunRow[] = [];
  private readonly kernels = new Map<string, { conn: Kernel.IKernelConnection; runs: KernelRuns }>();
  private rows: RunRow[] = [];
  private readonly selected = new Set<string>();
  private readonly table = document.createElement('table');
  private readonly message = document.createElement('div');
  private timer: number | undefined;
  private readonly serverRoot = PageConfig.getOption('serverRoot');
  private readonly roomSubs = new Map<string, () => void>();

  constructor(private readonly app: JupyterFrontEnd) {
    super();
    this.id = 'lathe-runs';
    this.title.label = 'Runs';
    this.title.caption = 'Lathe runs: workspace, kernels and workers';
    this.addClass('lathe-RunsPanel');
    const bar = document.createElement('div');
    bar.className = 'lathe-RunsPanel-toolbar';
    const button = (label: string, cls: string, fn: () => void) => {
      const b = document.createElement('button');
      b.className = `jp-Button lathe-RunsPanel-${cls}`;
      b.textContent = label;
      b.onclick = fn;
      bar.append(b);
    };
    button('Refresh', 'refresh', () => void this.refresh());
    button('Compare', 'compare', () => this.compareSelected());
    button('Cancel', 'cancel', () => this.cancelSelected());
    this.message.className = 'lathe-RunsPanel-message';
    this.table.className = 'lathe-RunsPanel-table';
    this.node.append(bar, this.message, this.table);
    app.serviceManager.kernels.runningChanged.connect(() => this.syncKernels());
    this.syncKernels();
    void this.refresh();
    this.timer = window.setInterval(() => void this.refresh(), 3000);
  }

  /** Every row shown now (for tests and commands). */
  get runs(): readonly RunRow[] {
    return this.rows;
  }

  private syncKernels(): void {
    const running = new Map(
      [...this.app.serviceManager.kernels.running()].filter((k) => k.name === KERNEL_NAME).map((k) => [k.id, k]),
    );
    for (const [id, k] of this.kernels)
      if (!running.has(id)) {
        k.runs.dispose();
        k.conn.dispose();
        this.kernels.delete(id);
      }
    for (const [id, model] of running)
      if (!this.kernels.has(id)) {
        const conn = this.app.serviceManager.kernels.connectTo({ model, handleComms: true });
        this.kernels.set(id, { conn, runs: new KernelRuns(conn, () => this.render()) });
      }
  }

  private folders(): string[] {
    const out = new Set(RUN_FOLDERS);
    for (const w of this.app.shell.widgets('main')) {
      const path = (w as { context?: { path?: string } }).context?.path;
      if (path?.endsWith('.ipynb')) out.add([...path.split('/').slice(0, -1), 'runs'].join('/'));
    }
    return [...out];
  }

  /** Rescans the workspace's run folders. */
  async refresh(): Promise<void> {
    this.workspace = await scanWorkspace(this.app.serviceManager.contents, this.folders(), this.workspace);
    this.render();
  }

  private kernelRows(): RunRow[] {
    const out: RunRow[] = [];
    for (const [kid, { runs: k }] of this.kernels)
      for (const info of k.infos.values())
        out.push(rowFromKernel(info, kid, this.serverRoot, k.last.get(info.id), k.started.get(info.id)));
    return out;
  }

  private render(): void {
    this.rows = mergeRows(this.workspace, this.kernelRows());
    const t = this.table;
    t.replaceChildren();
    const head = t.createTHead().insertRow();
    for (const h of ['', 'run', 'status', 'stage', 'step', 'loss', 'tok/s', 'ranks', 'elapsed', 'where', 'who']) {
      const th = document.createElement('th');
      th.textContent = h;
      head.append(th);
    }
    const body = t.createTBody();
    for (const r of this.rows) {
      const tr = body.insertRow();
      tr.className = `lathe-RunsPanel-row lathe-status-${r.status}`;
      tr.dataset.runId = r.id;
      tr.dataset.status = r.status;
      tr.dataset.step = String(r.step);
      const box = document.createElement('input');
      box.type = 'checkbox';
      box.checked = this.selected.has(r.key);
      box.onclick = (e) => {
        e.stopPropagation();
        if (box.checked) this.selected.add(r.key);
        else this.selected.delete(r.key);
      };
      const elapsed = r.elapsed ?? (r.startedAt && r.status === 'running' ? (Date.now() - r.startedAt) / 1000 : null);
      const cells = [
        r.name,
        r.status,
        r.stage,
        r.steps ? `${r.step}/${r.steps}` : String(r.step),
        r.loss === null ? '' : r.loss.toFixed(4),
        r.tokensPerS === null ? '' : String(Math.round(r.tokensPerS)),
        r.ranks?.text ?? '',
        formatElapsed(elapsed),
        r.source,
      ];
      const first = tr.insertCell();
      first.append(box);
      for (const c of cells) tr.insertCell().textContent = c;
      if (r.ranks) {
        const cell = tr.cells[8]!;
        cell.title = r.ranks.title;
        if (r.ranks.straggler !== null) {
          cell.className = 'lathe-RunsPanel-straggler';
          tr.dataset.straggler = String(r.ranks.straggler);
        }
      }
      const who = tr.insertCell();
      who.className = 'lathe-RunsPanel-who';
      const room = this.roomOf(r);
      if (room) {
        const meta = room.meta();
        const by = [
          meta.startedBy ? `started by ${String(meta.startedBy)}` : '',
          meta.cancelledBy ? `cancelled by ${String(meta.cancelledBy)}` : '',
        ]
          .filter(Boolean)
          .join(', ');
        tr.dataset.startedBy = String(meta.startedBy ?? '');
        tr.dataset.cancelledBy = String(meta.cancelledBy ?? '');
        tr.dataset.watchers = room
          .presence()
          .map((p) => p.name)
          .join(',');
        for (const p of room.presence()) {
          const dot = document.createElement('span');
          dot.className = 'lathe-Presence-dot';
          dot.style.background = p.color;
          dot.title = p.name;
          who.append(dot);
        }
        if (by) who.title = by;
      }
      tr.title = r.dir ?? r.id;
      tr.onclick = () => void this.open([r]);
    }
    this.message.textContent = this.rows.length
      ? ''
      : 'No runs yet. Train one from a notebook (await r.run()) or the CLI (lathe train).';
  }

  /** The room of a live run, joined once; its changes re-render the panel. */
  private roomOf(r: RunRow): RunRoom | null {
    if (!r.roomRef) return null;
    const room = joinRoom(r.roomRef);
    if (!this.roomSubs.has(r.roomRef.name))
      this.roomSubs.set(
        r.roomRef.name,
        room.onChange(() => this.renderSoon()),
      );
    return room;
  }

  private renderTimer = 0;
  private renderSoon(): void {
    if (this.renderTimer) return;
    this.renderTimer = window.setTimeout(() => {
      this.renderTimer = 0;
      this.render();
    }, 250);
  }

  private selectedRows(): RunRow[] {
    return this.rows.filter((r) => this.selected.has(r.key));
  }

  private compareSelected(): void {
    const rows = this.selectedRows();
    if (rows.length < 2) {
      this.message.textContent = 'Select two or more runs to compare.';
      return;
    }
    void this.open(rows);
  }

  private cancelSelected(): void {
    const rows = this.selectedRows().filter((r) => r.status === 'running');
    if (!rows.length) {
      this.message.textContent = 'Select a running run to cancel.';
      return;
    }
    for (const r of rows) this.cancel(r);
  }

  /** Cancels a live run through its kernel's comm. */
  cancel(r: RunRow): void {
    const k = r.kernelId ? this.kernels.get(r.kernelId)?.runs : undefined;
    if (!k) {
      this.message.textContent = `${r.name}: not live in a kernel here, cannot cancel`;
      return;
    }
    k.cancel(r.id, currentIdentity().name);
  }

  /** Opens a chart of these runs in the main area; live runs keep streaming into it. */
  async open(rows: RunRow[]): Promise<void> {
    const chart = new RunChart();
    const widget = new MainAreaWidget({ content: chart });
    widget.id = `lathe-chart-${rows.map((r) => r.id).join('-')}-${Date.now()}`;
    widget.title.label = rows.length > 1 ? `Compare ${rows.length} runs` : `Run ${rows[0]!.name}`;
    widget.title.closable = true;
    widget.addClass('lathe-ChartPanel');
    this.app.shell.add(widget, 'main');
    this.app.shell.activateById(widget.id);
    const payloads: RunPayload[] = [];
    const stops: (() => void)[] = [];
    for (const [i, r] of rows.entries()) {
      const k = r.kernelId ? this.kernels.get(r.kernelId)?.runs : undefined;
      if (k) {
        payloads[i] = {
          id: r.id,
          name: r.name,
          stage: r.stage,
          status: r.status,
          step: r.step,
          steps: r.steps,
          metrics: [],
        };
        stops.push(
          k.follow(r.id, (d) => {
            const p = payloads[i]!;
            if (d.type === 'snapshot') p.metrics = [...d.metrics];
            else if (d.type === 'metric') p.metrics.push(d.metric);
            if (d.type === 'snapshot' || d.type === 'done')
              Object.assign(p, { status: d.run.status, step: d.run.step });
            if (d.type === 'metric') p.step = d.metric.step;
            void chart.setRuns([...payloads]);
          }),
        );
      } else if (r.dir) {
        payloads[i] = {
          id: r.id,
          name: r.name,
          stage: r.stage,
          status: r.status,
          step: r.step,
          steps: r.steps,
          metrics: parseMetrics(await readText(this.app.serviceManager.contents, `${r.dir}/metrics.jsonl`)),
        };
      }
    }
    widget.disposed.connect(() => stops.forEach((s) => s()));
    await chart.setRuns(payloads.filter(Boolean));
  }

  dispose(): void {
    if (this.isDisposed) return;
    window.clearInterval(this.timer);
    for (const off of this.roomSubs.values()) off();
    for (const k of this.kernels.values()) {
      k.runs.dispose();
      k.conn.dispose();
    }
    super.dispose();
  }
}
