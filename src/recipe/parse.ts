import { extname } from 'node:path';
import YAML, { LineCounter, type Alias, type Document, type Node } from 'yaml';
import { LatheError } from '../errors.js';

/** Alias resolutions one anchor may cost (the yaml package's own default limit, maxAliasCount). */
export const MAX_ALIAS_EXPANSION = 100;

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
  checkAliases(doc, (offset) => `${file}:${lc.linePos(offset).line}`);
  try {
    return doc.toJS({ maxAliasCount: MAX_ALIAS_EXPANSION });
  } catch (e) {
    // checkAliases catches what we know of; anything else the yaml package refuses is still the input's fault.
    throw new LatheError(`${file}:1: invalid YAML: ${(e as Error).message.split('\n')[0]}`);
  }
}

/**
 * Refuses aliases that cannot become plain data, naming the alias's file:line: one with no anchor before it, one
 * inside the node it names (a cycle), and the one where the uses of an anchor, times the alias references inside it,
 * pass {@link MAX_ALIAS_EXPANSION} (nested aliases grow exponentially: the "billion laughs" resource-exhaustion attack).
 */
function checkAliases(doc: Document, at: (offset: number) => string): void {
  const aliases: Alias[] = [];
  YAML.visit(doc, { Alias: (_, node) => void aliases.push(node) });
  if (!aliases.length) return;
  const expansion = new Map<Node, number>();
  // Alias references that copying `node` makes (each nested alias counts, as it is copied again).
  const refsIn = (node: Node): number => {
    const known = expansion.get(node);
    if (known !== undefined) return known;
    let n = 0;
    expansion.set(node, 0); // a cycle is refused before it is counted
    YAML.visit(node, {
      Alias: (_, a) => {
        const target = a.resolve(doc);
        n += 1 + (target ? refsIn(target) : 0);
        if (n > MAX_ALIAS_EXPANSION) return YAML.visit.BREAK;
        return undefined;
      },
    });
    expansion.set(node, n);
    return n;
  };
  for (const a of aliases) {
    const start = a.range?.[0] ?? 0;
    const target = a.resolve(doc);
    if (!target) throw new LatheError(`${at(start)}: invalid YAML: alias *${a.source} names no anchor before it`);
    const [from, , to] = target.range ?? [0, 0, 0];
    if (start >= from && start < to)
      throw new LatheError(
        `${at(start)}: invalid YAML: alias *${a.source} is inside the node it names (a cycle); a recipe must be plain data`,
      );
  }
  // As the yaml package counts: each use of an anchor costs the alias references inside it (at least 1).
  const uses = new Map<Node, number>();
  for (const a of aliases) {
    const target = a.resolve(doc)!;
    const n = (uses.get(target) ?? 0) + 1;
    uses.set(target, n);
    const nested = refsIn(target);
    if (n * Math.max(1, nested) > MAX_ALIAS_EXPANSION)
      throw new LatheError(
        `${at(a.range?.[0] ?? 0)}: invalid YAML: alias *${a.source}: ` +
          (nested
            ? `${n} uses of an anchor that holds ${nested} alias references make ${n * nested} alias copies, over the limit of ${MAX_ALIAS_EXPANSION} (aliases nested in aliases grow exponentially, as in a "billion laughs" attack)`
            : `${n} uses of one anchor, over the limit of ${MAX_ALIAS_EXPANSION} (a guard against alias bombs)`) +
          '; write the values out',
      );
  }
}
