/** Options of {@link formatTable}. */
export interface TableOptions {
  /** Per column: 'left' or 'right'; by default numbers and numeric-looking strings go right, text left. */
  align?: ('left' | 'right' | undefined)[];
  /** Characters between columns (default two spaces). */
  gap?: string;
}

const NUMERIC = /^[-+]?(?:\d[\d,]*)?(?:\.\d+)?(?:e[-+]?\d+)?\s*(?:%|[kMGT]?B|×)?$/;

/** A number for a table: integers with thousands separators, others as given. */
export function formatCell(v: string | number): string {
  if (typeof v === 'string') return v;
  if (Number.isInteger(v)) return v.toLocaleString('en-US');
  return String(v);
}

/** A fixed-width text table: a header row, a rule, then rows; numbers right-aligned. Add columns by adding cells. */
export function formatTable(headers: string[], rows: (string | number)[][], opts: TableOptions = {}): string {
  const cols = Math.max(headers.length, ...rows.map((r) => r.length));
  const cells = rows.map((r) => Array.from({ length: cols }, (_, i) => (r[i] === undefined ? '' : formatCell(r[i]!))));
  const head = Array.from({ length: cols }, (_, i) => headers[i] ?? '');
  const width = head.map((h, i) => Math.max(h.length, ...cells.map((r) => r[i]!.length)));
  const right = head.map((_, i) => {
    const a = opts.align?.[i];
    if (a) return a === 'right';
    const col = rows.map((r) => r[i]).filter((v) => v !== undefined && v !== '');
    return col.length > 0 && col.every((v) => typeof v === 'number' || NUMERIC.test(v as string));
  });
  const gap = opts.gap ?? '  ';
  const line = (r: string[]): string =>
    r
      .map((c, i) => (right[i] ? c.padStart(width[i]!) : c.padEnd(width[i]!)))
      .join(gap)
      .trimEnd();
  return [line(head), width.map((w) => '-'.repeat(w)).join(gap), ...cells.map(line)].join('\n');
}
