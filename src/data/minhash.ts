// MinHash near-duplicate detection: character shingles, a seeded MinHash signature, LSH banding to find
// candidates, and a signature comparison to confirm them.

/** Options of {@link MinHasher}. */
export interface MinHashOptions {
  /** Signature length (cfg.minhashPerms). */
  perms: number;
  /** Shingle size in characters (cfg.shingle). */
  shingle: number;
  seed?: number;
  /**
   * `kperm`: one seeded hash function per signature slot, min over all shingles (classic MinHash, O(shingles × perms)).
   * `oph` (default): one-permutation MinHash, shingles split into `perms` bins by hash, min per bin, empty bins filled
   * by optimal densification (Shrivastava 2017); the same collision probability (the Jaccard) at O(shingles + perms).
   */
  scheme?: 'oph' | 'kperm';
}

const EMPTY = 0x7fffffff;
// Docs compared per LSH bucket, newest first. Only templated corpora fill a bucket this far (many docs share a whole
// band yet stay under the threshold); the cap keeps them from turning dedupe quadratic, at some loss of recall there.
const MAX_BUCKET_SCAN = 50;

/** The murmur3 finalizer: a bijection on 32 bits with full avalanche. */
function fmix32(h: number): number {
  h = Math.imul(h ^ (h >>> 16), 0x85ebca6b);
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35);
  return h ^ (h >>> 16);
}

/** splitmix32 stream: the seeded family's parameters. */
function seededInts(seed: number, n: number): Int32Array {
  const out = new Int32Array(n);
  let x = seed >>> 0;
  for (let i = 0; i < n; i++) {
    x = (x + 0x9e3779b9) | 0;
    out[i] = fmix32(x);
  }
  return out;
}

function isSpace(c: number): boolean {
  return (
    c === 32 ||
    (c >= 9 && c <= 13) ||
    c === 0xa0 ||
    c === 0x3000 ||
    (c >= 0x2000 && c <= 0x200a) ||
    c === 0x2028 ||
    c === 0x2029
  );
}

/** The text shingles are taken from: lower-cased, whitespace runs collapsed to one space, trimmed. */
export function shingleText(text: string): string {
  return text.toLowerCase().replace(/\s+/g, ' ').trim();
}

/** The set of character shingles of a text (after {@link shingleText}); for tests and diagnostics. */
export function shingleSet(text: string, k: number): Set<string> {
  const t = shingleText(text);
  const out = new Set<string>();
  if (!t.length) return out;
  if (t.length <= k) out.add(t);
  else for (let i = 0; i + k <= t.length; i++) out.add(t.slice(i, i + k));
  return out;
}

/** Exact Jaccard similarity of two sets. */
export function jaccard<T>(a: Set<T>, b: Set<T>): number {
  if (!a.size && !b.size) return 1;
  let inter = 0;
  for (const x of a) if (b.has(x)) inter++;
  return inter / (a.size + b.size - inter);
}

/** Computes MinHash signatures; reuses its buffers, so one instance serves one thread of work. */
export class MinHasher {
  readonly perms: number;
  readonly shingle: number;
  readonly scheme: 'oph' | 'kperm';
  private readonly seed: number;
  private readonly params: Int32Array;
  private codes = new Uint16Array(4096);
  private hashes = new Int32Array(4096);
  private filled: Uint8Array;

  constructor(opts: MinHashOptions) {
    this.perms = opts.perms;
    this.shingle = Math.max(1, opts.shingle);
    this.scheme = opts.scheme ?? 'oph';
    this.seed = fmix32((opts.seed ?? 0) ^ 0x5bd1e995);
    this.params = seededInts(this.seed, this.perms);
    this.filled = new Uint8Array(this.perms);
  }

  /** Hashes every shingle of the text once into an internal buffer; returns how many there are. */
  private shingleHashes(text: string): number {
    const t = text.toLowerCase();
    if (this.codes.length < t.length) this.codes = new Uint16Array(t.length * 2);
    const codes = this.codes;
    // Collapse whitespace runs and trim, inline (no intermediate string).
    let n = 0;
    let space = true;
    for (let i = 0; i < t.length; i++) {
      const c = t.charCodeAt(i);
      if (isSpace(c)) {
        if (!space) {
          codes[n++] = 32;
          space = true;
        }
      } else {
        codes[n++] = c;
        space = false;
      }
    }
    if (n && codes[n - 1] === 32) n--;
    if (!n) return 0;
    const k = Math.min(this.shingle, n);
    const count = n - k + 1;
    if (this.hashes.length < count) this.hashes = new Int32Array(count * 2);
    const hashes = this.hashes;
    const s = this.seed;
    // Rolling polynomial hash of each k-gram (mod 2^32), then a seeded finalizer.
    const B = 0x01000193;
    let bk = 1; // B^(k-1)
    for (let j = 1; j < k; j++) bk = Math.imul(bk, B);
    let h = 0;
    for (let j = 0; j < k; j++) h = (Math.imul(h, B) + codes[j]!) | 0;
    hashes[0] = fmix32(h ^ s);
    for (let i = 1; i < count; i++) {
      h = (Math.imul((h - Math.imul(codes[i - 1]!, bk)) | 0, B) + codes[i + k - 1]!) | 0;
      hashes[i] = fmix32(h ^ s);
    }
    return count;
  }

