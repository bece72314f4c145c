/**
 * The BPE model of HF `tokenizers` for one pre-tokenized word: its characters (or, after the
 * ByteLevel pre-tokenizer, its bytes) looked up in the vocabulary, `byte_fallback` to `<0xNN>`
 * tokens, `unk_token` (fused with `fuse_unk`), `continuing_subword_prefix`, `end_of_word_suffix`,
 * `ignore_merges`, then the merges in rank order. Results are cached per word.
 */
import { BYTE_TO_CHAR, writeUtf8 } from './bytes.js';
import { MergeRanks } from './merge-ranks.js';

/** What the model needs from `tokenizer.json`'s `model`. */
export interface BpeConfig {
  vocab: Map<string, number>;
  merges: Array<[string, string]>;
  unkToken: string | null;
  fuseUnk: boolean;
  byteFallback: boolean;
  ignoreMerges: boolean;
  continuingSubwordPrefix: string | null;
  endOfWordSuffix: string | null;
}

// Words longer than this (in UTF-16 units) are not cached, as in HF.
const MAX_CACHED_WORD = 256;
// Entries per cache generation; at most two generations are alive.
const CACHE_GENERATION = 1 << 16;

const encoder = new TextEncoder();

/** A word cache of two generations: hits in the old one are promoted; a full current one becomes the old. */
class WordCache {
  private current = new Map<string, number | number[]>();
  private old = new Map<string, number | number[]>();

  get(word: string): number | number[] | undefined {
    return this.current.get(word) ?? this.old.get(word);
  }

  set(word: string, ids: number | number[]): void {
    if (word.length > MAX_CACHED_WORD) return;
    if (this.current.size >= CACHE_GENERATION) {
      this.old = this.current;
      this.current = new Map();
    }
    this.current.set(word, ids);
  }
}

/** A BPE model over a fixed vocabulary and merge list. */
export class BpeModel {
  /** Whether {@link encodeBytes} gives what HF gives for the word's byte-level spelling. */
  readonly bytesExact: boolean;
  private readonly config: BpeConfig;
  private readonly ranks: MergeRanks;
  private readonly byteToId = new Int32Array(256).fill(-1);
  private readonly unkId: number;
  private readonly byteCache = new WordCache();
  private readonly charCache = new WordCache();
  private scratch = new Int32Array(256);

  constructor(config: BpeConfig) {
    // An empty prefix or suffix (transformers writes "") is the same as none.
    this.config = {
      ...config,
      continuingSubwordPrefix: config.continuingSubwordPrefix || null,
      endOfWordSuffix: config.endOfWordSuffix || null,
    };
    const { vocab } = config;
    const prefixLength = this.config.continuingSubwordPrefix?.length ?? 0;
    this.ranks = new MergeRanks(
      config.merges.map(([a, b]) => [vocab.get(a)!, vocab.get(b)!, vocab.get(a + b.slice(prefixLength))!] as const),
    );
    let allBytes = true;
    for (let b = 0; b < 256; b++) {
      this.byteToId[b] = vocab.get(BYTE_TO_CHAR[b]!) ?? -1;
      if (this.byteToId[b]! < 0) allBytes = false;
    }
    this.unkId = config.unkToken === null ? -1 : (vocab.get(config.unkToken) ?? -1);
    this.bytesExact =
      this.config.continuingSubwordPrefix === null &&
      this.config.endOfWordSuffix === null &&
      (allBytes || !config.byteFallback);
  }

  /**
   * Appends the ids of a word whose UTF-8 bytes the model sees as byte-level characters (after the
   * ByteLevel pre-tokenizer). Only exact when {@link bytesExact}; else spell it and use {@link encodeChars}.
   */
  encodeBytes(word: string, out: number[]): void {
    let hit = this.byteCache.get(word);
    if (hit === undefined) {
      hit = this.bytesBpe(word);
      this.byteCache.set(word, hit);
    }
    if (typeof hit === 'number') out.push(hit);
    else for (let i = 0; i < hit.length; i++) out.push(hit[i]!);
  }

