import { createReadStream } from 'node:fs';
import { extname } from 'node:path';
import { parse as csvParse, type CsvError } from 'csv-parse';
import { DataError, LatheError } from '../errors.js';
import type { SourceConfig } from '../recipe/schema.js';

/** One chat turn in Mistral fine-tuning format; weight 0 excludes an assistant turn from the loss. */
export interface ChatMessage {
  role: 'system' | 'user' | 'assistant' | 'tool';
  content: string;
  weight?: number;
}

/** One document read from a source, located by file and 1-based line. */
export interface Doc {
  text: string;
  source: string;
  file: string;
  line: number;
  /** Set for chat rows; `text` is then the contents joined with "\n". */
  messages?: ChatMessage[];
  /** The whole parsed JSONL object or CSV record (column name to value). */
  row?: Record<string, unknown>;
}

/** A malformed input that was skipped (onError: skip). */
export interface Rejection {
  source: string;
  file: string;
  line: number;
  reason: string;
}

/** Options of {@link readSource}. */
export interface ReadSourceOptions {
  /** Source name put on every doc and rejection. */
  source: string;
  /** fail: throw DataError at the first malformed line; skip: report it through onReject and go on. */
  onError: 'skip' | 'fail';
  onReject?: (r: Rejection) => void;
  /** When false, JSONL/CSV rows without the text field pass with `text: ''` (later stages read `row`). Default true. */
  requireText?: boolean;
  /** Read chunk size in bytes (default 64 KiB); tests use small values to split characters across chunks. */
  highWaterMark?: number;
}

/** The roles a chat message may have. */
export const CHAT_ROLES = ['system', 'user', 'assistant', 'tool'] as const;

const NL = 0x0a;
const CR = 0x0d;
const DEFAULT_HWM = 64 << 10;
// Unclosed quotes would otherwise make csv-parse buffer the rest of the file.
const CSV_MAX_RECORD_CHARS = 64 << 20;

type LineSink = (buf: Uint8Array, start: number, end: number, lineNo: number) => void;

/** Per-file stats the line scanner reports when it ends. */
interface ScanEnd {
  bytes: number;
  lines: number;
}

/**
 * Streams a file's lines (split on \n, a trailing \r and a leading BOM removed) into `sink`, yielding after every
 * chunk so the caller can hand out what the sink produced; memory stays bounded by chunk size plus the longest line.
 */
async function* scanLines(file: string, hwm: number, sink: LineSink): AsyncGenerator<void, ScanEnd> {
  const stream = createReadStream(file, { highWaterMark: hwm });
  let carry: Buffer[] = [];
  let bytes = 0;
  let lineNo = 0;
  const emit = (buf: Uint8Array, start: number, end: number): void => {
    lineNo++;
    if (end > start && buf[end - 1] === CR) end--;
    if (lineNo === 1 && end - start >= 3 && buf[start] === 0xef && buf[start + 1] === 0xbb && buf[start + 2] === 0xbf)
      start += 3;
    sink(buf, start, end, lineNo);
  };
  try {
    for await (const chunk of stream as AsyncIterable<Buffer>) {
      bytes += chunk.length;
      let pos = 0;
      let nl = chunk.indexOf(NL, 0);
      while (nl !== -1) {
        if (carry.length) {
          carry.push(chunk.subarray(pos, nl));
          const joined = Buffer.concat(carry);
          carry = [];
          emit(joined, 0, joined.length);
        } else {
          emit(chunk, pos, nl);
        }
        pos = nl + 1;
        nl = chunk.indexOf(NL, pos);
      }
      if (pos < chunk.length) carry.push(pos === 0 ? chunk : chunk.subarray(pos));
      yield;
    }
    if (carry.length) {
      const joined = Buffer.concat(carry);
      carry = [];
      emit(joined, 0, joined.length);
      yield;
    }
  } catch (e) {
    // File system errors become user-facing; anything else is a bug and keeps its stack.
    if (typeof (e as NodeJS.ErrnoException).code === 'string' && !(e instanceof LatheError))
      throw new LatheError(`${file}: cannot read: ${(e as Error).message}`);
    throw e;
  } finally {
    stream.destroy();
  }
  return { bytes, lines: lineNo };
}

