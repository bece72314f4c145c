import { parse as csvParse, type CsvError } from 'csv-parse';
import { LatheError } from '../errors.js';
import type { SourceConfig } from '../recipe/schema.js';
import { Fault, type Item, type ReadSourceOptions } from './doc.js';
import { DEFAULT_HWM, isBlank, scanLines, utf8Reason, type LineSink } from './line-scanner.js';

// The CSV reader: csv-parse fed line by line from the scanner, a doc per record, located by its first line.

// Unclosed quotes would otherwise make csv-parse buffer the rest of the file.
const CSV_MAX_RECORD_CHARS = 64 << 20;

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

  const onRecord = (rec: string[], lineEnd: number): void => {
    let nl = 0;
    for (const v of rec) for (let p = v.indexOf('\n'); p !== -1; p = v.indexOf('\n', p + 1)) nl++;
    const lineStart = lineEnd - nl;
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
    max_record_size: CSV_MAX_RECORD_CHARS,
    on_record: (rec: string[], ctx) => {
      if (!stopped) onRecord(rec, ctx.lines);
      return null;
    },
    on_skip: (err) => {
      if (!err || stopped) return undefined;
      if (!header) stopped = true;
      reject((err as CsvError & { lines?: number }).lines ?? 1, `invalid CSV: ${err.message}`);
      return undefined;
    },
  });
  parser.on('error', (e: Error) => (streamError ??= e));
  parser.resume(); // records are taken in on_record; nothing is read from the stream side
  const check = (): void => {
    if (streamError) throw new LatheError(`${file}: cannot parse CSV: ${streamError.message}`);
  };
  const feed = (s: string): void => {
    if (s && !stopped) parser.write(s); // processed synchronously: on_record has run when write returns
    check();
  };

  // csv-parse counts lines wrongly with \r\n; feeding it \n-terminated lines keeps its line numbers exact.
  let batch = '';
  let sawContent = false;
  const sink: LineSink = (buf, start, end, lineNo) => {
    if (stopped) return;
    if (!sawContent && !isBlank(buf, start, end)) sawContent = true;
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
        const ended = new Promise<void>((res) =>
          parser
            .once('end', res)
            .once('close', res)
            .once('error', () => res()),
        );
        parser.end();
        await ended;
        check();
        if (!sawContent) reject(1, step.value.bytes === 0 ? 'file is empty' : 'file is empty (only blank lines)');
        else if (header && records === 0 && !stopped) reject(2, 'the CSV has a header row but no records');
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
