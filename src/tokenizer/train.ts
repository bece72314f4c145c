/**
 * Byte-level BPE training.
 *
 * Input is streamed once: each text is pre-tokenized and only the distinct pre-token words are kept
 * (with counts), so memory grows with the vocabulary of the corpus rather than its size. Merging then
 * uses the classic incremental algorithm: global pair counts, an index from each pair to the words
 * containing it, and a lazy max-heap, so each merge only touches the words where it applies.
 */
import { BYTE_TO_CHAR, writeUtf8 } from './bytes.js';
import { PairTable } from './pair-table.js';
import { nextPretoken } from './pretokenize.js';

/** Options for training a byte-level BPE vocabulary. */
export interface TrainOptions {
  /** Total vocabulary size, counting the 256 byte tokens and the special tokens. */
  vocabSize: number;
  /** Pairs occurring fewer times than this are never merged. Default 2. */
  minFrequency?: number;
  /** Stop reading input after this many UTF-8 bytes (the last text is cut at a character boundary). */
  maxBytes?: number;
  /** Called periodically while counting words and while merging. */
  onProgress?: (progress: TrainProgress) => void;
}

/** Progress report passed to {@link TrainOptions.onProgress}. */
export interface TrainProgress {
  phase: 'count' | 'merge';
  /** UTF-8 bytes of input read so far. */
  bytesRead: number;
  /** Distinct pre-token words seen so far. */
  distinctWords: number;
  /** Merges learned so far. */
  merges: number;
}

/** Output of {@link trainBpe}. */
export interface BpeTrainResult {
  /** Learned merges in rank order, as byte-level strings (HF `model.merges` form). */
  merges: Array<[string, string]>;
  /** UTF-8 bytes of input consumed. */
  bytesRead: number;
  /** Number of distinct pre-token words counted. */
  distinctWords: number;
}

/** Texts to train on: any (async) iterable of strings, e.g. an array or a line reader. */
export type TrainInput = AsyncIterable<string> | Iterable<string>;

const YIELD_EVERY_MS = 100;
// Int32 slots before a word's symbols: length, count high and low halves.
const WORD_HEADER = 3;
// Largest block in a pair's word list (int32 slots).
const MAX_BLOCK = 4096;

const yieldToEventLoop = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

/**
 * Learns BPE merges from `texts` until the vocabulary (256 bytes + `specialTokens` + merged tokens)
 * reaches `opts.vocabSize`, or no pair occurs at least `minFrequency` times. Special-token strings
 * found in the input are cut out and never merged into. Ties between equally frequent pairs go to
 * the byte-wise lexicographically smallest (left, right) pair, so results are deterministic.
 */
export async function trainBpe(
  texts: TrainInput | string,
  opts: TrainOptions & { specialTokens?: readonly string[] },
): Promise<BpeTrainResult> {
  const specialTokens = opts.specialTokens ?? [];
  const minFrequency = opts.minFrequency ?? 2;
  const maxBytes = opts.maxBytes ?? Infinity;
  if (!Number.isInteger(opts.vocabSize) || opts.vocabSize < 1) {
    throw new RangeError(`train: vocabSize must be a positive integer (got ${opts.vocabSize})`);
  }
  if (!(maxBytes >= 0)) throw new RangeError(`train: maxBytes must be >= 0 (got ${opts.maxBytes})`);
  const baseSize = 256 + specialTokens.length;
  if (opts.vocabSize < baseSize) {
    throw new RangeError(
      `train: vocabSize ${opts.vocabSize} is smaller than the ${baseSize} base tokens (256 bytes + ${specialTokens.length} special)`,
    );
  }

  const { words, bytesRead } = await countWords(texts, specialTokens, maxBytes, opts.onProgress);
  const merges = await learnMerges(words, opts.vocabSize - baseSize, minFrequency, (m) =>
    opts.onProgress?.({ phase: 'merge', bytesRead, distinctWords: words.size, merges: m }),
  );
  return { merges, bytesRead, distinctWords: words.size };
}

/** Index just past the longest prefix of `text` whose UTF-8 encoding fits in `maxBytes`. */
function utf8PrefixEnd(text: string, maxBytes: number): number {
  let bytes = 0;
  let i = 0;
  while (i < text.length) {
    const c = text.charCodeAt(i);
    let width = 1;
    let size: number;
    if (c < 0x80) size = 1;
    else if (c < 0x800) size = 2;
    else if (c >= 0xd800 && c <= 0xdbff && i + 1 < text.length) {
      const d = text.charCodeAt(i + 1);
      if (d >= 0xdc00 && d <= 0xdfff) {
        size = 4;
        width = 2;
      } else size = 3;
    } else size = 3;
    if (bytes + size > maxBytes) break;
    bytes += size;
    i += width;
  }
  return i;
}

