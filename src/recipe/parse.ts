import { extname } from 'node:path';
import YAML, { LineCounter } from 'yaml';
import { LatheError } from '../errors.js';

/** Parses recipe text (JSON or YAML); syntax errors name file:line. */
export function parseRecipeText(text: string, file: string): unknown {
  const isJson = extname(file).toLowerCase() === '.json';
  if (isJson) {
    try {
      return JSON.parse(text);
    } catch (e) {
      // JSON.parse gives no line; YAML (a superset of JSON) locates the same fault.
      const lc = new LineCounter();
      const doc = YAML.parseDocument(text, { lineCounter: lc, prettyErrors: false });
      const line = doc.errors.length ? lc.linePos(doc.errors[0]!.pos[0]).line : 1;
      throw new LatheError(`${file}:${line}: invalid JSON: ${(e as Error).message.split('\n')[0]}`);
    }
  }
  const lc = new LineCounter();
  const doc = YAML.parseDocument(text, { lineCounter: lc, prettyErrors: false });
  if (doc.errors.length) {
    const e = doc.errors[0]!;
    const { line } = lc.linePos(e.pos[0]);
    throw new LatheError(`${file}:${line}: invalid YAML: ${e.message.split('\n')[0]}`);
  }
  return doc.toJS();
}
