/**
 * The regexes of HF `tokenizers` (Split pre-tokenizer, Replace normalizer and decoder) run as
 * JavaScript RegExps. HF compiles them with Oniguruma (Ruby-like syntax, Unicode 16), so the
 * pattern is translated rather than passed through:
 *
 * - `\s`, `\w`, `\d`, `\h`, `\b`, `.`, `^`, `$`, `\A`, `\z`, `\Z` get Oniguruma's meaning (`\s` has
 *   U+0085 and not U+FEFF, `.` stops only at `\n`, `^`/`$` are line anchors, ...);
 * - `\p{..}` keeps Oniguruma's Unicode 16 view (see onig-unicode.ts);
 * - `(?i:..)` and `(?i)` (which JavaScript lacks before ES2025) become case-folded classes;
 * - atomic groups `(?>..)` and possessive `*+ ++ ?+` become `(?=(?<g>..))\k<g>`, which is exact.
 *
 * What cannot be reproduced (backreferences, subroutine calls, `\K`, `\G`, `\R`, `\X`, absent
 * groups, conditionals, `(?x)`, POSIX brackets, case-insensitive multi-character folds) is refused
 * with the offset in the pattern. Matching follows the `onig` crate's `find_iter`: an empty match
 * right after the previous match is skipped.
 */
import { classBody, LL_IN_HF_LO_IN_JS, NEW_IN_UNICODE_17 } from './onig-unicode.js';

/** Tiles of a string: [start, end, isMatch] in UTF-16 indices, covering it in order. */
export type MatchTiles = Array<[number, number, boolean]>;

/** Something HF `find_matches` can run: a regex or a literal string. */
export interface Matcher {
  /** HF `Pattern::find_matches`: the text as alternating non-matches and matches (empty text: one empty non-match). */
  findMatches(text: string): MatchTiles;
}

const NEW_CLASS = `[${classBody(NEW_IN_UNICODE_17)}]`;
/** Oniguruma's `\s` (Unicode White_Space). */
const SPACE_CLASS = '[\\t-\\r\\x20\\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]';
/** Oniguruma's `\w`: Alphabetic, marks, decimal digits, connectors, and Latin-1's ² ³ ¹ ¼ ½ ¾. */
const WORD_CLASS = `[[\\p{Alphabetic}\\p{M}\\p{Nd}\\p{Pc}\\xb2\\xb3\\xb9\\xbc-\\xbe]--${NEW_CLASS}]`;
const DIGIT_CLASS = `[\\p{Nd}--${NEW_CLASS}]`;
const HEX_CLASS = '[0-9a-fA-F]';

const GENERAL_CATEGORIES = [
  ['L', 'Letter'],
  ['LC', 'Cased_Letter'],
  ['Lu', 'Uppercase_Letter'],
  ['Ll', 'Lowercase_Letter'],
  ['Lt', 'Titlecase_Letter'],
  ['Lm', 'Modifier_Letter'],
  ['Lo', 'Other_Letter'],
  ['M', 'Mark', 'Combining_Mark'],
  ['Mn', 'Nonspacing_Mark'],
  ['Mc', 'Spacing_Mark'],
  ['Me', 'Enclosing_Mark'],
  ['N', 'Number'],
  ['Nd', 'Decimal_Number', 'digit'],
  ['Nl', 'Letter_Number'],
  ['No', 'Other_Number'],
  ['P', 'Punctuation', 'punct'],
  ['Pc', 'Connector_Punctuation'],
  ['Pd', 'Dash_Punctuation'],
  ['Ps', 'Open_Punctuation'],
  ['Pe', 'Close_Punctuation'],
  ['Pi', 'Initial_Punctuation'],
  ['Pf', 'Final_Punctuation'],
  ['Po', 'Other_Punctuation'],
  ['S', 'Symbol'],
  ['Sm', 'Math_Symbol'],
  ['Sc', 'Currency_Symbol'],
  ['Sk', 'Modifier_Symbol'],
  ['So', 'Other_Symbol'],
  ['Z', 'Separator'],
  ['Zs', 'Space_Separator'],
  ['Zl', 'Line_Separator'],
  ['Zp', 'Paragraph_Separator'],
  ['C', 'Other'],
  ['Cc', 'Control', 'cntrl'],
  ['Cf', 'Format'],
  ['Cs', 'Surrogate'],
  ['Co', 'Private_Use'],
  ['Cn', 'Unassigned'],
] as const;