function escapeRegExp(s: string): string {
  return s.replace(/[\\^$.*+?()[\]{}|/-]/g, '\\$&');
}

/** Distinct words with their counts; a repeated word costs one map lookup. */
class WordCounts {
  readonly index = new Map<string, number>();
  counts = new Float64Array(1024);

  get size(): number {
    return this.index.size;
  }

  add(word: string): void {
    const i = this.index.get(word);
    if (i !== undefined) {
      this.counts[i]!++;
      return;
    }
    const n = this.index.size;
    if (n === this.counts.length) this.counts = growFloat64(this.counts, n + 1);
    this.counts[n] = 1;
    this.index.set(word, n);
  }
}

async function countWords(
  texts: TrainInput | string,
  specialTokens: readonly string[],
  maxBytes: number,
  onProgress: TrainOptions['onProgress'],
): Promise<{ words: WordCounts; bytesRead: number }> {
  const words = new WordCounts();
  const specials = specialTokens.filter((s) => s.length > 0);
  // Longest first so the alternation finds the longest special token at each position.
  const specialRe = specials.length
    ? new RegExp(
        [...specials]
          .sort((a, b) => b.length - a.length)
          .map(escapeRegExp)
          .join('|'),
        'g',
      )
    : null;
  let bytesRead = 0;
  let index = 0;
  let lastReport = Date.now();

  const countRange = (text: string): void => {
    for (let i = 0; i < text.length;) {
      const end = nextPretoken(text, i);
      words.add(text.slice(i, end));
      i = end;
    }
  };

  const consume = (item: unknown): boolean => {
    if (typeof item !== 'string') {
      throw new TypeError(`train: input item ${index} is ${item === null ? 'null' : typeof item}, expected a string`);
    }
    index++;
    let text = item;
    const size = Buffer.byteLength(text, 'utf8');
    let done: boolean;
    if (bytesRead + size > maxBytes) {
      const end = utf8PrefixEnd(text, maxBytes - bytesRead);
      text = text.slice(0, end);
      bytesRead += Buffer.byteLength(text, 'utf8');
      done = true;
    } else {
      bytesRead += size;
      done = bytesRead >= maxBytes;
    }
    if (specialRe === null) {
      countRange(text);
    } else {
      specialRe.lastIndex = 0;
      let from = 0;
      for (let m = specialRe.exec(text); m !== null; m = specialRe.exec(text)) {
        if (m.index > from) countRange(text.slice(from, m.index));
        from = m.index + m[0].length;
      }
      countRange(from === 0 ? text : text.slice(from));
    }
    return done;
  };

  const report = async (): Promise<void> => {
    const now = Date.now();
    if (now - lastReport < YIELD_EVERY_MS) return;
    lastReport = now;
    onProgress?.({ phase: 'count', bytesRead, distinctWords: words.size, merges: 0 });
    await yieldToEventLoop();
  };

  if (maxBytes > 0) {
    const input: TrainInput = typeof texts === 'string' ? [texts] : texts;
    if (Symbol.asyncIterator in input) {
      for await (const item of input) {
        if (consume(item)) break;
        await report();
      }
    } else {
      for (const item of input) {
        if (consume(item)) break;
        if ((index & 255) === 0) await report();
      }
    }
  }
  onProgress?.({ phase: 'count', bytesRead, distinctWords: words.size, merges: 0 });
  return { words, bytesRead };
}

/** Growable int32 / float64 arrays without per-element boxing. */
function growInt32(a: Int32Array<ArrayBuffer>, min: number, fill?: number): Int32Array<ArrayBuffer> {
  let cap = a.length;
  while (cap < min) cap *= 2;
  if (cap === a.length) return a;
  const b = new Int32Array(cap);
  if (fill !== undefined) b.fill(fill, a.length);
  b.set(a);
  return b;
}

function growFloat64(a: Float64Array<ArrayBuffer>, min: number): Float64Array<ArrayBuffer> {
  let cap = a.length;
  while (cap < min) cap *= 2;
  if (cap === a.length) return a;
  const b = new Float64Array(cap);
  b.set(a);
  return b;
}

/**
 * Runs BPE merges over the counted words. Token ids here are internal: 0..255 are bytes, later ids
 * are merged tokens. Returns merges as byte-level strings.
 */
