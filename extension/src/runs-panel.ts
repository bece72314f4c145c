import type { JupyterFrontEnd } from '@jupyterlab/application';
import { MainAreaWidget } from '@jupyterlab/apputils';
import { PageConfig } from '@jupyterlab/coreutils';
import type { Kernel, KernelMessage } from '@jupyterlab/services';
import { Widget } from '@lumino/widgets';
import { parseMetrics, type MetricLine, type RunPayload } from './chart';
import { currentIdentity, joinRoom, type RunRoom } from './room';
import { RunChart } from './run-chart';
import { formatElapsed, mergeRows, rowFromDir, rowFromKernel, type KernelRunInfo, type RunRow } from './runs-model';

const TARGET = 'lathe.runs';
const KERNEL_NAME = 'lathe';

type Listener = (msg: Record<string, unknown>) => void;

/** One `lathe.runs` comm to one kernel: its runs, their last metrics, and followers by run id. */
class KernelRuns {
  readonly infos = new Map<string, KernelRunInfo>();
  readonly last = new Map<string, MetricLine>();
  readonly started = new Map<string, number>();
  private readonly followers = new Map<string, Set<Listener>>();
  private readonly comm: Kernel.IComm;

  constructor(
    readonly kernel: Kernel.IKernelConnection,
    private readonly changed: () => void,
  ) {
    this.comm = kernel.createComm(TARGET);
    this.comm.onMsg = (msg: KernelMessage.ICommMsgMsg) => this.receive(msg.content.data as Record<string, unknown>);
    this.comm.open({});
  }

  private receive(d: Record<string, unknown>): void {
    switch (d.type) {
      case 'runs':
        for (const r of d.runs as KernelRunInfo[]) this.add(r);
        break;
      case 'started':
        this.add(d.run as KernelRunInfo);
        break;
      case 'snapshot': {
        const events = (d.events as { type?: string; time?: string }[]) ?? [];
        const t = events.find((e) => e.type === 'started')?.time;
        if (t) this.started.set(d.id as string, Date.parse(t));
        const m = (d.metrics as MetricLine[]).at(-1);
        if (m) this.last.set(d.id as string, m);
        this.infos.set(d.id as string, d.run as KernelRunInfo);
        break;
      }
      case 'metric':
        this.last.set(d.id as string, d.metric as MetricLine);
        this.bump(d.id as string, { step: (d.metric as MetricLine).step });
        break;
      case 'done':
        this.infos.set(d.id as string, d.run as KernelRunInfo);
        break;
    }
    const id = d.id as string | undefined;
    if (id) for (const f of this.followers.get(id) ?? []) f(d);
    this.changed();
  }

  private add(r: KernelRunInfo): void {
    const known = this.infos.has(r.id);
    this.infos.set(r.id, r);
    if (!this.started.has(r.id)) this.started.set(r.id, Date.now());
    // Follow live runs so the panel sees their steps; the first follow also brings the start time.
    if (r.live && !known) this.comm.send({ type: 'follow', id: r.id });
  }

  private bump(id: string, p: Partial<KernelRunInfo>): void {
    const i = this.infos.get(id);
    if (i) this.infos.set(id, { ...i, ...p });
  }

  /** Streams one run's messages (snapshot, metric, event, done) to `fn` until the returned function is called. */
  follow(id: string, fn: Listener): () => void {
    let set = this.followers.get(id);
    if (!set) this.followers.set(id, (set = new Set()));
    set.add(fn);
    this.comm.send({ type: 'follow', id });
    return () => set!.delete(fn);
  }

  /** Cancels a run; `by` is who asked, recorded in the run's room and events. */
  cancel(id: string, by: string): void {
    this.comm.send({ type: 'cancel', id, by });
  }

  dispose(): void {
    if (!this.comm.isDisposed) this.comm.close();
  }
}

/** Folders scanned for run directories, relative to the server root, besides each open notebook's `runs/`. */
const RUN_FOLDERS = ['runs', 'notebooks/runs'];

/**
 * The "Runs" side panel: run directories in the workspace, live runs in `lathe` kernels (through their
 * `lathe.runs` comm). Click a run to open its chart; select several to compare; cancel live runs.
 */