/** Oniguruma matches property names loosely: case, spaces, `_` and `-` do not count. */
const loose = (name: string): string => name.replace(/[\s_-]/g, '').toLowerCase();

const CATEGORY_BY_LOOSE_NAME = new Map<string, string>();
for (const names of GENERAL_CATEGORIES) for (const n of names) CATEGORY_BY_LOOSE_NAME.set(loose(n), names[0]);

// Sets that gain the characters new in Unicode 17 (unassigned for Oniguruma) instead of losing them.
const WITH_UNASSIGNED = new Set(['C', 'Cn']);
const WITH_UNASSIGNED_SCRIPTS = new Set(['unknown', 'zzzz']);
// U+0295 is Ll (so cased, lowercase) for Oniguruma, Lo for JavaScript.
const GAINS_U0295 = new Set(['Ll', 'LC', 'cased', 'lowercase']);

function validProperty(body: string): boolean {
  try {
    new RegExp(`\\p{${body}}`, 'v');
    return true;
  } catch {
    return false;
  }
}

/** A JavaScript property name (or `Script=` form) for an Oniguruma one, or null. */
function jsProperty(name: string): { body: string; kind: 'category' | 'script' | 'binary' } | null {
  const cat = CATEGORY_BY_LOOSE_NAME.get(loose(name));
  if (cat !== undefined) return { body: cat, kind: 'category' };
  const words = name.split(/[\s_-]+/).filter((w) => w.length > 0);
  const titled = words.map((w) => w[0]!.toUpperCase() + w.slice(1).toLowerCase()).join('_');
  for (const candidate of [name, titled, words.join('_')]) {
    if (/^[A-Za-z_]+$/.test(candidate) && validProperty(`Script=${candidate}`))
      return { body: `Script=${candidate}`, kind: 'script' };
  }
  for (const candidate of [name, titled, words.join('_')]) {
    if (/^[A-Za-z_]+$/.test(candidate) && validProperty(candidate)) return { body: candidate, kind: 'binary' };
  }
  return null;
}

/** Case-fold partners of a code point under JavaScript's `iu` (Unicode simple case folding). */
let caseCandidates: number[] | null = null;
function caseVariants(cp: number): number[] {
  if (caseCandidates === null) {
    const re = /[\p{Cased}\p{Changes_When_Casefolded}\p{Changes_When_Lowercased}\p{Changes_When_Uppercased}]/u;
    caseCandidates = [];
    for (let c = 0; c < 0x110000; c++) {
      if (c >= 0xd800 && c <= 0xdfff) continue;
      if (re.test(String.fromCodePoint(c))) caseCandidates.push(c);
    }
  }
  const re = new RegExp(`^\\u{${cp.toString(16)}}$`, 'iu');
  const newChar = new RegExp(`^${NEW_CLASS}$`, 'v');
  const out = new Set<number>([cp]);
  for (const c of caseCandidates) {
    const ch = String.fromCodePoint(c);
    if (re.test(ch) && !newChar.test(ch)) out.add(c);
  }
  return [...out].sort((a, b) => a - b);
}

const lit = (cp: number): string =>
  (cp >= 0x30 && cp <= 0x39) || (cp >= 0x41 && cp <= 0x5a) || (cp >= 0x61 && cp <= 0x7a)
    ? String.fromCharCode(cp)
    : `\\u{${cp.toString(16)}}`;

interface Flags {
  /** `(?i)`: case-insensitive. */
  i: boolean;
  /** `(?m)`: in Oniguruma's Ruby syntax, `.` also matches `\n`. */
  m: boolean;
}

