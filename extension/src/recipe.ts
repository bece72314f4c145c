// Pure logic of the recipe card: foldable sections and the highlighted diff.

/** One changed field, as the core's `recipe.diff(a, b)` reports it. */
export interface RecipeChange {
  path: string;
  kind: 'changed' | 'added' | 'removed';
  before?: unknown;
  after?: unknown;
}

/** `application/vnd.lathe.recipe+json`. A diff card carries `diff` (and no single recipe). */
export interface RecipePayload {
  version?: number;
  name?: string | null;
  stage?: string;
  file?: string | null;
  recipe?: Record<string, unknown>;
  resolved?: Record<string, unknown>;
  diff?: { a: string; b: string; changes: RecipeChange[] };
}

export interface Section {
  title: string;
  rows: { path: string; value: string; default: boolean }[];
}

const ORDER = [
  'stage',
  'name',
  'from',
  'seed',
  'backend',
  'data',
  'tokenizer',
  'model',
  'train',
  'judge',
  'reward',
  'eval',
  'gates',
  'stages',
];

/** Scalars and short arrays print as they are; the rest as compact JSON. */
export function formatValue(v: unknown): string {
  if (typeof v === 'string') return v;
  if (typeof v === 'number') return Number.isInteger(v) || Math.abs(v) >= 1e-3 ? String(v) : v.toExponential(2);
  return JSON.stringify(v);
}

function flatten(v: unknown, path: string, out: [string, unknown][]): void {
  if (v && typeof v === 'object' && !Array.isArray(v) && Object.keys(v).length) {
    for (const [k, c] of Object.entries(v)) flatten(c, path ? `${path}.${k}` : k, out);
  } else if (Array.isArray(v) && v.some((x) => x && typeof x === 'object')) {
    v.forEach((x, i) => flatten(x, `${path}[${i}]`, out));
  } else out.push([path, v]);
}

/**
 * Sections of the card: top-level scalars under "recipe", then one per object field (data, model,
 * train, …), each row marked when its value comes from a default (present in `resolved` only).
 */
export function sections(p: RecipePayload): Section[] {
  const shown = p.resolved ?? p.recipe ?? {};
  const written = new Set<string>();
  const w: [string, unknown][] = [];
  flatten(p.recipe ?? {}, '', w);
  for (const [k] of w) written.add(k);
  const keys = Object.keys(shown).sort(
    (a, b) => (ORDER.indexOf(a) + 1 || 99) - (ORDER.indexOf(b) + 1 || 99) || a.localeCompare(b),
  );
  const top: Section = { title: 'recipe', rows: [] };
  const out: Section[] = [top];
  for (const k of keys) {
    const v = shown[k];
    if (v && typeof v === 'object' && !Array.isArray(v)) {
      const rows: [string, unknown][] = [];
      flatten(v, k, rows);
      out.push({
        title: k,
        rows: rows.map(([path, val]) => ({
          path: path.slice(k.length + 1) || k,
          value: formatValue(val),
          default: !written.has(path),
        })),
      });
    } else if (Array.isArray(v) && v.some((x) => x && typeof x === 'object')) {
      const rows: [string, unknown][] = [];
      flatten(v, k, rows);
      out.push({
        title: k,
        rows: rows.map(([path, val]) => ({
          path: path.slice(k.length),
          value: formatValue(val),
          default: !written.has(path),
        })),
      });
    } else top.rows.push({ path: k, value: formatValue(v), default: !written.has(k) });
  }
  return out.filter((s) => s.rows.length);
}

export interface DiffRow {
  path: string;
  kind: RecipeChange['kind'];
  before: string;
  after: string;
  /** The section the field belongs to (its first path segment), for grouping. */
  section: string;
}

/** Diff rows grouped by section, in recipe order, with values printed. */
export function diffRows(changes: readonly RecipeChange[]): DiffRow[] {
  const rows = changes.map((c) => ({
    path: c.path,
    kind: c.kind,
    before: c.kind === 'added' ? '' : formatValue(c.before),
    after: c.kind === 'removed' ? '' : formatValue(c.after),
    section: c.path.split(/[.[]/)[0] ?? '',
  }));
  const rank = (s: string) => ORDER.indexOf(s) + 1 || 99;
  return rows.sort((a, b) => rank(a.section) - rank(b.section) || a.path.localeCompare(b.path));
}
