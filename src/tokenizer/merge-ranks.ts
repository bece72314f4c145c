/**
 * Applying learned BPE merges to one pre-token word, with exactly Hugging Face's semantics:
 * repeatedly merge the adjacent pair of lowest rank (leftmost first on ties), where a queued merge
 * is still valid if the pair now at its position produces the same token.
 */
import { PairTable } from './pair-table.js';

const POS_SCALE = 2 ** 32;

/** Merge table: (left id, right id) -> rank, and rank -> merged id. */
export class MergeRanks {
  private readonly ranks: PairTable;
  private readonly results: Int32Array;
  // Scratch buffers reused across words.
  private prev = new Int32Array(64);
  private next = new Int32Array(64);
  private heap = new Float64Array(64);

  /** `merges[rank] = [left, right, result]`, as token ids. */
  constructor(merges: ReadonlyArray<readonly [number, number, number]>) {
    this.ranks = new PairTable(merges.length);
    this.results = new Int32Array(merges.length);
    merges.forEach(([a, b, z], rank) => {
      this.ranks.set(a, b, rank); // a repeated pair keeps its last rank, as in HF
      this.results[rank] = z;
    });
  }

  /** Number of merges. */
  get size(): number {
    return this.results.length;
  }

  /** Merges `symbols[0, n)` in place; returns the new length. */
  apply(symbols: Int32Array, n: number): number {
    if (n < 2) return n;
    const ranks = this.ranks;
    const results = this.results;
    if (n === 2) {
      const r = ranks.get(symbols[0]!, symbols[1]!);
      if (r < 0) return 2;
      symbols[0] = results[r]!;
      return 1;
    }
    if (this.prev.length < n) {
      let cap = this.prev.length;
      while (cap < n) cap *= 2;
      this.prev = new Int32Array(cap);
      this.next = new Int32Array(cap);
      this.heap = new Float64Array(cap * 2);
    }
    const prev = this.prev;
    const next = this.next;
    // Min-heap of rank * 2^32 + position. A position at most enters once initially and then once
    // per merge next to it, so the heap holds fewer than 3n entries.
    let heap = this.heap;
    let size = 0;
    const push = (key: number): void => {
      if (size >= heap.length) {
        const bigger = new Float64Array(heap.length * 2);
        bigger.set(heap);
        heap = this.heap = bigger;
      }
      let i = size++;
      while (i > 0) {
        const parent = (i - 1) >> 1;
        const pk = heap[parent]!;
        if (pk <= key) break;
        heap[i] = pk;
        i = parent;
      }
      heap[i] = key;
    };
    const pop = (): number => {
      const top = heap[0]!;
      const last = heap[--size]!;
      let i = 0;
      for (;;) {
        let child = 2 * i + 1;
        if (child >= size) break;
        if (child + 1 < size && heap[child + 1]! < heap[child]!) child++;
        if (heap[child]! >= last) break;
        heap[i] = heap[child]!;
        i = child;
      }
      if (size > 0) heap[i] = last;
      return top;
    };

    for (let i = 0; i < n; i++) {
      prev[i] = i - 1;
      next[i] = i + 1 < n ? i + 1 : -1;
    }
    for (let i = 0; i + 1 < n; i++) {
      const r = ranks.get(symbols[i]!, symbols[i + 1]!);
      if (r >= 0) push(r * POS_SCALE + i);
    }
    // A removed symbol is marked by -1 (token ids are never negative).
    while (size > 0) {
      const key = pop();
      const rank = Math.floor(key / POS_SCALE);
      const pos = key - rank * POS_SCALE;
      const left = symbols[pos]!;
      if (left < 0) continue;
      const right = next[pos]!;
      if (right < 0) continue;
      const current = ranks.get(left, symbols[right]!);
      const merged = results[rank]!;
      if (current < 0 || results[current] !== merged) continue;
      symbols[pos] = merged;
      symbols[right] = -1;
      const after = next[right]!;
      next[pos] = after;
      if (after >= 0) prev[after] = pos;
      const before = prev[pos]!;
      if (before >= 0) {
        const r = ranks.get(symbols[before]!, merged);
        if (r >= 0) push(r * POS_SCALE + before);
      }
      if (after >= 0) {
        const r = ranks.get(merged, symbols[after]!);
        if (r >= 0) push(r * POS_SCALE + pos);
      }
    }
    let o = 0;
    for (let i = 0; i < n; i++) {
      const s = symbols[i]!;
      if (s >= 0) symbols[o++] = s;
    }
    return o;
  }
}
