import { extname } from 'node:path';
import type { SourceConfig } from '../recipe/schema.js';
import { Fault, type Item, type ReadSourceOptions } from './doc.js';
import { DEFAULT_HWM, isBlank, scanLines, utf8Reason, type LineSink } from './line-scanner.js';
import { messageText, typeName, validateMessages } from './messages.js';

// The .txt reader (a doc per line, paragraph or file) and the JSONL reader (a doc per JSON object line).

/** Reads a .txt or JSONL file; returns true when fail mode stopped it at a fault. */
export async function* readLineFile(
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
        let text = messageText(msgs[0]!);
        for (let k = 1; k < msgs.length; k++) text += '\n' + messageText(msgs[k]!);
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
      if (!partsLine) partsLine = lineNo; // the first line with content, so offsets into the text count lines
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
