import type { CleanConfig } from '../recipe/schema.js';
import { NearDuplicateIndex } from './minhash.js';
import { emptyPiiCounts, scrubPii, type PiiCounts } from './pii.js';
import type { Doc } from './doc.js';
import { messageText, type ChatMessage } from './messages.js';

/** What cleaning did, counted. */
export interface CleanCounts {
  /** Docs given to clean(). */
  docsIn: number;
  /** Docs kept. */
  docsOut: number;
  /** Docs whose text changed under NFC normalization. */
  nfcChanged: number;
  /** Characters removed: control characters (not tab/newline) and lone surrogates. */
  controlCharsRemoved: number;
  /** Where the first of them was (file and 1-based line); absent when none was removed. */
  firstControlChar?: { file: string; line: number };
  tooShort: number;
  tooLong: number;
  exactDuplicates: number;
  nearDuplicates: number;
  /** PII matches replaced, per kind. */
  pii: PiiCounts;
}

/** Why clean() dropped a doc. */
export type DropReason = 'too_short' | 'too_long' | 'exact_duplicate' | 'near_duplicate';

/** A zeroed CleanCounts. */
export function emptyCleanCounts(): CleanCounts {
  return {
    docsIn: 0,
    docsOut: 0,
    nfcChanged: 0,
    controlCharsRemoved: 0,
    tooShort: 0,
    tooLong: 0,
    exactDuplicates: 0,
    nearDuplicates: 0,
    pii: emptyPiiCounts(),
  };
}

/**
 * `a - b`, field by field (e.g. what one source added to a shared Cleaner's counts). The first control character's
 * place is kept when it is in the difference, i.e. when `b` had none.
 */
export function diffCleanCounts(a: CleanCounts, b: CleanCounts): CleanCounts {
  const pii = emptyPiiCounts();
  for (const k of Object.keys(pii) as (keyof PiiCounts)[]) pii[k] = a.pii[k] - b.pii[k];
  return {
    docsIn: a.docsIn - b.docsIn,
    docsOut: a.docsOut - b.docsOut,
    nfcChanged: a.nfcChanged - b.nfcChanged,
    controlCharsRemoved: a.controlCharsRemoved - b.controlCharsRemoved,
    tooShort: a.tooShort - b.tooShort,
    tooLong: a.tooLong - b.tooLong,
    exactDuplicates: a.exactDuplicates - b.exactDuplicates,
    nearDuplicates: a.nearDuplicates - b.nearDuplicates,
    pii,
    ...(a.firstControlChar && !b.firstControlChar ? { firstControlChar: a.firstControlChar } : {}),
  };
}

/** A deep copy of counts. */
export function copyCleanCounts(c: CleanCounts): CleanCounts {
  return { ...c, pii: { ...c.pii } };
}

// C0 and C1 controls except \t and \n, DEL, and lone surrogates (which cannot be written as UTF-8).
/* eslint-disable no-control-regex -- these patterns exist to find control characters */
const CONTROL_RE = /[\x00-\x08\x0B-\x1F\x7F-\x9F]|\p{Cs}/gu;
const CONTROL_TEST = /[\x00-\x08\x0B-\x1F\x7F-\x9F]|\p{Cs}/u;
const LONE_SURROGATE_RE = /\p{Cs}/gu;
const LONE_SURROGATE_TEST = /\p{Cs}/u;
// Strings that NFC leaves alone for sure: ASCII plus Latin-1 letters (no combining marks below U+0300).
const NFC_SAFE = /^[\x00-\u02ff]*$/;
/* eslint-enable no-control-regex */

const C1 = 0xcc9e2d51;
const C2 = 0x1b873593;