/** A class item: a single code point, a range, or a set already written as a class operand. */
type ClassItem = { cp: number } | { from: number; to: number } | { set: string };

/** Translates one Oniguruma pattern to a JavaScript RegExp source for the `v` flag. */
class Translator {
  private pos = 0;
  private groups = 0;
  private readonly chars: number[];

  constructor(
    private readonly pattern: string,
    private readonly field: string,
  ) {
    this.chars = [...pattern].map((c) => c.codePointAt(0)!);
  }

  translate(): string {
    const out = this.alternation({ i: false, m: false });
    if (this.pos < this.chars.length) this.fail('unbalanced ")"', true);
    return out;
  }

  /** Refuses the pattern: `invalid` when Oniguruma would reject it too, else something Lathe cannot reproduce. */
  private fail(message: string, invalid = false): never {
    const offset = [...this.pattern].slice(0, this.pos).join('').length;
    const why = invalid ? '' : "; Lathe runs HF's Oniguruma regexes as JavaScript RegExps and cannot reproduce this";
    throw new Error(`${this.field} ${JSON.stringify(this.pattern)}: ${message} (at offset ${offset})${why}`);
  }

  private peek(k = 0): number | undefined {
    return this.chars[this.pos + k];
  }

  private eat(cp: number): boolean {
    if (this.chars[this.pos] === cp) {
      this.pos++;
      return true;
    }
    return false;
  }

  private startsWith(s: string): boolean {
    for (let k = 0; k < s.length; k++) if (this.chars[this.pos + k] !== s.charCodeAt(k)) return false;
    return true;
  }

  private alternation(flags: Flags): string {
    const branches: string[] = [];
    for (;;) {
      branches.push(this.sequence(flags));
      if (!this.eat(0x7c /* | */)) break;
    }
    return branches.join('|');
  }

  private sequence(flags: Flags): string {
    let out = '';
    let literalRun = '';
    const flushLiterals = (): void => {
      if (flags.i) checkFoldRun(literalRun, (m) => this.fail(m));
      literalRun = '';
    };
    for (;;) {
      const c = this.peek();
      if (c === undefined || c === 0x7c || c === 0x29 /* ) */) break;
      // `(?i)` without a colon: as in Ruby, the rest of the enclosing group, later alternatives
      // included, becomes a group with those flags (`a(?i)b|c` is `a(?i:b|c)`).
      if (c === 0x28 && this.peek(1) === 0x3f) {
        const inline = this.inlineFlags(flags);
        if (inline !== null) {
          flushLiterals();
          out += `(?:${this.alternation(inline)})`;
          break;
        }
      }
      const before = this.pos;
      const atom = this.atom(flags);
      if (atom === null) continue;
      const { src, quantifiable, literal } = atom;
      if (literal !== undefined) literalRun += String.fromCodePoint(literal);
      else flushLiterals();
      const quantified = this.quantifiers(src, quantifiable, before);
      if (quantified !== src) flushLiterals();
      out += quantified;
    }
    flushLiterals();
    return out;
  }

  /** Parses `(?flags)` at the cursor if that is what is there, returning the new flags; else null. */
  private inlineFlags(flags: Flags): Flags | null {
    const save = this.pos;
    this.pos += 2;
    const parsed = this.flagSpec();
    if (parsed !== null && this.eat(0x29)) return apply(flags, parsed);
    this.pos = save;
    return null;
  }

  /** `[imx]*(-[imx]*)?` at the cursor; null if it is not a flag spec. */
  private flagSpec(): { on: string; off: string } | null {
    const save = this.pos;
    let on = '';
    let off = '';
    let negative = false;
    for (;;) {
      const c = this.peek();
      if (c === undefined) break;
      const ch = String.fromCodePoint(c);
      if (ch === '-' && !negative) {
        negative = true;
        this.pos++;
        continue;
      }
      if (!/^[a-zA-Z]$/.test(ch)) break;
      if (negative) off += ch;
      else on += ch;
      this.pos++;
    }
    if (on === '' && off === '' && !negative) {
      this.pos = save;
      return null;
    }
    for (const f of on + off) if (f !== 'i' && f !== 'm') this.fail(`option (?${f}) is not supported`);
    return { on, off };
  }