  /** The signature of a text: `perms` int32 values; texts without shingles get all-EMPTY signatures. */
  signature(text: string, out: Int32Array = new Int32Array(this.perms)): Int32Array {
    const n = this.shingleHashes(text);
    const K = this.perms;
    out.fill(EMPTY);
    if (!n) return out;
    const hashes = this.hashes;
    if (this.scheme === 'kperm') {
      const params = this.params;
      for (let p = 0; p < K; p++) {
        const a = params[p]!;
        let min = EMPTY;
        for (let i = 0; i < n; i++) {
          let h = hashes[i]! ^ a;
          h = Math.imul(h ^ (h >>> 16), 0x85ebca6b);
          h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35);
          h ^= h >>> 16;
          if (h < min) min = h;
        }
        out[p] = min;
      }
      return out;
    }
    // One permutation: the bin is the hash's high part, the value the hash itself (ordering within the bin).
    const filled = this.filled;
    filled.fill(0);
    let nonEmpty = 0;
    for (let i = 0; i < n; i++) {
      const h = hashes[i]!;
      const bin = ((h >>> 16) * K) >>> 16;
      if (!filled[bin]) {
        filled[bin] = 1;
        nonEmpty++;
        out[bin] = h;
      } else if (h < out[bin]!) out[bin] = h;
    }
    if (nonEmpty < K) {
      // Optimal densification: an empty bin copies the first non-empty bin of its own seeded probe sequence.
      const s = this.seed;
      for (let j = 0; j < K; j++) {
        if (filled[j]) continue;
        let donor = -1;
        for (let t = 1; t <= 64 * K; t++) {
          const b = Math.floor(
            ((fmix32(Math.imul(j + 1, 0x9e3779b1) ^ Math.imul(t, 0x85ebca77) ^ s) >>> 0) * K) / 4294967296,
          );
          if (filled[b]) {
            donor = b;
            break;
          }
        }
        if (donor < 0) for (donor = (j + 1) % K; !filled[donor]; donor = (donor + 1) % K); // vanishingly rare
        out[j] = out[donor]!;
      }
    }
    return out;
  }
}

/** Estimated Jaccard similarity: the share of equal signature slots. */
export function estimateJaccard(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let eq = 0;
  for (let i = 0; i < a.length; i++) if (a[i] === b[i]) eq++;
  return eq / a.length;
}

/** Probability that two docs of Jaccard s share at least one LSH band of `rows` rows among `bands`. */
export function candidateProbability(s: number, bands: number, rows: number): number {
  return 1 - Math.pow(1 - Math.pow(s, rows), bands);
}

/**
 * LSH bands × rows (bands·rows ≤ perms) for a similarity threshold: minimizes a weighted sum of the missed-pair area
 * above the threshold and the false-candidate area below it. Misses weigh more, as candidates are confirmed anyway.
 */
export function lshParams(threshold: number, perms: number, missWeight = 0.95): { bands: number; rows: number } {
  const steps = 200;
  const integrate = (f: (s: number) => number, lo: number, hi: number): number => {
    if (hi <= lo) return 0;
    const h = (hi - lo) / steps;
    let sum = (f(lo) + f(hi)) / 2;
    for (let i = 1; i < steps; i++) sum += f(lo + i * h);
    return sum * h;
  };
  let best = { bands: 1, rows: perms };
  let bestErr = Infinity;
  for (let bands = 1; bands <= perms; bands++) {
    const maxRows = Math.floor(perms / bands);
    for (let rows = 1; rows <= maxRows; rows++) {
      const fp = integrate((s) => candidateProbability(s, bands, rows), 0, threshold);
      const fn = integrate((s) => 1 - candidateProbability(s, bands, rows), threshold, 1);
      const err = (1 - missWeight) * fp + missWeight * fn;
      if (err < bestErr - 1e-12) {
        bestErr = err;
        best = { bands, rows };
      }
    }
  }
  return best;
}

/** Options of {@link NearDuplicateIndex}. */
export interface NearDupOptions extends MinHashOptions {
  /** Estimated Jaccard at or above which a doc is a near duplicate (cfg.nearThreshold). */
  threshold: number;
}

/**
 * An LSH index of kept docs' signatures. Memory per indexed doc: 2·perms bytes of signature (low 16 bits per slot;
 * the chance agreement this adds is 1/65536) plus about 12 bytes per band of table and chain.
 */