/** A 64-bit hash of a string as two int32 halves (two murmur3-style lanes over UTF-16 code unit pairs). */
export function hash64(s: string): [number, number] {
  let h1 = 0x9747b28c ^ s.length;
  let h2 = 0x3c6ef372 ^ Math.imul(s.length, 0x85ebca6b);
  const n = s.length;
  let i = 0;
  for (; i + 1 < n; i += 2) {
    const k = s.charCodeAt(i) | (s.charCodeAt(i + 1) << 16);
    let k1 = Math.imul(k, C1);
    k1 = (k1 << 15) | (k1 >>> 17);
    h1 ^= Math.imul(k1, C2);
    h1 = (h1 << 13) | (h1 >>> 19);
    h1 = (Math.imul(h1, 5) + 0xe6546b64) | 0;
    let k2 = Math.imul(k, 0x85ebca77);
    k2 = (k2 << 13) | (k2 >>> 19);
    h2 ^= Math.imul(k2, 0xc2b2ae3d);
    h2 = (h2 << 17) | (h2 >>> 15);
    h2 = (Math.imul(h2, 9) + 0x27d4eb2f) | 0;
  }
  if (i < n) {
    const k = s.charCodeAt(i);
    h1 ^= Math.imul((Math.imul(k, C1) << 15) | (Math.imul(k, C1) >>> 17), C2);
    h2 ^= Math.imul(k, 0x165667b1);
  }
  // Cross the lanes so each half depends on both.
  h1 = (h1 + h2) | 0;
  h2 = (h2 + h1) | 0;
  h1 = fmix(h1);
  h2 = fmix(h2);
  h1 = (h1 + h2) | 0;
  h2 = (h2 + h1) | 0;
  return [h1, h2];
}

function fmix(h: number): number {
  h = Math.imul(h ^ (h >>> 16), 0x85ebca6b);
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35);
  return h ^ (h >>> 16);
}

/** A set of 64-bit hashes in flat typed arrays (8 bytes a slot, at most half full): ~16 bytes per doc. */
export class Hash64Set {
  private hi = new Int32Array(1024);
  private lo = new Int32Array(1024);
  private n = 0;

  get size(): number {
    return this.n;
  }

  /** Adds the hash; returns false when it was already there. */
  add(hi: number, lo: number): boolean {
    if (hi === 0 && lo === 0) lo = 1; // (0, 0) marks a free slot
    if ((this.n + 1) * 2 > this.hi.length) this.grow();
    const mask = this.hi.length - 1;
    let slot = (lo ^ Math.imul(hi, 0x9e3779b1)) & mask;
    for (;;) {
      const h = this.hi[slot]!;
      const l = this.lo[slot]!;
      if (h === 0 && l === 0) break;
      if (h === hi && l === lo) return false;
      slot = (slot + 1) & mask;
    }
    this.hi[slot] = hi;
    this.lo[slot] = lo;
    this.n++;
    return true;
  }

  private grow(): void {
    const { hi, lo } = this;
    this.hi = new Int32Array(hi.length * 2);
    this.lo = new Int32Array(lo.length * 2);
    this.n = 0;
    for (let i = 0; i < hi.length; i++) if (hi[i] !== 0 || lo[i] !== 0) this.add(hi[i]!, lo[i]!);
  }
}

/** Length in code points, counted only as far as needed to compare with min and max. */
function codePointLength(s: string): number {
  let n = 0;
  for (let i = 0; i < s.length; i++, n++) {
    const c = s.charCodeAt(i);
    if (c >= 0xd800 && c <= 0xdbff && i + 1 < s.length) {
      const d = s.charCodeAt(i + 1);
      if (d >= 0xdc00 && d <= 0xdfff) i++;
    }
  }
  return n;
}

/**
 * Cleans docs in order NFC → control characters → PII → length filters → exact dedupe → near dedupe (when enabled),
 * counting every action. One Cleaner shared across sources finds cross-source duplicates. `row` is passed through
 * unchanged: read the cleaned text from `text`/`messages`, or clean other fields with cleanText().
 */
export class Cleaner {
  /** What cleaning did so far (a plain object, safe to serialize). */
  readonly counts: CleanCounts = emptyCleanCounts();
  private readonly cfg: CleanConfig;
  private readonly exact = new Hash64Set();
  private readonly near: NearDuplicateIndex | undefined;
  private nfcHit = false;
  // The doc being cleaned, to locate the first control character.
  private at: { file: string; line: number; lines: boolean } | undefined;

  constructor(cfg: CleanConfig, seed = 0) {
    this.cfg = cfg;
    if (cfg.dedupe === 'near')
      this.near = new NearDuplicateIndex({
        perms: cfg.minhashPerms,
        shingle: cfg.shingle,
        threshold: cfg.nearThreshold,
        seed,
      });
  }

