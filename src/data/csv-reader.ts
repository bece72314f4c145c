import { parse as csvParse, type CsvError } from 'csv-parse';
import { LatheError } from '../errors.js';
import type { SourceConfig } from '../recipe/schema.js';
import { Fault, type Item, type ReadSourceOptions } from './doc.js';
import { DEFAULT_HWM, isBlank, scanLines, utf8Reason, type LineSink } from './line-scanner.js';

// The CSV reader: csv-parse fed line by line from the scanner, a doc per record, located by its first line.

// Unclosed quotes would otherwise make csv-parse buffer the rest of the file.
const CSV_MAX_RECORD_CHARS = 64 << 20;
// Lost-line faults handed out per batch at the end of a file (a stray quote can swallow millions of lines).
const LOST_BATCH = 8192;

/** A parse error csv-parse reported (through on_skip) for a record it then skipped. */
interface ParseFault {
  line: number;
  code: string;
  message: string;
}

/** Why a malformed record failed, said from the line where it starts. */
function describeFault(e: ParseFault | undefined, maxRecord: number): string {
  if (!e) return 'invalid CSV: this record could not be parsed';
  if (e.code === 'CSV_QUOTE_NOT_CLOSED')
    return 'invalid CSV: a quote opened in this record is never closed (the file ends inside it)';
  if (e.code === 'CSV_MAX_RECORD_SIZE')
    return `invalid CSV: this record runs on past ${maxRecord} characters; a quote opened in it is likely never closed`;
  return `invalid CSV: ${e.message}`;
}

/**
 * Lines (and reasons) of the records a malformed record swallowed: `runs` are the unaccounted non-blank lines, in
 * order, and `errs` what csv-parse said about them. A line whose own parse error csv-parse named gets it; the first
 * line gets the error that broke the record; every other line is reported lost inside that record.
 */
function* lostFaults(runs: [number, number][], errs: ParseFault[], maxRecord: number): Generator<[number, string]> {
  if (!runs.length) return;
  const first = runs[0]![0];
  const own = new Map<number, ParseFault>();
  for (const e of errs)
    if (e.code !== 'CSV_QUOTE_NOT_CLOSED' && e.code !== 'CSV_MAX_RECORD_SIZE' && !own.has(e.line)) own.set(e.line, e);
  const lead = own.get(first) ?? errs[0];
  const why = describeFault(lead, maxRecord);
  for (const [a, b] of runs)
    for (let l = a; l <= b; l++) {
      const e = own.get(l);
      if (l === first) yield [l, why];
      else if (e) yield [l, describeFault(e, maxRecord)];
      else yield [l, `invalid CSV: record lost: this line was read into the malformed record at line ${first}`];
    }
}