  /** Appends the ids of a word as HF's BPE sees it: one symbol per character. */
  encodeChars(word: string, out: number[]): void {
    if (word.length === 0) return;
    let hit = this.charCache.get(word);
    if (hit === undefined) {
      hit = this.charsBpe(word);
      this.charCache.set(word, hit);
    }
    if (typeof hit === 'number') out.push(hit);
    else for (let i = 0; i < hit.length; i++) out.push(hit[i]!);
  }

  private bytesBpe(word: string): number | number[] {
    if (this.config.ignoreMerges) {
      let spelled = '';
      for (const b of Buffer.from(word, 'utf8')) spelled += BYTE_TO_CHAR[b]!;
      const id = this.config.vocab.get(spelled);
      if (id !== undefined) return id;
    }
    if (this.scratch.length < word.length * 3) this.scratch = new Int32Array(word.length * 3);
    const sym = this.scratch;
    const nBytes = writeUtf8(word, 0, word.length, sym, 0);
    let n = 0;
    let lastWasUnk = false;
    for (let i = 0; i < nBytes; i++) {
      const id = this.byteToId[sym[i]!]!;
      if (id >= 0) {
        sym[n++] = id;
        lastWasUnk = false;
      } else if (this.config.unkToken !== null) {
        // HF: bytes missing from the vocab become unk (consecutive ones fused if fuse_unk), or vanish.
        if (!(this.config.fuseUnk && lastWasUnk)) sym[n++] = this.requireUnk();
        lastWasUnk = true;
      }
    }
    return this.merge(sym, n);
  }

  private charsBpe(word: string): number | number[] {
    const { vocab, ignoreMerges, continuingSubwordPrefix: prefix, endOfWordSuffix: suffix } = this.config;
    if (ignoreMerges) {
      const id = vocab.get(word);
      if (id !== undefined) return id;
    }
    const syms: number[] = [];
    // A pending unk, added once the next known symbol (or the end) comes, as HF does.
    let unkPending = false;
    for (let i = 0; i < word.length;) {
      const c = word.charCodeAt(i);
      const width = c >= 0xd800 && c <= 0xdbff && i + 1 < word.length ? 2 : 1;
      let s = word.slice(i, i + width);
      if (i > 0 && prefix !== null) s = prefix + s;
      i += width;
      if (i >= word.length && suffix !== null) s += suffix;
      const id = vocab.get(s);
      if (id !== undefined) {
        if (unkPending) syms.push(this.unkId);
        unkPending = false;
        syms.push(id);
        continue;
      }
      if (this.config.byteFallback) {
        const bytes = encoder.encode(s);
        const ids: number[] = [];
        for (const b of bytes) {
          const byteId = vocab.get(`<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`);
          if (byteId === undefined) break;
          ids.push(byteId);
        }
        if (ids.length === bytes.length) {
          // HF adds these before a pending unk (which stays pending).
          syms.push(...ids);
          continue;
        }
      }
      if (this.config.unkToken !== null) {
        const unk = this.requireUnk();
        if (unkPending && !this.config.fuseUnk) syms.push(unk);
        unkPending = true;
      }
    }
    if (unkPending) syms.push(this.unkId);
    if (this.scratch.length < syms.length) this.scratch = new Int32Array(syms.length * 2);
    const sym = this.scratch;
    for (let k = 0; k < syms.length; k++) sym[k] = syms[k]!;
    return this.merge(sym, syms.length);
  }

  private merge(sym: Int32Array, n: number): number | number[] {
    n = this.ranks.apply(sym, n);
    if (n === 1) return sym[0]!;
    const ids = new Array<number>(n);
    for (let i = 0; i < n; i++) ids[i] = sym[i]!;
    return ids;
  }

  private requireUnk(): number {
    if (this.unkId < 0)
      throw new Error(
        `tokenizer.json: model.unk_token ${JSON.stringify(this.config.unkToken)} is needed for this text but is not in model.vocab`,
      );
    return this.unkId;
  }
}
