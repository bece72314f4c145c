import { extname } from 'node:path';
import { LatheError } from '../errors.js';
import type { SourceConfig } from '../recipe/schema.js';
import { readCsv } from './csv-reader.js';
import { Fault, type Doc, type Item, type ReadSourceOptions } from './doc.js';
import { readLineFile } from './text-reader.js';

// A source's files read as one stream of docs, in file order, with malformed spots reported in place.

export type { Doc, Rejection, ReadSourceOptions } from './doc.js';
export { firstInvalidUtf8 } from './line-scanner.js';
export { CHAT_ROLES, validateMessages, type ChatMessage } from './messages.js';

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
