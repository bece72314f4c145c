/**
 * Open-addressing hash map from a pair of non-negative int32s to a non-negative int32.
 * BPE looks up (left id, right id) pairs in its hottest loops; one interleaved typed array keeps
 * each probe to a single cache line and avoids the boxing and hashing cost of a `Map`.
 */
export class PairTable {
  // Slot i occupies [4i, 4i + 3): left, right, value, unused (keeps slots cache-line aligned).
  private slots: Int32Array;
  private mask: number;
  private count = 0;

  constructor(expected = 16) {
    let cap = 16;
    while (cap < expected * 2) cap *= 2;
    this.slots = PairTable.emptySlots(cap);
    this.mask = cap - 1;
  }

  private static emptySlots(cap: number): Int32Array {
    const slots = new Int32Array(cap * 4);
    for (let i = 0; i < slots.length; i += 4) slots[i] = -1;
    return slots;
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
    const slots = this.slots;
    const mask = this.mask;
    let i = PairTable.hash(a, b) & mask;
    for (;;) {
      const at = i << 2;
      const k = slots[at]!;
      if (k === -1) return -1;
      if (k === a && slots[at + 1] === b) return slots[at + 2]!;
      i = (i + 1) & mask;
    }
  }

  /** Stores `value` for (a, b), replacing any previous value. */
  set(a: number, b: number, value: number): void {
    if ((this.count + 1) * 2 > this.mask + 1) this.grow();
    const slots = this.slots;
    const mask = this.mask;
    let i = PairTable.hash(a, b) & mask;
    for (;;) {
      const at = i << 2;
      const k = slots[at]!;
      if (k === -1) {
        slots[at] = a;
        slots[at + 1] = b;
        slots[at + 2] = value;
        this.count++;
        return;
      }
      if (k === a && slots[at + 1] === b) {
        slots[at + 2] = value;
        return;
      }
      i = (i + 1) & mask;
    }
  }

  private grow(): void {
    const old = this.slots;
    const cap = (this.mask + 1) * 2;
    this.slots = PairTable.emptySlots(cap);
    this.mask = cap - 1;
    this.count = 0;
    for (let at = 0; at < old.length; at += 4) if (old[at] !== -1) this.set(old[at]!, old[at + 1]!, old[at + 2]!);
  }
}
