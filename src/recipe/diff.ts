/** One changed field between two recipes. */
export interface RecipeChange {
  /** Dotted path, e.g. `model.dim` or `data.sources[0].weight`. */
  path: string;
  kind: 'changed' | 'added' | 'removed';
  before?: unknown;
  after?: unknown;
}

/** Field-by-field difference of two plain-data recipes (arrays compared by index). */
export function diffRecipes(a: unknown, b: unknown, path = ''): RecipeChange[] {
  if (isObject(a) && isObject(b)) {
    const keys = [...new Set([...Object.keys(a), ...Object.keys(b)])].sort();
    return keys.flatMap((k) => {
      const p = path ? `${path}.${k}` : k;
      if (!(k in a) || a[k] === undefined)
        return b[k] === undefined ? [] : [{ path: p, kind: 'added' as const, after: b[k] }];
      if (!(k in b) || b[k] === undefined) return [{ path: p, kind: 'removed' as const, before: a[k] }];
      return diffRecipes(a[k], b[k], p);
    });
  }
  if (Array.isArray(a) && Array.isArray(b)) {
    const out: RecipeChange[] = [];
    for (let i = 0; i < Math.max(a.length, b.length); i++) {
      const p = `${path}[${i}]`;
      if (i >= a.length) out.push({ path: p, kind: 'added', after: b[i] });
      else if (i >= b.length) out.push({ path: p, kind: 'removed', before: a[i] });
      else out.push(...diffRecipes(a[i], b[i], p));
    }
    return out;
  }
  return Object.is(a, b) ? [] : [{ path, kind: 'changed', before: a, after: b }];
}

function isObject(v: unknown): v is Record<string, unknown> {
  return !!v && typeof v === 'object' && !Array.isArray(v);
}

/** Human-readable diff lines: `model.dim: 128 → 256`. */
export function formatDiff(changes: RecipeChange[]): string {
  if (!changes.length) return '(no differences)';
  const j = (v: unknown) => JSON.stringify(v);
  return changes
    .map((c) =>
      c.kind === 'changed'
        ? `~ ${c.path}: ${j(c.before)} → ${j(c.after)}`
        : c.kind === 'added'
          ? `+ ${c.path}: ${j(c.after)}`
          : `- ${c.path}: ${j(c.before)}`,
    )
    .join('\n');
}