/** Index (0-based, relative to start) of the first byte that breaks UTF-8, or -1; only used to explain an error. */
export function firstInvalidUtf8(buf: Uint8Array, start = 0, end = buf.length): number {
  let i = start;
  while (i < end) {
    const b = buf[i]!;
    if (b < 0x80) {
      i++;
      continue;
    }
    // Continuation bytes a lead byte needs, and the smallest code point it may encode.
    const [need, min] =
      b >= 0xc2 && b <= 0xdf
        ? [1, 0x80]
        : b >= 0xe0 && b <= 0xef
          ? [2, 0x800]
          : b >= 0xf0 && b <= 0xf4
            ? [3, 0x10000]
            : [0, 0];
    if (!need) return i - start;
    if (i + need >= end) return i - start;
    let cp = b & (0x3f >> need);
    for (let k = 1; k <= need; k++) {
      const c = buf[i + k]!;
      if ((c & 0xc0) !== 0x80) return i - start;
      cp = (cp << 6) | (c & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return i - start;
    i += need + 1;
  }
  return -1;
}

/** True when bytes [start, end) are only ASCII whitespace. */
function isBlank(buf: Uint8Array, start: number, end: number): boolean {
  for (let i = start; i < end; i++) {
    const b = buf[i]!;
    if (b !== 0x20 && b !== 0x09 && b !== 0x0d && b !== 0x0b && b !== 0x0c) return false;
  }
  return true;
}

/** The format a file is read as. */
export function fileFormat(src: Pick<SourceConfig, 'format'>, file: string): 'txt' | 'jsonl' | 'csv' {
  if (src.format !== 'auto') return src.format;
  const ext = extname(file).toLowerCase();
  if (ext === '.txt') return 'txt';
  if (ext === '.jsonl' || ext === '.json') return 'jsonl';
  if (ext === '.csv') return 'csv';
  throw new LatheError(
    `${file}: cannot tell the format from the extension "${ext}"; use .txt, .jsonl, .json or .csv, or set the source's format`,
  );
}

function typeName(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'array';
  return typeof v;
}

/** Checks a chat row's messages; returns them typed, or the reason they are malformed. */
export function validateMessages(v: unknown): ChatMessage[] | string {
  if (!Array.isArray(v)) return `messages must be an array, got ${typeName(v)}`;
  if (v.length === 0) return 'messages is empty';
  const out: ChatMessage[] = [];
  for (let i = 0; i < v.length; i++) {
    const m = v[i] as unknown;
    if (typeof m !== 'object' || m === null || Array.isArray(m))
      return `messages[${i}] must be an object, got ${typeName(m)}`;
    const { role, content, weight } = m as Record<string, unknown>;
    if (role === undefined) return `messages[${i}].role is missing`;
    if (typeof role !== 'string' || !(CHAT_ROLES as readonly string[]).includes(role))
      return `messages[${i}].role ${JSON.stringify(role)} is not one of ${CHAT_ROLES.join(', ')}`;
    if (typeof content !== 'string') return `messages[${i}].content must be a string, got ${typeName(content)}`;
    const msg: ChatMessage = { role: role as ChatMessage['role'], content };
    if (weight !== undefined) {
      if (weight !== 0 && weight !== 1) return `messages[${i}].weight must be 0 or 1, got ${JSON.stringify(weight)}`;
      msg.weight = weight;
    }
    out.push(msg);
  }
  return out;
}

/**
 * Reads one source's files as documents, streamed with bounded memory. Malformed input is never dropped silently:
 * with onError 'fail' it throws DataError(file, line, reason) once the docs before that line are consumed; with
 * 'skip' it is reported through onReject, in file order with the docs.
 */
export function readSource(src: SourceConfig, files: string[], opts: ReadSourceOptions): AsyncGenerator<Doc> {
  return new FlatDocs(readItems(src, files, opts), opts);
}

/**
 * Like {@link readSource}, but one array of docs per read chunk (several times faster for short docs). A batch's
 * rejections are reported before it is yielded; in fail mode the docs before the bad line are yielded, then it throws.
 */
export async function* readSourceBatches(
  src: SourceConfig,
  files: string[],
  opts: ReadSourceOptions,
): AsyncGenerator<Doc[]> {
  for await (const items of readItems(src, files, opts)) {
    const docs: Doc[] = [];
    for (const it of items) {
      if (!(it instanceof Fault)) {
        docs.push(it);
        continue;
      }
      if (opts.onError === 'fail') {
        if (docs.length) yield docs;
        throw it.error();
      }
      opts.onReject?.(it.rejection(opts.source));
    }
    if (docs.length) yield docs;
  }
}

/** A malformed spot, kept in stream order with the docs around it. */
class Fault {
  constructor(
    readonly file: string,
    readonly line: number,
    readonly reason: string,
  ) {}
  error(): DataError {
    return new DataError(this.file, this.line, this.reason);
  }
  rejection(source: string): Rejection {
    return { source, file: this.file, line: this.line, reason: this.reason };
  }
}

type Item = Doc | Fault;

async function* readItems(src: SourceConfig, files: string[], opts: ReadSourceOptions): AsyncGenerator<Item[]> {
  const formats = files.map((f) => fileFormat(src, f)); // fail on an unknown extension before reading anything
  for (const [i, file] of files.entries()) {
    const fmt = formats[i]!;
    const failed = fmt === 'csv' ? yield* readCsv(src, file, opts) : yield* readLineFile(src, file, fmt, opts);
    if (failed) return; // fail mode: nothing after the first fault is read
  }
}

const DONE: IteratorReturnResult<void> = { value: undefined, done: true };

/**
 * Flattens batches into single docs. An async generator pays a few promise ticks per yield, which dominated reading
 * short lines; this hands out buffered docs as already-resolved promises.
 */
class FlatDocs implements AsyncGenerator<Doc, void, unknown> {
  private buf: Item[] = [];
  private i = 0;
  private finished = false;
  constructor(
    private readonly batches: AsyncGenerator<Item[]>,
    private readonly opts: ReadSourceOptions,
  ) {}

  [Symbol.asyncIterator](): this {
    return this;
  }

  next(): Promise<IteratorResult<Doc, void>> {
    while (this.i < this.buf.length) {
      const it = this.buf[this.i++]!;
      if (!(it instanceof Fault)) return Promise.resolve({ value: it, done: false });
      if (this.opts.onError === 'fail') {
        const err = it.error();
        return this.return().then(() => Promise.reject(err));
      }
      this.opts.onReject?.(it.rejection(this.opts.source));
    }
    if (this.finished) return Promise.resolve(DONE);
    return this.batches.next().then(
      (r) => {
        if (r.done) {
          this.finished = true;
          this.buf = [];
          return DONE;
        }
        this.buf = r.value;
        this.i = 0;
        return this.next();
      },
      (e: unknown) => {
        this.finished = true;
        this.buf = [];
        throw e;
      },
    );
  }

  async return(): Promise<IteratorResult<Doc, void>> {
    this.finished = true;
    this.buf = [];
    await this.batches.return(undefined);
    return DONE;
  }

  async throw(e: unknown): Promise<IteratorResult<Doc, void>> {
    await this.return();
    throw e;
  }
}

function utf8Reason(buf: Uint8Array, start: number, end: number): string {
  const at = firstInvalidUtf8(buf, start, end);
  return at >= 0
    ? `invalid UTF-8 (byte 0x${buf[start + at]!.toString(16).padStart(2, '0')} at byte ${at + 1} of the line)`
    : 'invalid UTF-8';
}

/** Reads a .txt or JSONL file; returns true when fail mode stopped it at a fault. */
async function* readLineFile(
  src: SourceConfig,
  file: string,
  fmt: 'txt' | 'jsonl',
  opts: ReadSourceOptions,
): AsyncGenerator<Item[], boolean> {
  const decoder = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });
  const source = opts.source;
  const requireText = opts.requireText ?? true;
  const failFast = opts.onError === 'fail';
  const field = src.field;
  const isJsonExt = extname(file).toLowerCase() === '.json';
  let pending: Item[] = [];
  let failed = false;
  let sawContent = false;
  const reject = (line: number, reason: string): void => {
    pending.push(new Fault(file, line, reason));
    if (failFast) failed = true;
  };

  // Paragraph / whole-file state: lines gathered so far, first line, and the first bad line inside them.
  let parts: string[] = [];
  let partsLine = 0;
  let badLine = 0;
  let badReason = '';
  const flushParts = (): void => {
    if (parts.length) {
      if (badLine) reject(badLine, badReason);
      else pending.push({ text: parts.join('\n'), source, file, line: partsLine });
    }
    parts = [];
    partsLine = 0;
    badLine = 0;
  };

  const decode = (buf: Uint8Array, start: number, end: number, lineNo: number): string | undefined => {
    try {
      return decoder.decode(buf.subarray(start, end));
    } catch {
      const reason = utf8Reason(buf, start, end);
      if (fmt === 'txt' && src.split !== 'line') {
        // The bad line spoils its whole paragraph/file; in skip mode report it when that doc is complete.
        if (failFast) reject(lineNo, reason);
        else if (!badLine) {
          badLine = lineNo;
          badReason = reason;
        }
        if (!partsLine) partsLine = lineNo;
        parts.push('');
      } else reject(lineNo, reason);
      return undefined;
    }
  };

  let sink: LineSink;
  if (fmt === 'jsonl') {
    sink = (buf, start, end, lineNo) => {
      if (failed || isBlank(buf, start, end)) return;
      sawContent = true;
      const s = decode(buf, start, end, lineNo);
      if (s === undefined) return;
      let obj: unknown;
      try {
        obj = JSON.parse(s);
      } catch (e) {
        let hint = '';
        if (isJsonExt && lineNo === 1 && /^\s*[[{]\s*$/.test(s))
          hint = ' (expected one JSON object per line, JSON Lines; this looks like a pretty-printed JSON file)';
        return reject(lineNo, `invalid JSON: ${(e as Error).message}${hint}`);
      }
      if (typeof obj !== 'object' || obj === null || Array.isArray(obj))
        return reject(lineNo, `expected a JSON object, got ${typeName(obj)}`);
      const row = obj as Record<string, unknown>;
      if (row.messages !== undefined) {
        const msgs = validateMessages(row.messages);
        if (typeof msgs === 'string') return reject(lineNo, msgs);
        let text = msgs[0]!.content;
        for (let k = 1; k < msgs.length; k++) text += '\n' + msgs[k]!.content;
        pending.push({ text, source, file, line: lineNo, messages: msgs, row });
        return;
      }
      const v = row[field];
      if (v === undefined) {
        if (!requireText) {
          pending.push({ text: '', source, file, line: lineNo, row });
          return;
        }
        const keys = Object.keys(row);
        return reject(
          lineNo,
          `missing field "${field}" (and no "messages"); fields present: ${keys.length ? keys.join(', ') : 'none'}`,
        );
      }
      if (typeof v !== 'string') return reject(lineNo, `field "${field}" must be a string, got ${typeName(v)}`);
      pending.push({ text: v, source, file, line: lineNo, row });
    };
  } else if (src.split === 'line') {
    sink = (buf, start, end, lineNo) => {
      if (failed || isBlank(buf, start, end)) return;
      sawContent = true;
      const s = decode(buf, start, end, lineNo);
      if (s !== undefined) pending.push({ text: s, source, file, line: lineNo });
    };
  } else if (src.split === 'paragraph') {
    sink = (buf, start, end, lineNo) => {
      if (failed) return;
      if (isBlank(buf, start, end)) return flushParts();
      sawContent = true;
      const s = decode(buf, start, end, lineNo);
      if (s === undefined) return;
      if (!partsLine) partsLine = lineNo;
      parts.push(s);
    };
  } else {
    // Whole file: keep blank lines inside, drop trailing ones.
    let blankRun = 0;
    sink = (buf, start, end, lineNo) => {
      if (failed) return;
      if (isBlank(buf, start, end)) {
        if (parts.length) blankRun++;
        return;
      }
      sawContent = true;
      const s = decode(buf, start, end, lineNo);
      if (s === undefined) return;
      for (; blankRun > 0; blankRun--) parts.push('');
      if (!partsLine) partsLine = 1;
      parts.push(s);
    };
  }

  const lines = scanLines(file, opts.highWaterMark ?? DEFAULT_HWM, sink);
  try {
    for (;;) {
      const step = await lines.next();
      if (step.done && !failed) {
        flushParts();
        if (!sawContent) reject(1, step.value.bytes === 0 ? 'file is empty' : 'file is empty (only blank lines)');
      }
      if (pending.length) {
        const out = pending;
        pending = [];
        yield out;
      }
      if (step.done || failed) return failed;
    }
  } finally {
    await lines.return({ bytes: 0, lines: 0 });
  }
}

/** Reads a CSV file; returns true when fail mode stopped it at a fault. */
async function* readCsv(src: SourceConfig, file: string, opts: ReadSourceOptions): AsyncGenerator<Item[], boolean> {
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