  private atom(flags: Flags): { src: string; quantifiable: boolean; literal?: number } | null {
    const c = this.chars[this.pos++]!;
    switch (c) {
      case 0x28: // (
        return { src: this.group(flags), quantifiable: true };
      case 0x5b: // [
        return { src: this.charClass(flags), quantifiable: true };
      case 0x2e: // .
        return { src: flags.m ? '[\\s\\S]' : '[^\\n]', quantifiable: true };
      case 0x5e: // ^ (Oniguruma: start of a line)
        return { src: '(?<![^\\n])', quantifiable: false };
      case 0x24: // $ (end of a line)
        return { src: '(?![^\\n])', quantifiable: false };
      case 0x2a:
      case 0x2b:
      case 0x3f:
        this.pos--;
        return this.fail('target of repeat operator is not specified', true);
      case 0x7b: // { without an interval is a literal
        return { src: lit(c), quantifiable: true, literal: c };
      case 0x5c: {
        const e = this.escape(false, flags);
        if ('cp' in e) return { src: this.literal(e.cp, flags), quantifiable: true, literal: e.cp };
        return { src: e.src, quantifiable: e.kind === 'set' };
      }
      default:
        return { src: this.literal(c, flags), quantifiable: true, literal: c };
    }
  }

  private literal(cp: number, flags: Flags): string {
    if (!flags.i) return lit(cp);
    const variants = caseVariants(cp);
    return variants.length === 1 ? lit(cp) : `[${variants.map(lit).join('')}]`;
  }

  private group(flags: Flags): string {
    if (!this.eat(0x3f /* ? */)) {
      const inner = this.alternation(flags);
      if (!this.eat(0x29)) this.fail('missing ")"', true);
      return `(?:${inner})`;
    }
    const close = (inner: string, open: string): string => {
      if (!this.eat(0x29)) this.fail('missing ")"', true);
      return `${open}${inner})`;
    };
    if (this.eat(0x3a /* : */)) return close(this.alternation(flags), '(?:');
    if (this.eat(0x3d /* = */)) return close(this.alternation(flags), '(?=');
    if (this.eat(0x21 /* ! */)) return close(this.alternation(flags), '(?!');
    if (this.eat(0x3e /* > */)) {
      const inner = this.alternation(flags);
      if (!this.eat(0x29)) this.fail('missing ")"', true);
      return this.atomic(inner);
    }
    if (this.eat(0x23 /* # */)) {
      while (this.peek() !== undefined && this.peek() !== 0x29) this.pos++;
      if (!this.eat(0x29)) this.fail('missing ")" after comment', true);
      return '';
    }
    if (this.startsWith('<=') || this.startsWith('<!')) {
      const neg = this.peek(1) === 0x21;
      this.pos += 2;
      return close(this.alternation(flags), neg ? '(?<!' : '(?<=');
    }
    if (this.peek() === 0x3c /* < */ || this.peek() === 0x27 /* ' */) {
      const end = this.peek() === 0x3c ? 0x3e : 0x27;
      this.pos++;
      while (this.peek() !== undefined && this.peek() !== end) this.pos++;
      if (!this.eat(end)) this.fail('unterminated group name', true);
      // Named groups capture, but nothing here reads captures: a plain group is the same match.
      return close(this.alternation(flags), '(?:');
    }
    const spec = this.flagSpec();
    if (spec !== null && this.eat(0x3a)) {
      const inner = this.alternation(apply(flags, spec));
      return close(inner, '(?:');
    }
    const what = String.fromCodePoint(this.peek() ?? 0x3f);
    return this.fail(
      what === '~'
        ? 'absent groups (?~...) are not supported'
        : what === '('
          ? 'conditionals (?(...)...) are not supported'
          : `group (?${what} is not supported`,
    );
  }

  private atomic(inner: string): string {
    const name = `lathe${this.groups++}`;
    return `(?:(?=(?<${name}>${inner}))\\k<${name}>)`;
  }