/** Reads a CSV file; returns true when fail mode stopped it at a fault. */
export async function* readCsv(
  src: SourceConfig,
  file: string,
  opts: ReadSourceOptions,
): AsyncGenerator<Item[], boolean> {
  const decoder = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });
  const lenient = new TextDecoder('utf-8', { ignoreBOM: true });
  const source = opts.source;
  const requireText = opts.requireText ?? true;
  const failFast = opts.onError === 'fail';
  const field = src.field;
  const maxRecord = opts.csvMaxRecordChars ?? CSV_MAX_RECORD_CHARS;
  let pending: Item[] = [];
  let header: string[] | undefined;
  let col = -1;
  let stopped = false; // the header is unusable, or fail mode hit a fault: read no further
  let failed = false;
  let records = 0;
  // Lines with invalid UTF-8 that the parser has not passed yet; a record spanning one is rejected.
  const badLines: { line: number; reason: string }[] = [];

  const reject = (line: number, reason: string): void => {
    pending.push(new Fault(file, line, reason));
    if (failFast) failed = stopped = true;
  };

  // Every non-blank line is accounted for by a record (kept or rejected) or reported lost: a malformed quote can make
  // csv-parse swallow the lines after it into one skipped record. `open` holds the unaccounted lines as runs.
  const open: [number, number][] = [];
  let errors: ParseFault[] = [];
  let lost = 0;
  let dead = false; // csv-parse parses nothing after a record overruns max_record_size
  const markOpen = (lineNo: number): void => {
    const last = open.at(-1);
    if (last && last[1] === lineNo - 1) last[1] = lineNo;
    else open.push([lineNo, lineNo]);
  };
  /** Removes and returns the open runs before line `before`, and drops the open lines up to `through`. */
  const settle = (before: number, through: number): [number, number][] => {
    const gone: [number, number][] = [];
    while (open.length && open[0]![0] <= through) {
      const run = open[0]!;
      if (run[0] < before) gone.push([run[0], Math.min(run[1], before - 1)]);
      if (run[1] <= through) open.shift();
      else run[0] = through + 1;
    }
    return gone;
  };
  const reportLost = (runs: [number, number][], errs: ParseFault[]): void => {
    for (const f of lostFaults(runs, errs, maxRecord)) {
      lost++;
      reject(f[0], f[1]);
      if (failFast) return;
    }
  };

  const onRecord = (rec: string[], lineEnd: number): void => {
    let nl = 0;
    for (const v of rec) for (let p = v.indexOf('\n'); p !== -1; p = v.indexOf('\n', p + 1)) nl++;
    const lineStart = lineEnd - nl;
    const gone = settle(lineStart, lineEnd);
    if (gone.length) {
      const errs = errors;
      errors = [];
      reportLost(gone, errs);
      if (stopped) return;
    }
    while (badLines.length && badLines[0]!.line < lineStart) badLines.shift();
    if (badLines.length && badLines[0]!.line <= lineEnd) {
      const b = badLines.shift()!;
      if (!header) {
        stopped = true;
        return reject(b.line, `${b.reason} in the header row`);
      }
      return reject(b.line, b.reason);
    }
    if (!header) {
      header = rec;
      col = rec.indexOf(field);
      if (col < 0 && requireText) {
        stopped = true;
        reject(
          1,
          `column "${field}" not found; columns present: ${rec.length ? rec.map((c) => JSON.stringify(c)).join(', ') : 'none'}`,
        );
      }
      return;
    }
    records++;
    const row: Record<string, unknown> = {};
    for (let k = 0; k < header.length; k++) row[header[k]!] = rec[k];
    pending.push({ text: col >= 0 ? rec[col]! : '', source, file, line: lineStart, row });
  };

  let streamError: Error | undefined;
  const parser = csvParse({
    bom: true,
    skip_empty_lines: true,
    skip_records_with_error: true,
    max_record_size: maxRecord,
    on_record: (rec: string[], ctx) => {
      if (!stopped) onRecord(rec, ctx.lines);
      return null;
    },
    on_skip: (err) => {
      if (!err || stopped || dead) return undefined;
      const e = err as CsvError & { lines?: number };
      if (e.code === 'CSV_MAX_RECORD_SIZE') dead = true;
      errors.push({ line: e.lines ?? 1, code: e.code, message: e.message });
      // The malformed record starts at the first open line; fail mode and a broken header stop there.
      if (failFast || !header) {
        if (!header) stopped = true;
        const first = open[0]?.[0] ?? e.lines ?? 1;
        reject(first, lostFaults([[first, first]], errors, maxRecord).next().value![1]);
      }
      return undefined;
    },
  });
  parser.on('error', (e: Error) => (streamError ??= e));
  parser.resume(); // records are taken in on_record; nothing is read from the stream side
  const check = (): void => {
    if (streamError) throw new LatheError(`${file}: cannot parse CSV: ${streamError.message}`);
  };
  const feed = (s: string): void => {
    if (s && !stopped && !dead) parser.write(s); // processed synchronously: on_record has run when write returns
    check();
  };

  // csv-parse counts lines wrongly with \r\n; feeding it \n-terminated lines keeps its line numbers exact.
  let batch = '';
  let sawContent = false;
  const sink: LineSink = (buf, start, end, lineNo) => {
    if (stopped) return;
    if (!isBlank(buf, start, end)) {
      sawContent = true;
      markOpen(lineNo);
    }
    const bytes = buf.subarray(start, end);
    let s: string;
    try {
      s = decoder.decode(bytes);
    } catch {
      const reason = utf8Reason(buf, start, end);
      if (failFast) {
        feed(batch); // faults on earlier lines come first
        batch = '';
        if (!stopped) reject(lineNo, reason);
        return;
      }
      badLines.push({ line: lineNo, reason });
      s = lenient.decode(bytes);
    }
    batch += s + '\n';
  };

  const lines = scanLines(file, opts.highWaterMark ?? DEFAULT_HWM, sink);
  try {
    for (;;) {
      const step = await lines.next();
      feed(batch);
      batch = '';
      if (step.done && !stopped) {
        if (!dead) {
          const ended = new Promise<void>((res) =>
            parser
              .once('end', res)
              .once('close', res)
              .once('error', () => res()),
          );
          parser.end();
          await ended;
          check();
        }
        // What is still open at the end was swallowed by a malformed record; report it in bounded batches.
        for (const f of lostFaults(settle(Infinity, Infinity), errors, maxRecord)) {
          lost++;
          reject(f[0], f[1]);
          if (failFast) break;
          if (pending.length >= LOST_BATCH) {
            const out = pending;
            pending = [];
            yield out;
          }
        }
        errors = [];
        if (!sawContent) reject(1, step.value.bytes === 0 ? 'file is empty' : 'file is empty (only blank lines)');
        else if (header && records === 0 && !lost && !stopped) reject(2, 'the CSV has a header row but no records');
      }
      if (pending.length) {
        const out = pending;
        pending = [];
        yield out;
      }
      if (step.done || stopped) return failed;
    }
  } finally {
    await lines.return({ bytes: 0, lines: 0 });
    parser.destroy();
  }
}
