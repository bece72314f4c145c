import type { IRenderMime } from '@jupyterlab/rendermime-interfaces';
import { Widget } from '@lumino/widgets';
import { mergeRoom, payloadRuns, type ComparePayload, type RunPayload } from './chart';
import { joinRoom, type RunRoom } from './room';
import { diffRows, sections, type RecipePayload } from './recipe';
import { RunChart } from './run-chart';

/** DESIGN contract MIME types. */
export const RUN_MIME = 'application/vnd.lathe.run+json';
export const RECIPE_MIME = 'application/vnd.lathe.recipe+json';

function el<K extends keyof HTMLElementTagNameMap>(tag: K, cls: string, text?: string): HTMLElementTagNameMap[K] {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

/** A run (or several, overlaid) as a live plotly chart; works from saved outputs with no kernel. */
export class RunRenderer extends RunChart implements IRenderMime.IRenderer {
  private snapshot: RunPayload[] = [];
  private room: RunRoom | null = null;
  private offRoom?: () => void;

  renderModel(model: IRenderMime.IMimeModel): Promise<void> {
    const data = model.data[RUN_MIME] as unknown as RunPayload | ComparePayload;
    this.snapshot = payloadRuns(data);
    const ref = this.snapshot.length === 1 ? this.snapshot[0]!.roomRef : undefined;
    // Follow the run's room: collaborators see every point live, and late joiners the whole curve.
    if (ref && !this.room) {
      this.room = joinRoom(ref);
      this.offRoom = this.room.onChange(() => void this.refresh());
    }
    return this.refresh();
  }

  private refresh(): Promise<void> {
    const room = this.room;
    if (room) {
      this.setPresence(room.presence(), room.refused);
      this.node.dataset.roomPoints = String(room.metrics().length);
      this.node.dataset.roomSynced = String(room.synced);
    }
    const runs =
      room && this.snapshot.length === 1
        ? [mergeRoom(this.snapshot[0]!, { metrics: room.metrics(), meta: room.meta() })]
        : this.snapshot;
    return this.setRuns(runs);
  }

  dispose(): void {
    this.offRoom?.();
    super.dispose();
  }
}

/** A recipe card with foldable sections, or the highlighted diff of two recipes. */
export class RecipeRenderer extends Widget implements IRenderMime.IRenderer {
  constructor() {
    super();
    this.addClass('lathe-RecipeCard');
  }

  renderModel(model: IRenderMime.IMimeModel): Promise<void> {
    const p = model.data[RECIPE_MIME] as unknown as RecipePayload;
    this.node.replaceChildren(p.diff ? renderDiff(p) : renderCard(p));
    return Promise.resolve();
  }
}

function renderCard(p: RecipePayload): HTMLElement {
  const root = el('div', 'lathe-RecipeCard-body');
  const title = el('div', 'lathe-RecipeCard-title', p.name ?? `${p.stage ?? ''} recipe`);
  if (p.stage) title.append(el('span', 'lathe-RecipeCard-stage', p.stage));
  root.append(title);
  if (p.file) root.append(el('div', 'lathe-RecipeCard-file', p.file));
  for (const s of sections(p)) {
    const d = el('details', 'lathe-RecipeCard-section');
    d.open = s.title !== 'eval' && s.rows.length <= 14;
    d.append(el('summary', '', `${s.title} (${s.rows.length})`));
    const t = el('table', '');
    for (const r of s.rows) {
      const tr = t.insertRow();
      if (r.default) tr.className = 'lathe-default';
      tr.append(el('td', 'lathe-key', r.path), el('td', 'lathe-value', r.value));
      if (r.default) tr.title = 'default value (not written in the recipe)';
    }
    d.append(t);
    root.append(d);
  }
  return root;
}

function renderDiff(p: RecipePayload): HTMLElement {
  const diff = p.diff!;
  const root = el('div', 'lathe-RecipeCard-body');
  root.append(el('div', 'lathe-RecipeCard-title', `${diff.a} → ${diff.b}`));
  const rows = diffRows(diff.changes);
  if (!rows.length) {
    root.append(el('div', 'lathe-RecipeCard-same', 'no differences'));
    return root;
  }
  const t = el('table', 'lathe-RecipeDiff');
  const head = t.createTHead().insertRow();
  for (const h of ['field', diff.a, diff.b]) head.append(el('th', '', h));
  const body = t.createTBody();
  let section = '';
  for (const r of rows) {
    if (r.section !== section) {
      section = r.section;
      const sr = body.insertRow();
      const td = el('td', 'lathe-RecipeDiff-section', section);
      td.colSpan = 3;
      sr.append(td);
    }
    const tr = body.insertRow();
    tr.className = `lathe-diff-${r.kind}`;
    tr.append(el('td', 'lathe-key', r.path), el('td', 'lathe-before', r.before), el('td', 'lathe-after', r.after));
  }
  root.append(t);
  return root;
}

const extensions: IRenderMime.IExtension[] = [
  {
    id: 'lathe-jupyterlab:run-renderer',
    // Below plotly's rank, so Lathe's chart wins when both are installed; plotly's stays the fallback.
    rank: -10,
    dataType: 'json',
    rendererFactory: { safe: true, mimeTypes: [RUN_MIME], createRenderer: () => new RunRenderer() },
  },
  {
    id: 'lathe-jupyterlab:recipe-renderer',
    rank: -10,
    dataType: 'json',
    rendererFactory: { safe: true, mimeTypes: [RECIPE_MIME], createRenderer: () => new RecipeRenderer() },
  },
];

export default extensions;