  /** Applies the quantifiers that follow an atom (Oniguruma allows stacking them: `a**`). */
  private quantifiers(src: string, quantifiable: boolean, atomStart: number): string {
    let out = src;
    let quantified = false;
    for (;;) {
      const c = this.peek();
      let q: string;
      let fixed = false;
      if (c === 0x2a || c === 0x2b || c === 0x3f) {
        this.pos++;
        q = String.fromCharCode(c);
      } else if (c === 0x7b) {
        const interval = this.interval();
        if (interval === null) break;
        q = interval.src;
        fixed = interval.fixed;
      } else {
        break;
      }
      if (!quantifiable) {
        this.pos = atomStart;
        this.fail('target of repeat operator is invalid', true);
      }
      const base = quantified ? `(?:${out})` : out;
      // Oniguruma: `*+ ++ ?+` are possessive, `{n,m}+` and `{n}+` repeat again, `{n}?` is optional.
      if (!fixed && this.peek() === 0x3f) {
        this.pos++;
        out = `${base}${q}?`;
      } else if (!fixed && !q.startsWith('{') && this.peek() === 0x2b) {
        this.pos++;
        out = this.atomic(`${base}${q}`);
      } else {
        out = `${base}${q}`;
      }
      quantified = true;
    }
    return out;
  }

  /** `{n}`, `{n,}`, `{n,m}` or `{,m}` at the cursor; null (cursor unchanged) if it is a literal brace. */
  private interval(): { src: string; fixed: boolean } | null {
    const rest = String.fromCodePoint(...this.chars.slice(this.pos, this.pos + 40));
    const m = /^\{(\d*)(,?)(\d*)\}/.exec(rest);
    if (m === null || (m[1] === '' && m[3] === '') || (m[1] === '' && m[2] === '')) return null;
    this.pos += m[0].length;
    const lo = m[1] === '' ? '0' : m[1]!;
    if (m[2] === '') return { src: `{${lo}}`, fixed: true };
    if (m[3] !== '' && Number(m[3]) < Number(lo))
      this.fail('upper bound of the interval is smaller than the lower', true);
    return { src: `{${lo},${m[3]}}`, fixed: false };
  }