  /** Cleans one doc: the cleaned copy, or why it was dropped. */
  clean(doc: Doc): { doc: Doc } | { reason: DropReason } {
    const c = this.counts;
    c.docsIn++;
    this.nfcHit = false;
    let text: string;
    let messages: ChatMessage[] | undefined;
    let key: string;
    // A .txt doc's text is its lines joined, so the line of a character is countable; a row is one place.
    this.at = { file: doc.file, line: doc.line, lines: !doc.row && !doc.messages };
    if (doc.messages) {
      messages = doc.messages.map((m) => this.cleanMessage(m));
      text = messages.map(messageText).join('\n');
      // Roles are part of a chat's identity: equal contents under different roles are different chats.
      key = messages.map((m) => `${m.role}\u0000${messageText(m)}`).join('\u0001');
    } else {
      text = this.cleanText(doc.text, false);
      key = text;
    }
    this.at = undefined;
    if (this.nfcHit) c.nfcChanged++;

    const len = lengthForFilter(text, this.cfg.maxChars);
    if (len < this.cfg.minChars) {
      c.tooShort++;
      return { reason: 'too_short' };
    }
    if (len > this.cfg.maxChars) {
      c.tooLong++;
      return { reason: 'too_long' };
    }
    if (this.cfg.dedupe !== 'none') {
      const [hi, lo] = hash64(key);
      if (!this.exact.add(hi, lo)) {
        c.exactDuplicates++;
        return { reason: 'exact_duplicate' };
      }
      if (this.near?.check(text)) {
        c.nearDuplicates++;
        return { reason: 'near_duplicate' };
      }
    }
    c.docsOut++;
    const out: Doc = { ...doc, text };
    if (messages) out.messages = messages;
    return { doc: out };
  }

  /** A chat message cleaned: its content and its tool calls' arguments (written as strings). */
  private cleanMessage(m: ChatMessage): ChatMessage {
    const out = { ...m, content: this.cleanText(m.content, false) };
    if (m.tool_calls)
      out.tool_calls = m.tool_calls.map((c) =>
        typeof c.function.arguments === 'string'
          ? { ...c, function: { ...c.function, arguments: this.cleanText(c.function.arguments, false) } }
          : c,
      );
    return out;
  }

  /**
   * NFC, control-character stripping and PII scrubbing of one string, counted (e.g. a row's prompt/chosen fields).
   * `at` locates the string for the report of the first control character (clean() locates its doc itself).
   */
  cleanText(s: string, countNfc = true, at?: { file: string; line: number }): string {
    const c = this.counts;
    if (this.cfg.nfc && !NFC_SAFE.test(s)) {
      const n = s.normalize('NFC');
      if (n !== s) {
        if (countNfc) c.nfcChanged++;
        this.nfcHit = true;
        s = n;
      }
    }
    // Lone surrogates go even when stripControl is off: they are not text and cannot be encoded.
    const re = this.cfg.stripControl ? CONTROL_RE : LONE_SURROGATE_RE;
    if ((this.cfg.stripControl ? CONTROL_TEST : LONE_SURROGATE_TEST).test(s)) {
      if (!c.firstControlChar) this.locateControl(s, at);
      const before = s.length;
      s = s.replace(re, '');
      c.controlCharsRemoved += before - s.length;
    }
    const pii = this.cfg.pii;
    if (pii.email || pii.phone || pii.iban || pii.card || pii.ip) s = scrubPii(s, pii, c.pii);
    return s;
  }

  private locateControl(s: string, at: { file: string; line: number } | undefined): void {
    const doc = this.at;
    if (!doc) {
      if (at) this.counts.firstControlChar = { file: at.file, line: at.line };
      return;
    }
    let line = doc.line;
    if (doc.lines) {
      const re = this.cfg.stripControl ? CONTROL_TEST : LONE_SURROGATE_TEST;
      const end = s.search(re);
      for (let i = s.indexOf('\n'); i !== -1 && i < end; i = s.indexOf('\n', i + 1)) line++;
    }
    this.counts.firstControlChar = { file: doc.file, line };
  }
}

/** Code points of the text without surrounding whitespace; stops counting once past `max`. */
function lengthForFilter(text: string, max: number): number {
  const t = text.trim();
  // Code points ≥ code units / 2: far past max, the exact count does not matter.
  if (t.length > 2 * max + 2) return t.length;
  return codePointLength(t);
}
