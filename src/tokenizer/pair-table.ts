/**
 * Open-addressing hash map from a pair of non-negative int32s to a non-negative int32.
 * BPE looks up (left id, right id) pairs in its hottest loops; typed arrays avoid the boxing and
 * hashing cost of a `Map` keyed by a combined number.
 */
export class PairTable {
  private left: Int32Array;
  private right: Int32Array;
  private values: Int32Array;
  private mask: number;
  private count = 0;

  constructor(expected = 16) {
    let cap = 16;
    while (cap < expected * 2) cap *= 2;
    this.left = new Int32Array(cap).fill(-1);
    this.right = new Int32Array(cap);
    this.values = new Int32Array(cap);
    this.mask = cap - 1;
  }

  /** Number of stored pairs. */
  get size(): number {
    return this.count;
  }

  private static hash(a: number, b: number): number {
    let h = Math.imul(a, 0x9e3779b1) ^ Math.imul(b + 0x7f4a7c15, 0x85ebca77);
    h ^= h >>> 15;
    h = Math.imul(h, 0x2c1b3c6d);
    return h ^ (h >>> 13);
  }

  /** Value stored for (a, b), or -1. */
  get(a: number, b: number): number {
    const left = this.left;
    let i = PairTable.hash(a, b) & this.mask;
    for (;;) {
      const k = left[i]!;
      if (k === -1) return -1;
      if (k === a && this.right[i] === b) return this.values[i]!;
      i = (i + 1) & this.mask;
    }
  }

  /** Stores `value` for (a, b), replacing any previous value. */
  set(a: number, b: number, value: number): void {
    if ((this.count + 1) * 2 > this.left.length) this.grow();
    const left = this.left;
    let i = PairTable.hash(a, b) & this.mask;
    for (;;) {
      const k = left[i]!;
      if (k === -1) {
        left[i] = a;
        this.right[i] = b;
        this.values[i] = value;
        this.count++;
        return;
      }
      if (k === a && this.right[i] === b) {
        this.values[i] = value;
        return;
      }
      i = (i + 1) & this.mask;
    }
  }

  private grow(): void {
    const { left, right, values } = this;
    const cap = left.length * 2;
    this.left = new Int32Array(cap).fill(-1);
    this.right = new Int32Array(cap);
    this.values = new Int32Array(cap);
    this.mask = cap - 1;
    this.count = 0;
    for (let i = 0; i < left.length; i++) if (left[i] !== -1) this.set(left[i]!, right[i]!, values[i]!);
  }
}