  /**
   * An escape after `\`: a code point, a set (a class operand), or an assertion.
   */
  private escape(inClass: boolean, flags: Flags): { cp: number } | { kind: 'set' | 'assert'; src: string } {
    const c = this.chars[this.pos++];
    if (c === undefined) this.fail('pattern ends with "\\"', true);
    const ch = String.fromCodePoint(c);
    const simple: Record<string, number> = { t: 9, n: 10, r: 13, f: 12, v: 11, a: 7, e: 27 };
    if (ch in simple) return { cp: simple[ch]! };
    switch (ch) {
      case 's':
        return { kind: 'set', src: SPACE_CLASS };
      case 'S':
        return { kind: 'set', src: `[^${SPACE_CLASS}]` };
      case 'w':
        return { kind: 'set', src: WORD_CLASS };
      case 'W':
        return { kind: 'set', src: `[^${WORD_CLASS}]` };
      case 'd':
        return { kind: 'set', src: DIGIT_CLASS };
      case 'D':
        return { kind: 'set', src: `[^${DIGIT_CLASS}]` };
      case 'h':
        return { kind: 'set', src: HEX_CLASS };
      case 'H':
        return { kind: 'set', src: `[^${HEX_CLASS}]` };
      case 'p':
      case 'P':
        return { kind: 'set', src: this.property(ch === 'P', flags) };
      case 'x': {
        if (this.eat(0x7b)) {
          const digits = this.takeWhile((d) => /[0-9a-fA-F]/.test(d));
          if (!this.eat(0x7d) || digits === '' || parseInt(digits, 16) > 0x10ffff)
            this.fail('bad \\x{...} escape', true);
          return this.codePoint(parseInt(digits, 16));
        }
        const digits = this.takeWhile((d) => /[0-9a-fA-F]/.test(d), 2);
        if (digits === '') this.fail('bad \\x escape', true);
        return this.codePoint(parseInt(digits, 16));
      }
      case 'u': {
        const digits = this.takeWhile((d) => /[0-9a-fA-F]/.test(d), 4);
        if (digits.length !== 4) this.fail('bad \\u escape (4 hex digits expected)', true);
        return this.codePoint(parseInt(digits, 16));
      }
      case '0': {
        const digits = this.takeWhile((d) => /[0-7]/.test(d), 2);
        return { cp: parseInt(digits || '0', 8) };
      }
      case 'b':
        if (inClass) return { cp: 8 };
        return {
          kind: 'assert',
          src: `(?:(?<=${WORD_CLASS})(?!${WORD_CLASS})|(?<!${WORD_CLASS})(?=${WORD_CLASS}))`,
        };
      case 'B':
        if (inClass) break;
        return {
          kind: 'assert',
          src: `(?:(?<=${WORD_CLASS})(?=${WORD_CLASS})|(?<!${WORD_CLASS})(?!${WORD_CLASS}))`,
        };
      case 'A':
        if (inClass) break;
        return { kind: 'assert', src: '(?<![\\s\\S])' };
      case 'z':
        if (inClass) break;
        return { kind: 'assert', src: '(?![\\s\\S])' };
      case 'Z':
        if (inClass) break;
        return { kind: 'assert', src: '(?=\\n?(?![\\s\\S]))' };
      default:
        if (!/^[0-9A-Za-z]$/.test(ch)) return { cp: c };
    }
    this.pos -= 2; // point at the backslash
    const names: Record<string, string> = {
      k: 'backreferences are',
      g: 'subroutine calls are',
      K: '\\K (keep) is',
      G: '\\G (search start anchor) is',
      R: '\\R (general newline) is',
      X: '\\X (grapheme cluster) is',
      N: '\\N (non-newline) is',
      O: '\\O (any character) is',
      y: '\\y (text segment boundary) is',
      Y: '\\Y (text segment boundary) is',
      c: 'control escapes are',
      C: 'control escapes are',
      M: 'meta escapes are',
    };
    if (/^[1-9]$/.test(ch)) this.fail('backreferences are not supported');
    return this.fail(`${names[ch] ?? `escape \\${ch} is`} not supported`);
  }

  private codePoint(cp: number): { cp: number } {
    if (cp >= 0xd800 && cp <= 0xdfff) this.fail('surrogate code points cannot match UTF-8 text');
    return { cp };
  }

  private takeWhile(test: (ch: string) => boolean, max = Infinity): string {
    let s = '';
    while (s.length < max) {
      const c = this.peek();
      if (c === undefined || !test(String.fromCodePoint(c))) break;
      s += String.fromCodePoint(c);
      this.pos++;
    }
    return s;
  }

  /** `\p{Name}`, `\p{^Name}`, `\P{Name}` as a class operand with Oniguruma's set. */
  private property(negated: boolean, flags: Flags): string {
    if (!this.eat(0x7b)) this.fail('\\p must be followed by {name}', true);
    if (this.eat(0x5e /* ^ */)) negated = !negated;
    const name = this.takeWhile((d) => d !== '}');
    if (!this.eat(0x7d)) this.fail('unterminated \\p{...}', true);
    const set = propertySet(name);
    if (set === null) this.fail(`unknown or unsupported property \\p{${name}}`);
    if (flags.i && /^(L[ult]|LC|Upper|Lower|Uppercase|Lowercase|Cased)/i.test(name))
      this.fail(`case-sensitive property \\p{${name}} inside (?i) is not supported`);
    return negated ? `[^${set}]` : set;
  }

