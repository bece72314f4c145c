import { DataError } from '../errors.js';
import type { ChatMessage } from './messages.js';

// What the source readers produce: documents, and the faults (malformed spots) kept in order with them.

/** One document read from a source, located by file and 1-based line. */
export interface Doc {
  text: string;
  source: string;
  file: string;
  line: number;
  /** Set for chat rows; `text` is then each message's content and tool calls, joined with "\n". */
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
  /** Longest CSV record in characters (default 64 MiB), which bounds what an unclosed quote can buffer. */
  csvMaxRecordChars?: number;
}

/** A malformed spot, kept in stream order with the docs around it. */
export class Fault {
  constructor(
    readonly file: string,
    readonly line: number,
    readonly reason: string,
  ) {}
  /** The fault as the error fail mode throws. */
  error(): DataError {
    return new DataError(this.file, this.line, this.reason);
  }
  /** The fault as skip mode reports it. */
  rejection(source: string): Rejection {
    return { source, file: this.file, line: this.line, reason: this.reason };
  }
}

/** What a reader hands out: a doc, or a fault in its place. */
export type Item = Doc | Fault;