async function learnMerges(
  words: WordCounts,
  maxNewTokens: number,
  minFrequency: number,
  onProgress: (merges: number) => void,
): Promise<Array<[string, string]>> {
  const threshold = Math.max(1, minFrequency);

  // All words in one flat array, each as [length, count high, count low, symbols...]; a word is
  // identified by the offset of its record, so one visit touches one region of memory. Words of a
  // single byte never take part in a merge and are left out.
  let total = 0;
  for (const word of words.index.keys()) {
    const len = Buffer.byteLength(word, 'utf8');
    if (len >= 2) total += WORD_HEADER + len;
  }
  if (total > 2 ** 31 - 1) throw new RangeError('train: too many distinct words (over 2 GB of them)');
  const sym = new Int32Array(total);
  const wordIds: number[] = [];
  {
    let buf = new Int32Array(64);
    let pos = 0;
    for (const [word, i] of words.index) {
      if (buf.length < word.length * 3) buf = new Int32Array(word.length * 3);
      const len = writeUtf8(word, 0, word.length, buf, 0);
      if (len < 2) continue;
      const count = words.counts[i]!;
      sym[pos] = len;
      sym[pos + 1] = Math.floor(count / 2 ** 32);
      sym[pos + 2] = count % 2 ** 32;
      sym.set(buf.subarray(0, len), pos + WORD_HEADER);
      wordIds.push(pos);
      pos += WORD_HEADER + len;
    }
  }
  const countOf = (w: number): number => sym[w + 1]! * 2 ** 32 + (sym[w + 2]! >>> 0);

  // Token contents as Latin-1 strings of raw bytes, for byte-wise lexicographic tie-breaking.
  const raw: string[] = [];
  for (let b = 0; b < 256; b++) raw.push(String.fromCharCode(b));
  const rawToId = new Map<string, number>(raw.map((s, i) => [s, i]));

  // Pair storage: id -> (left, right, count, head of word list, last word appended, touch stamp).
  const table = new PairTable(1 << 16);
  let pairCap = 1 << 16;
  let pLeft = new Int32Array(pairCap);
  let pRight = new Int32Array(pairCap);
  let pCount = new Float64Array(pairCap);
  let pHead = new Int32Array(pairCap).fill(-1);
  let pLast = new Int32Array(pairCap).fill(-1);
  let pTouched = new Int32Array(pairCap);
  let nPairs = 0;
  // Word list per pair: a chain of blocks [next, capacity, fill, ...words] in one pool, each block
  // twice the size of the previous one so long lists are read mostly sequentially. Lists may hold
  // stale or repeated words; they are filtered when the pair is merged.
  let pool = new Int32Array(1 << 20);
  let poolUsed = 0;

  let stamp = 1;
  const touched: number[] = [];

  const addPair = (a: number, b: number, delta: number, w: number): void => {
    let p = table.get(a, b);
    if (p < 0) {
      p = nPairs++;
      if (p >= pairCap) {
        pairCap *= 2;
        pLeft = growInt32(pLeft, pairCap);
        pRight = growInt32(pRight, pairCap);
        pCount = growFloat64(pCount, pairCap);
        pHead = growInt32(pHead, pairCap, -1);
        pLast = growInt32(pLast, pairCap, -1);
        pTouched = growInt32(pTouched, pairCap);
      }
      pLeft[p] = a;
      pRight[p] = b;
      table.set(a, b, p);
    }
    pCount[p] += delta;
    if (delta > 0) {
      if (pLast[p] !== w) {
        let block = pHead[p]!;
        if (block < 0 || pool[block + 2] === pool[block + 1]) {
          const cap = block < 0 ? 2 : Math.min(pool[block + 1]! * 2, MAX_BLOCK);
          if (poolUsed + 3 + cap > pool.length) pool = growInt32(pool, poolUsed + 3 + cap);
          pool[poolUsed] = block;
          pool[poolUsed + 1] = cap;
          pool[poolUsed + 2] = 0;
          block = poolUsed;
          poolUsed += 3 + cap;
          pHead[p] = block;
        }
        pool[block + 3 + pool[block + 2]!++] = w;
        pLast[p] = w;
      }
      if (pTouched[p] !== stamp) {
        pTouched[p] = stamp;
        touched.push(p);
      }
    }
  };

  for (const w of wordIds) {
    const s = w + WORD_HEADER;
    const end = s + sym[w]! - 1;
    const c = countOf(w);
    for (let i = s; i < end; i++) addPair(sym[i]!, sym[i + 1]!, c, w);
  }
  touched.length = 0;

  // Lazy max-heap of (count, pair): entries may be stale; they are re-checked when popped.
  let hCount = new Float64Array(Math.max(16, nPairs));
  let hPair = new Int32Array(Math.max(16, nPairs));
  let hSize = 0;
  const above = (i: number, j: number): boolean => {
    const ci = hCount[i]!;
    const cj = hCount[j]!;
    if (ci !== cj) return ci > cj;
    const p = hPair[i]!;
    const q = hPair[j]!;
    const li = raw[pLeft[p]!]!;
    const lj = raw[pLeft[q]!]!;
    if (li !== lj) return li < lj;
    return raw[pRight[p]!]! < raw[pRight[q]!]!;
  };
  const swap = (i: number, j: number): void => {
    const c = hCount[i]!;
    hCount[i] = hCount[j]!;
    hCount[j] = c;
    const p = hPair[i]!;
    hPair[i] = hPair[j]!;
    hPair[j] = p;
  };
  const push = (pair: number, count: number): void => {
    if (hSize >= hCount.length) {
      hCount = growFloat64(hCount, hSize + 1);
      hPair = growInt32(hPair, hSize + 1);
    }
    let i = hSize++;
    hCount[i] = count;
    hPair[i] = pair;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!above(i, parent)) break;
      swap(i, parent);
      i = parent;
    }
  };
  const popTop = (): void => {
    hSize--;
    if (hSize === 0) return;
    hCount[0] = hCount[hSize]!;
    hPair[0] = hPair[hSize]!;
    let i = 0;
    for (;;) {
      const l = 2 * i + 1;
      if (l >= hSize) break;
      const r = l + 1;
      const child = r < hSize && above(r, l) ? r : l;
      if (!above(child, i)) break;
      swap(i, child);
      i = child;
    }
  };
  for (let p = 0; p < nPairs; p++) if (pCount[p]! > 0) push(p, pCount[p]!);

  let visit = new Int32Array(1024);
  const merges: Array<[number, number]> = [];
  let newTokens = 0;
  let lastYield = Date.now();

  while (newTokens < maxNewTokens && hSize > 0) {
    const p = hPair[0]!;
    const count = hCount[0]!;
    popTop();
    const current = pCount[p]!;
    if (count !== current) {
      if (current > 0) push(p, current);
      continue;
    }
    if (count < threshold) break;

    const a = pLeft[p]!;
    const b = pRight[p]!;
    const merged = raw[a]! + raw[b]!;
    let z = rawToId.get(merged);
    if (z === undefined) {
      // Two different merges can spell the same token; like HF we then reuse its id.
      z = raw.length;
      raw.push(merged);
      rawToId.set(merged, z);
      newTokens++;
    }
    merges.push([a, b]);

    stamp++;
    touched.length = 0;
    // Sorted, the words are visited in memory order (fewer cache misses) and repeats are adjacent.
    let nVisit = 0;
    for (let block = pHead[p]!; block !== -1; block = pool[block]!) {
      const fill = pool[block + 2]!;
      if (nVisit + fill > visit.length) visit = growInt32(visit, nVisit + fill);
      visit.set(pool.subarray(block + 3, block + 3 + fill), nVisit);
      nVisit += fill;
    }
    const order = visit.subarray(0, nVisit).sort();
    for (let k = 0; k < nVisit; k++) {
      const w = order[k]!;
      if (k > 0 && order[k - 1] === w) continue;
      const s = w + WORD_HEADER;
      const end = s + sym[w]!;
      const c = countOf(w);
      let o = s;
      for (let i = s; i < end;) {
        const x = sym[i]!;
        if (x === a && i + 1 < end && sym[i + 1] === b) {
          if (o > s) {
            const left = sym[o - 1]!;
            addPair(left, a, -c, w);
            addPair(left, z, c, w);
          }
          if (i + 2 < end) {
            const right = sym[i + 2]!;
            addPair(b, right, -c, w);
            addPair(z, right, c, w);
          }
          sym[o++] = z;
          i += 2;
        } else {
          sym[o++] = x;
          i++;
        }
      }
      sym[w] = o - s;
    }
    pCount[p] = 0;
    pHead[p] = -1;
    pLast[p] = -1;
    for (const q of touched) if (pCount[q]! > 0) push(q, pCount[q]!);

    if ((merges.length & 255) === 0 && Date.now() - lastYield >= YIELD_EVERY_MS) {
      onProgress(merges.length);
      await yieldToEventLoop();
      lastYield = Date.now();
    }
  }
  onProgress(merges.length);

  const spell = (id: number): string => {
    const r = raw[id]!;
    let s = '';
    for (let i = 0; i < r.length; i++) s += BYTE_TO_CHAR[r.charCodeAt(i)]!;
    return s;
  };
  const out: Array<[string, string]> = merges.map(([a, b]) => [spell(a), spell(b)]);
  return out;
}
