/**
 * Splitting text on added tokens (special tokens and other whole-string tokens) before BPE,
 * following HF `AddedVocabulary`: leftmost-longest matching, first over tokens with
 * `normalized: false`, then over the remaining text with `normalized: true` tokens, honouring
 * `single_word`, `lstrip` and `rstrip`.
 */

/** An added token as stored in `tokenizer.json` `added_tokens`. */
export interface AddedToken {
  id: number;
  content: string;
  /** Special tokens are dropped by `decode(..., { skipSpecial: true })`. */
  special: boolean;
  /** Only match when not surrounded by word characters. */
  singleWord: boolean;
  /** Swallow whitespace on the left. */
  lstrip: boolean;
  /** Swallow whitespace on the right. */
  rstrip: boolean;
  /** Match (this token's normalized content) against normalized text, after the `normalized: false` tokens. */
  normalized: boolean;
}

/**
 * A span of the input: an added token (`id >= 0`) or plain text for BPE (`id === -1`).
 * `at` is where the token's own content starts (after any lstrip-ed whitespace); for text, `start`.
 */
export interface Piece {
  id: number;
  start: number;
  end: number;
  at: number;
}

// Rust regex's Unicode `\w` and `\s`, which HF uses for single_word and lstrip/rstrip.
const WORD_CHAR = /[\p{Alphabetic}\p{M}\p{Nd}\p{Pc}\p{Join_Control}]/u;
const SPACE_CHAR = /[\t-\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]/;

function escapeRegExp(s: string): string {
  return s.replace(/[\\^$.*+?()[\]{}|/-]/g, '\\$&');
}

/** A piece of normalized text for the pre-tokenizer (`id === -1`), or an added token. */
export interface NormalizedPiece {
  id: number;
  /** The normalized text ('' for a token). */
  text: string;
  /** Whether the piece starts at offset 0 of the input (for Metaspace `prepend_scheme: first`). */
  first: boolean;
  /** Offset in the input where this piece (or the part of the input it was normalized from) starts. */
  at: number;
}

function buildMatcher(contents: readonly string[]): RegExp | null {
  if (contents.length === 0) return null;
  // Longest first: at a given position JS alternation takes the first alternative that matches.
  const sorted = [...new Set(contents)].sort((a, b) => b.length - a.length);
  return new RegExp(sorted.map(escapeRegExp).join('|'), 'g');
}

function wordCharBefore(s: string, i: number): boolean {
  if (i <= 0) return false;
  const low = s.charCodeAt(i - 1);
  const start = low >= 0xdc00 && low <= 0xdfff && i >= 2 ? i - 2 : i - 1;
  return WORD_CHAR.test(String.fromCodePoint(s.codePointAt(start)!));
}

function wordCharAt(s: string, i: number): boolean {
  if (i >= s.length) return false;
  return WORD_CHAR.test(String.fromCodePoint(s.codePointAt(i)!));
}

/** Splits text on a fixed set of added tokens. */
export class AddedTokenSplitter {
  private readonly byContent = new Map<string, AddedToken>();
  private readonly byNormalizedContent = new Map<string, AddedToken>();
  private readonly rawMatcher: RegExp | null;
  private readonly normalizedMatcher: RegExp | null;
  private readonly normalizedContentMatcher: RegExp | null;

  /** `normalize`: the tokenizer's normalizer, which `normalized: true` tokens are matched after (HF `AddedVocabulary`). */
  constructor(
    tokens: readonly AddedToken[],
    private readonly normalize: ((text: string) => string) | null = null,
  ) {
    const usable = tokens.filter((t) => t.content.length > 0);
    for (const t of usable) this.byContent.set(t.content, t);
    const unique = [...this.byContent.values()];
    this.rawMatcher = buildMatcher(unique.filter((t) => !t.normalized).map((t) => t.content));
    const normalizedTokens = unique.filter((t) => t.normalized);
    this.normalizedMatcher = buildMatcher(normalizedTokens.map((t) => t.content));
    for (const t of normalizedTokens) {
      const n = normalize === null ? t.content : normalize(t.content);
      if (n.length > 0 && !this.byNormalizedContent.has(n)) this.byNormalizedContent.set(n, t);
    }
    this.normalizedContentMatcher = buildMatcher([...this.byNormalizedContent.keys()]);
  }