export class RunsPanel extends Widget {
  private workspace: RunRow[] = [];
  private readonly kernels = new Map<string, KernelRuns>();
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
        k.dispose();
        k.kernel.dispose();
        this.kernels.delete(id);
      }
    for (const [id, model] of running)
      if (!this.kernels.has(id)) {
        const conn = this.app.serviceManager.kernels.connectTo({ model, handleComms: true });
        this.kernels.set(id, new KernelRuns(conn, () => this.render()));
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

  private async readJson(path: string): Promise<Record<string, unknown> | null> {
    try {
      const m = await this.app.serviceManager.contents.get(path, { content: true, format: 'text', type: 'file' });
      return JSON.parse(m.content as string) as Record<string, unknown>;
    } catch {
      return null;
    }
  }

  private async readText(path: string): Promise<string> {
    try {
      const m = await this.app.serviceManager.contents.get(path, { content: true, format: 'text', type: 'file' });
      return m.content as string;
    } catch {
      return '';
    }
  }

  /** Rescans the workspace's run folders. */
  async refresh(): Promise<void> {
    const rows: RunRow[] = [];
    const listings = new Map<string, Set<string>>();
    const exists = async (path: string): Promise<boolean> => {
      // Look a folder up in its parent's listing first: asking for a missing one is a 404 in the console.
      const parent = path.split('/').slice(0, -1).join('/');
      if (parent && !(await exists(parent))) return false;
      if (!listings.has(parent)) {
        try {
          const m = await this.app.serviceManager.contents.get(parent, { content: true });
          listings.set(
            parent,
            new Set(
              (m.content as { path: string; type: string }[]).filter((i) => i.type === 'directory').map((i) => i.path),
            ),
          );
        } catch {
          listings.set(parent, new Set());
        }
      }
      return listings.get(parent)!.has(path);
    };
    for (const folder of this.folders()) {
      if (!(await exists(folder))) continue;
      let listing;
      try {
        listing = await this.app.serviceManager.contents.get(folder, { content: true });
      } catch {
        continue;
      }
      for (const item of (listing.content as { type: string; path: string }[]) ?? []) {
        if (item.type !== 'directory') continue;
        const prev = this.workspace.find((r) => r.key === item.path);
        // Finished runs do not change: reuse their row instead of reading their files again.
        if (prev && prev.status !== 'running' && prev.status !== 'starting') {
          rows.push(prev);
          continue;
        }
        const lock = await this.readJson(`${item.path}/recipe.lock.json`);
        if (!lock) continue;
        const summary = await this.readJson(`${item.path}/summary.json`);
        const metrics = summary ? [] : parseMetrics(await this.readText(`${item.path}/metrics.jsonl`));
        const events = (await this.readText(`${item.path}/events.jsonl`))
          .split('\n')
          .filter(Boolean)
          .slice(0, 3)
          .map((l) => {
            try {
              return JSON.parse(l) as { type?: string; time?: string };
            } catch {
              return {};
            }
          });
        rows.push(rowFromDir(item.path, { lock, summary, metrics, events }));
      }
    }
    this.workspace = rows;
    this.render();
  }

  private kernelRows(): RunRow[] {
    const out: RunRow[] = [];
    for (const [kid, k] of this.kernels)
      for (const info of k.infos.values())
        out.push(rowFromKernel(info, kid, this.serverRoot, k.last.get(info.id), k.started.get(info.id)));
    return out;
  }

  private render(): void {
    this.rows = mergeRows(this.workspace, this.kernelRows());
    const t = this.table;
    t.replaceChildren();
    const head = t.createTHead().insertRow();
    for (const h of ['', 'run', 'status', 'stage', 'step', 'loss', 'tok/s', 'elapsed', 'where', 'who']) {
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
        formatElapsed(elapsed),
        r.source,
      ];
      const first = tr.insertCell();
      first.append(box);
      for (const c of cells) tr.insertCell().textContent = c;
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
    const k = r.kernelId ? this.kernels.get(r.kernelId) : undefined;
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
      const k = r.kernelId ? this.kernels.get(r.kernelId) : undefined;
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
            if (d.type === 'snapshot') p.metrics = [...(d.metrics as MetricLine[])];
            else if (d.type === 'metric') p.metrics.push(d.metric as MetricLine);
            const info = d.run as KernelRunInfo | undefined;
            if (info) Object.assign(p, { status: info.status, step: info.step });
            if (d.type === 'metric') p.step = (d.metric as MetricLine).step;
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
          metrics: parseMetrics(await this.readText(`${r.dir}/metrics.jsonl`)),
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
      k.dispose();
      k.kernel.dispose();
    }
    super.dispose();
  }
}
