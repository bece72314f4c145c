import { describe, expect, it } from 'vitest';
import { Rng } from './random.js';

describe('Rng', () => {
  it('is deterministic by seed and restorable from its state', () => {
    const a = new Rng(42);
    const b = new Rng(42);
    const first = Array.from({ length: 5 }, () => a.nextU32());
    expect(first).toEqual(Array.from({ length: 5 }, () => b.nextU32()));
    const saved = a.state;
    const next = Array.from({ length: 5 }, () => a.next());
    const restored = new Rng(saved);
    expect(Array.from({ length: 5 }, () => restored.next())).toEqual(next);
    expect(new Rng(43).nextU32()).not.toBe(new Rng(42).nextU32());
  });

  it('gives a uniform mean and a unit-variance normal', () => {
    const r = new Rng(7);
    let s = 0,
      s2 = 0;
    const n = 100_000;
    for (let i = 0; i < n; i++) {
      const z = r.normal();
      s += z;
      s2 += z * z;
    }
    expect(Math.abs(s / n)).toBeLessThan(0.02);
    expect(Math.abs(s2 / n - 1)).toBeLessThan(0.02);
    const u = Array.from({ length: n }, () => r.next());
    expect(Math.abs(u.reduce((x, y) => x + y) / n - 0.5)).toBeLessThan(0.01);
    expect(Math.min(...u)).toBeGreaterThanOrEqual(0);
    expect(Math.max(...u)).toBeLessThan(1);
  });

  it('derives distinct streams per path', () => {
    expect(Rng.derive(1, 2, 3).nextU32()).toBe(Rng.derive(1, 2, 3).nextU32());
    expect(Rng.derive(1, 2, 3).nextU32()).not.toBe(Rng.derive(1, 3, 2).nextU32());
  });
});