  /**
   * HF `extract_and_normalize`: splits on `normalized: false` tokens, normalizes each text piece,
   * then splits those on the (normalized) `normalized: true` tokens.
   */
  splitNormalized(text: string): NormalizedPiece[] {
    const out: NormalizedPiece[] = [];
    if (text.length === 0) return out; // HF drops the empty split before normalizing
    const raw: Piece[] =
      this.rawMatcher === null
        ? [{ id: -1, start: 0, end: text.length, at: 0 }]
        : this.findMatches(text, 0, text.length, this.rawMatcher, this.byContent);
    for (const p of raw) {
      if (p.id >= 0) {
        out.push({ id: p.id, text: '', first: p.start === 0, at: p.at });
        continue;
      }
      const piece = text.slice(p.start, p.end);
      const normalized = this.normalize === null ? piece : this.normalize(piece);
      if (this.normalizedContentMatcher === null) {
        if (normalized.length > 0) out.push({ id: -1, text: normalized, first: p.start === 0, at: p.start });
        continue;
      }
      for (const q of this.findMatches(
        normalized,
        0,
        normalized.length,
        this.normalizedContentMatcher,
        this.byNormalizedContent,
      )) {
        const first = p.start === 0 && q.start === 0;
        if (q.id >= 0) out.push({ id: q.id, text: '', first, at: p.start });
        else if (q.end > q.start) out.push({ id: -1, text: normalized.slice(q.start, q.end), first, at: p.start });
      }
    }
    return out;
  }

  /** Pieces covering `text` in order (an empty text gives no pieces), for a tokenizer without a normalizer. */
  split(text: string): Piece[] {
    const n = text.length;
    if (n === 0) return [];
    let pieces: Piece[] = [{ id: -1, start: 0, end: n, at: 0 }];
    if (this.rawMatcher !== null) pieces = this.findMatches(text, 0, n, this.rawMatcher, this.byContent);
    if (this.normalizedMatcher !== null) {
      const refined: Piece[] = [];
      for (const p of pieces) {
        if (p.id >= 0) refined.push(p);
        else refined.push(...this.findMatches(text, p.start, p.end, this.normalizedMatcher, this.byContent));
      }
      pieces = refined;
    }
    return pieces;
  }

  /** HF `find_matches` over `text[from, to)`, treated as a sentence of its own. */
  private findMatches(
    text: string,
    from: number,
    to: number,
    matcher: RegExp,
    tokens: ReadonlyMap<string, AddedToken>,
  ): Piece[] {
    const s = from === 0 && to === text.length ? text : text.slice(from, to);
    const out: Piece[] = [];
    let offset = 0;
    matcher.lastIndex = 0;
    for (let m = matcher.exec(s); m !== null; m = matcher.exec(s)) {
      const token = tokens.get(m[0])!;
      const at = m.index;
      let start = at;
      let stop = at + m[0].length;
      if (token.singleWord && (wordCharBefore(s, start) || wordCharAt(s, stop))) continue;
      if (token.lstrip) {
        while (start > 0 && SPACE_CHAR.test(s[start - 1]!)) start--;
        start = Math.max(start, offset);
      }
      if (token.rstrip) {
        while (stop < s.length && SPACE_CHAR.test(s[stop]!)) stop++;
        matcher.lastIndex = stop; // never let the next match overlap the swallowed whitespace
      }
      if (offset < start) out.push({ id: -1, start: from + offset, end: from + start, at: from + offset });
      out.push({ id: token.id, start: from + start, end: from + stop, at: from + at });
      offset = stop;
    }
    if (offset < s.length) out.push({ id: -1, start: from + offset, end: from + s.length, at: from + offset });
    return out;
  }
}