  /** A bracket expression, as a JavaScript `v`-mode class. The cursor is after `[`. */
  private charClass(flags: Flags): string {
    const negated = this.eat(0x5e);
    const operands: string[] = [];
    let items: ClassItem[] = [];
    let first = true;
    for (;;) {
      const c = this.peek();
      if (c === undefined) this.fail('premature end of char-class', true);
      if (c === 0x5d /* ] */ && !first) {
        this.pos++;
        break;
      }
      first = false;
      if (c === 0x26 && this.peek(1) === 0x26) {
        this.pos += 2;
        operands.push(this.classUnion(items, flags));
        items = [];
        continue;
      }
      if (c === 0x5b /* [ */) {
        if (this.peek(1) === 0x3a /* : */) this.fail('POSIX bracket expressions ([:alpha:]) are not supported');
        this.pos++;
        items.push({ set: this.charClass(flags) });
        continue;
      }
      const from = this.classAtom(flags);
      if ('set' in from) {
        items.push(from);
        continue;
      }
      if (this.peek() === 0x2d /* - */ && this.peek(1) !== undefined && this.peek(1) !== 0x5d) {
        const save = this.pos;
        this.pos++;
        if (this.peek() === 0x5b) {
          this.pos = save;
          items.push(from);
          continue;
        }
        const to = this.classAtom(flags);
        if ('set' in to) this.fail('a range cannot end with a character set', true);
        if (to.cp < from.cp) this.fail('empty range in char class', true);
        items.push({ from: from.cp, to: to.cp });
        continue;
      }
      items.push(from);
    }
    operands.push(this.classUnion(items, flags));
    const body = operands.length === 1 ? operands[0]!.slice(1, -1) : operands.join('&&');
    return negated ? `[^${body}]` : `[${body}]`;
  }

  private classAtom(flags: Flags): { cp: number } | { set: string } {
    const c = this.chars[this.pos++]!;
    if (c !== 0x5c) return { cp: c };
    const e = this.escape(true, flags);
    if ('cp' in e) return e;
    if (e.kind === 'assert') this.fail('an anchor cannot be part of a char class', true);
    return { set: e.src };
  }

  /** A union of class items as one bracketed operand, case-folded under `(?i)`. */
  private classUnion(items: ClassItem[], flags: Flags): string {
    let body = '';
    for (const it of items) {
      if ('set' in it) body += it.set;
      else if ('cp' in it) body += flags.i ? caseVariants(it.cp).map(lit).join('') : lit(it.cp);
      else {
        body += `${lit(it.from)}-${lit(it.to)}`;
        if (flags.i) {
          if (it.to - it.from > 2000) this.fail('a large range inside (?i) is not supported');
          for (let cp = it.from; cp <= it.to; cp++) body += caseVariants(cp).map(lit).join('');
        }
      }
    }
    return `[${body}]`;
  }
}

function apply(flags: Flags, spec: { on: string; off: string }): Flags {
  const out = { ...flags };
  for (const f of spec.on) out[f as 'i' | 'm'] = true;
  for (const f of spec.off) out[f as 'i' | 'm'] = false;
  return out;
}

// Oniguruma folds some characters to several (ß to "ss", ﬁ to "fi", ...), so under (?i) such a
// literal run also matches one character. JavaScript cannot; refuse rather than differ.
const MULTI_FOLD_RUNS = ['ss', 'st', 'ff', 'fi', 'fl', 'ʼn'];
function checkFoldRun(run: string, fail: (message: string) => never): void {
  if (run === '') return;
  const lower = run.toLowerCase();
  if ([...run].some((ch) => ch.codePointAt(0)! > 0x7f && /\p{L}/u.test(ch)))
    fail('non-ASCII letters inside (?i) are not supported');
  for (const s of MULTI_FOLD_RUNS)
    if (lower.includes(s)) fail(`"${s}" inside (?i) also matches a ligature or ß in Oniguruma, which is not supported`);
}