export class NearDuplicateIndex {
  readonly hasher: MinHasher;
  readonly threshold: number;
  readonly bands: number;
  readonly rows: number;
  private readonly perms: number;
  private sigs: Uint16Array;
  private next: Int32Array; // per (doc, band): the previous doc in the same bucket, +1 (0 ends the chain)
  private keys: Int32Array;
  private heads: Int32Array; // doc id + 1; 0 marks a free slot
  private used = 0;
  private count = 0;
  private readonly sig: Int32Array;
  private readonly bandKeys: Int32Array;
  private readonly minEqual: number;
  private seen = new Int32Array(1024); // per doc: the last query that compared it
  private query = 0;

  constructor(opts: NearDupOptions) {
    this.hasher = new MinHasher(opts);
    this.perms = opts.perms;
    this.threshold = opts.threshold;
    ({ bands: this.bands, rows: this.rows } = lshParams(opts.threshold, opts.perms));
    this.minEqual = Math.ceil(opts.threshold * opts.perms - 1e-9);
    this.sigs = new Uint16Array(1024 * this.perms);
    this.next = new Int32Array(1024 * this.bands);
    this.keys = new Int32Array(4096);
    this.heads = new Int32Array(4096);
    this.sig = new Int32Array(this.perms);
    this.bandKeys = new Int32Array(this.bands);
  }

  /** Number of indexed docs. */
  get size(): number {
    return this.count;
  }

  /** True when the text is a near duplicate of an indexed doc; otherwise indexes it (unless `add` is false). */
  check(text: string, add = true): boolean {
    const sig = this.hasher.signature(text, this.sig);
    if (this.findDuplicate(sig) >= 0) return true;
    if (add) this.add(sig);
    return false;
  }

  /** Id of an indexed doc whose signature agrees with `sig` on ≥ threshold of slots, or -1. */
  findDuplicate(sig: Int32Array): number {
    const { bands, rows, keys, heads, perms, sigs, next, bandKeys, minEqual } = this;
    const mask = keys.length - 1;
    const maxMiss = perms - minEqual;
    const stamp = ++this.query;
    if (this.seen.length < this.count) {
      const grown = new Int32Array(Math.max(1024, this.count * 2));
      grown.set(this.seen);
      this.seen = grown;
    }
    const seen = this.seen;
    for (let b = 0; b < bands; b++) {
      const key = bandKey(sig, b, rows);
      bandKeys[b] = key;
      let slot = fmix32(key) & mask;
      while (heads[slot] !== 0 && keys[slot] !== key) slot = (slot + 1) & mask;
      let scanned = 0;
      for (let id = heads[slot]! - 1; id >= 0 && scanned < MAX_BUCKET_SCAN; id = next[id * bands + b]! - 1) {
        if (seen[id] === stamp) continue; // already compared through another band
        scanned++;
        seen[id] = stamp;
        let miss = 0;
        const off = id * perms;
        for (let p = 0; p < perms && miss <= maxMiss; p++) if (sigs[off + p] !== (sig[p]! & 0xffff)) miss++;
        if (miss <= maxMiss) return id;
      }
    }
    return -1;
  }

  /** Indexes a signature (as computed by this index's hasher); returns its doc id. */
  add(sig: Int32Array): number {
    const id = this.count++;
    const { bands, rows, perms } = this;
    if ((id + 1) * perms > this.sigs.length) {
      const grown = new Uint16Array(this.sigs.length * 2);
      grown.set(this.sigs);
      this.sigs = grown;
      const nx = new Int32Array(this.next.length * 2);
      nx.set(this.next);
      this.next = nx;
    }
    for (let p = 0; p < perms; p++) this.sigs[id * perms + p] = sig[p]! & 0xffff;
    if ((this.used + bands) * 2 > this.keys.length) this.rehash();
    const { keys, heads, next } = this;
    const mask = keys.length - 1;
    for (let b = 0; b < bands; b++) {
      const key = bandKey(sig, b, rows);
      let slot = fmix32(key) & mask;
      while (heads[slot] !== 0 && keys[slot] !== key) slot = (slot + 1) & mask;
      if (heads[slot] === 0) {
        keys[slot] = key;
        this.used++;
      }
      next[id * bands + b] = heads[slot]!;
      heads[slot] = id + 1;
    }
    return id;
  }

  private rehash(): void {
    const oldKeys = this.keys;
    const oldHeads = this.heads;
    const size = oldKeys.length * 2;
    this.keys = new Int32Array(size);
    this.heads = new Int32Array(size);
    const mask = size - 1;
    for (let i = 0; i < oldKeys.length; i++) {
      if (oldHeads[i] === 0) continue;
      let slot = fmix32(oldKeys[i]!) & mask;
      while (this.heads[slot] !== 0) slot = (slot + 1) & mask;
      this.keys[slot] = oldKeys[i]!;
      this.heads[slot] = oldHeads[i]!;
    }
  }
}

/** 32-bit key of one band of a signature; the band index is mixed in so one table serves all bands. */
function bandKey(sig: Int32Array, band: number, rows: number): number {
  let h = Math.imul(band + 1, 0x9e3779b1);
  const off = band * rows;
  for (let r = 0; r < rows; r++) h = Math.imul(h ^ sig[off + r]!, 0x01000193) ^ (h >>> 15);
  return fmix32(h);
}
