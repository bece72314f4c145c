import { sourceName } from '../recipe/lock.js';
import type { ResolvedRecipe } from '../recipe/schema.js';
import { Cleaner, copyCleanCounts, diffCleanCounts, emptyCleanCounts, type CleanCounts } from './clean.js';
import { resolveSourceFiles } from './files.js';
import { readSource, type Rejection } from './sources.js';
import { formatTable } from './table.js';

/** How many rejections a scan keeps in full (all are counted). */
export const MAX_KEPT_REJECTIONS = 1000;

/** One source's scan. */
export interface SourceScan {
  source: string;
  /** Files the source resolved to. */
  files: number;
  /** Docs kept after cleaning. */
  docs: number;
  /** UTF-8 bytes of the kept docs' text. */
  bytes: number;
  /** Malformed lines skipped (onError: skip). */
  rejected: number;
  /** True when maxDocsPerSource stopped reading early. */
  truncated: boolean;
  /** What cleaning did to this source's docs. */
  clean: CleanCounts;
}

/** What reading and cleaning a recipe's data found. */
export interface ScanReport {
  sources: SourceScan[];
  totals: { files: number; docs: number; bytes: number; rejected: number; clean: CleanCounts };
  /** The first MAX_KEPT_REJECTIONS rejections; `totals.rejected` counts them all. */
  rejections: Rejection[];
}

/**
 * Reads and cleans every source of a recipe (one Cleaner across sources, so cross-source duplicates count) and
 * reports per source. onError 'fail' throws DataError at the first malformed line.
 */
export async function scanData(recipe: ResolvedRecipe, baseDir: string, opts: { maxDocsPerSource?: number } = {}): Promise<ScanReport> {
  const cleaner = new Cleaner(recipe.data.clean, recipe.seed);
  const rejections: Rejection[] = [];
  const sources: SourceScan[] = [];
  const max = opts.maxDocsPerSource ?? Infinity;
  for (const [i, src] of recipe.data.sources.entries()) {
    const name = sourceName(recipe, i);
    const files = await resolveSourceFiles(src, baseDir, `data.sources[${i}]`);
    const s: SourceScan = { source: name, files: files.length, docs: 0, bytes: 0, rejected: 0, truncated: false, clean: emptyCleanCounts() };
    const onReject = (r: Rejection): void => {
      s.rejected++;
      if (rejections.length < MAX_KEPT_REJECTIONS) rejections.push(r);
    };
    const before = copyCleanCounts(cleaner.counts);
    let read = 0;
    if (max > 0) {
      for await (const doc of readSource(src, files, { source: name, onError: recipe.data.onError, onReject })) {
        const res = cleaner.clean(doc);
        if ('doc' in res) {
          s.docs++;
          s.bytes += Buffer.byteLength(res.doc.text, 'utf8');
        }
        if (++read >= max) {
          s.truncated = true;
          break;
        }
      }
    } else s.truncated = true;
    s.clean = diffCleanCounts(cleaner.counts, before);
    sources.push(s);
  }
  const totals = {
    files: sources.reduce((a, s) => a + s.files, 0),
    docs: sources.reduce((a, s) => a + s.docs, 0),
    bytes: sources.reduce((a, s) => a + s.bytes, 0),
    rejected: sources.reduce((a, s) => a + s.rejected, 0),
    clean: copyCleanCounts(cleaner.counts),
  };
  return { sources, totals, rejections };
}

/** The scan as table columns and rows (one per source, then a total row), for callers that add columns. */
export function scanTable(report: ScanReport): { headers: string[]; rows: (string | number)[][] } {
  const headers = ['source', 'files', 'docs', 'bytes', 'rejected', 'too short', 'too long', 'exact dup', 'near dup', 'pii'];
  const row = (name: string, s: { files: number; docs: number; bytes: number; rejected: number; clean: CleanCounts }): (string | number)[] => [
    name,
    s.files,
    s.docs,
    s.bytes,
    s.rejected,
    s.clean.tooShort,
    s.clean.tooLong,
    s.clean.exactDuplicates,
    s.clean.nearDuplicates,
    Object.values(s.clean.pii).reduce((a, b) => a + b, 0),
  ];
  const rows = report.sources.map((s) => row(s.truncated ? `${s.source} (first docs only)` : s.source, s));
  if (report.sources.length > 1) rows.push(row('total', report.totals));
  return { headers, rows };
}

/** The scan as text: the per-source table, cleaning and PII counts, then rejected lines as `file:line: reason`. */
export function formatScan(report: ScanReport): string {
  const { headers, rows } = scanTable(report);
  const c = report.totals.clean;
  const out = [
    formatTable(headers, rows),
    '',
    `cleaning: ${c.docsIn.toLocaleString('en-US')} docs read, ${c.docsOut.toLocaleString('en-US')} kept; ${c.nfcChanged} NFC-normalized; ${c.controlCharsRemoved} control characters removed`,
    `PII replaced: ${Object.entries(c.pii)
      .map(([k, v]) => `${k} ${v}`)
      .join(', ')}`,
  ];
  const n = report.totals.rejected;
  out.push(`rejected lines: ${n}`);
  for (const r of report.rejections) out.push(`  ${r.file}:${r.line}: ${r.reason}`);
  if (n > report.rejections.length) out.push(`  … and ${n - report.rejections.length} more`);
  return out.join('\n');
}