/** Oniguruma's set for a property name as a JavaScript `v`-mode class operand, or null. */
function propertySet(name: string): string | null {
  const key = loose(name);
  if (key === 'any') return '[\\s\\S]';
  if (key === 'assigned') return `[\\P{Cn}--${NEW_CLASS}]`;
  if (key === 'alpha' || key === 'alnum' || key === 'word' || key === 'space' || key === 'blank') return null;
  const prop = jsProperty(name);
  if (prop === null) return null;
  const js = `\\p{${prop.body}}`;
  let set: string;
  if (
    (prop.kind === 'category' && WITH_UNASSIGNED.has(prop.body)) ||
    (prop.kind === 'script' && WITH_UNASSIGNED_SCRIPTS.has(loose(prop.body.slice('Script='.length))))
  ) {
    set = `[${js}${NEW_CLASS}]`;
  } else {
    set = `[${js}--${NEW_CLASS}]`;
  }
  const u295 = `\\u{${LL_IN_HF_LO_IN_JS.toString(16)}}`;
  if (GAINS_U0295.has(prop.kind === 'category' ? prop.body : loose(prop.body))) set = `[${set}${u295}]`;
  if (prop.kind === 'category' && prop.body === 'Lo') set = `[${set}--[${u295}]]`;
  return set;
}

/** An Oniguruma pattern from `tokenizer.json`, run with HF's matching rules. */
export class OnigRegex implements Matcher {
  /** The JavaScript translation (`v` flag). */
  readonly jsSource: string;
  private readonly re: RegExp;

  /** `field` names the pattern in errors, e.g. `tokenizer.json: pre_tokenizer.pretokenizers[0].pattern.Regex`. */
  constructor(
    readonly pattern: string,
    field: string,
  ) {
    this.jsSource = new Translator(pattern, field).translate();
    try {
      this.re = new RegExp(this.jsSource, 'gv');
    } catch (err) {
      throw new Error(
        `${field} ${JSON.stringify(pattern)}: cannot run as a JavaScript RegExp (${(err as Error).message})`,
        { cause: err },
      );
    }
  }

  /** Match spans [start, end) in order, as the `onig` crate's `find_iter` yields them. */
  matches(text: string): Array<[number, number]> {
    const re = this.re;
    const n = text.length;
    const out: Array<[number, number]> = [];
    let from = 0;
    let lastMatchEnd = -1;
    while (from <= n) {
      re.lastIndex = from;
      const m = re.exec(text);
      if (m === null) break;
      const start = m.index;
      const end = start + m[0].length;
      if (start === end && end === lastMatchEnd) {
        // No empty match right after the previous one: step over one character.
        const c = text.charCodeAt(from);
        from += c >= 0xd800 && c <= 0xdbff && from + 1 < n ? 2 : 1;
        continue;
      }
      out.push([start, end]);
      from = end;
      lastMatchEnd = end;
    }
    return out;
  }

  findMatches(text: string): MatchTiles {
    if (text.length === 0) return [[0, 0, false]];
    return tilesFrom(text.length, this.matches(text));
  }
}

/** A literal pattern (`{"String": ...}`): HF escapes it and runs it as a regex, i.e. leftmost, non-overlapping. */
export class LiteralPattern implements Matcher {
  constructor(readonly literal: string) {}

  findMatches(text: string): MatchTiles {
    if (text.length === 0) return [[0, 0, false]];
    const s = this.literal;
    if (s.length === 0) {
      // An empty regex matches between every two characters.
      const spans: Array<[number, number]> = [];
      for (let i = 0; i <= text.length;) {
        spans.push([i, i]);
        const c = text.charCodeAt(i);
        i += c >= 0xd800 && c <= 0xdbff && i + 1 < text.length ? 2 : 1;
      }
      return tilesFrom(text.length, spans);
    }
    const spans: Array<[number, number]> = [];
    for (let at = text.indexOf(s); at >= 0; at = text.indexOf(s, at + s.length)) spans.push([at, at + s.length]);
    return tilesFrom(text.length, spans);
  }
}

function tilesFrom(n: number, spans: Array<[number, number]>): MatchTiles {
  const tiles: MatchTiles = [];
  let prev = 0;
  for (const [start, end] of spans) {
    if (prev !== start) tiles.push([prev, start, false]);
    tiles.push([start, end, true]);
    prev = end;
  }
  if (prev !== n) tiles.push([prev, n, false]);
  return tiles;
}
