// Line lookups in a TypeScript emit's source map, so stack traces name the user's cell line.

const B64 = new Map([...'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/'].map((c, i) => [c, i]));

/** Decodes one base64-VLQ segment into its numbers. */
function decodeSegment(seg: string): number[] {
  const out: number[] = [];
  let value = 0;
  let shift = 0;
  for (const c of seg) {
    const digit = B64.get(c);
    if (digit === undefined) throw new Error(`bad source map character ${c}`);
    value += (digit & 31) << shift;
    if (digit & 32) {
      shift += 5;
      continue;
    }
    out.push(value & 1 ? -(value >>> 1) : value >>> 1);
    value = 0;
    shift = 0;
  }
  return out;
}

/** Maps generated (line, column) to original (line, column), both 0-based. */
export class LineMap {
  // Per generated line: [generatedColumn, originalLine, originalColumn] triples, sorted by column.
  private readonly lines: [number, number, number][][] = [];

  /** Builds the map from a source map's `mappings` string (single source). */
  constructor(mappings: string) {
    let srcLine = 0;
    let srcCol = 0;
    for (const lineText of mappings.split(';')) {
      const segs: [number, number, number][] = [];
      let genCol = 0;
      for (const seg of lineText.split(',')) {
        if (!seg) continue;
        const v = decodeSegment(seg);
        genCol += v[0]!;
        if (v.length >= 4) {
          srcLine += v[2]!;
          srcCol += v[3]!;
          segs.push([genCol, srcLine, srcCol]);
        }
      }
      this.lines.push(segs);
    }
  }

  /** The original position of a generated one, or undefined where the line has no mapping. */
  original(line: number, column: number): { line: number; column: number } | undefined {
    const segs = this.lines[line];
    if (!segs?.length) return undefined;
    let best = segs[0]!;
    for (const s of segs) if (s[0] <= column) best = s;
    return { line: best[1], column: best[2] };
  }
}
