import { describe, expect, it } from 'vitest';
import {
  candidateProbability,
  estimateJaccard,
  jaccard,
  lshParams,
  MinHasher,
  NearDuplicateIndex,
  shingleSet,
} from './minhash.js';

function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const rand = rng(42);
const VOCAB = Array.from({ length: 3000 }, () => {
  const len = 2 + Math.floor(rand() * 8);
  let w = '';
  for (let i = 0; i < len; i++) w += String.fromCharCode(97 + Math.floor(rand() * 26));
  return w;
});

function paragraph(r: () => number, words: number): string[] {
  return Array.from({ length: words }, () => VOCAB[Math.floor(r() * VOCAB.length)]!);
}

function mutate(r: () => number, words: string[], changes: number): string[] {
  const out = words.slice();
  for (let i = 0; i < changes; i++) out[Math.floor(r() * out.length)] = VOCAB[Math.floor(r() * VOCAB.length)]!;
  return out;
}

const OPTS = { perms: 128, shingle: 5, threshold: 0.85, seed: 1337 };

describe('MinHasher', () => {
  it('is deterministic per seed and differs across seeds', () => {
    const t = 'the same text, hashed twice';
    const a = new MinHasher({ perms: 64, shingle: 5, seed: 1 });
    const b = new MinHasher({ perms: 64, shingle: 5, seed: 1 });
    const c = new MinHasher({ perms: 64, shingle: 5, seed: 2 });
    expect(Array.from(a.signature(t))).toEqual(Array.from(b.signature(t)));
    expect(estimateJaccard(a.signature(t), c.signature(t))).toBeLessThan(0.2);
  });

  it('ignores case and whitespace runs, and handles short and empty texts', () => {
    const h = new MinHasher({ perms: 64, shingle: 5, seed: 3 });
    expect(estimateJaccard(h.signature('Hello   World\n'), h.signature('hello world'))).toBe(1);
    expect(estimateJaccard(h.signature('abc'), h.signature('abc'))).toBe(1);
    expect(estimateJaccard(h.signature('abc'), h.signature('abd'))).toBe(0);
    expect(Array.from(h.signature('   ')).every((v) => v === 0x7fffffff)).toBe(true);
  });

  // The estimate's standard deviation is sqrt(J(1-J)/perms): up to 0.044 at 128 slots, so a 40-pair maximum can pass
  // 0.1 with classic MinHash; it gets 256 slots here. One-permutation hashing samples without replacement (lower
  // variance) and meets ±0.1 at the default 128.
  for (const [scheme, perms] of [
    ['oph', 128],
    ['kperm', 256],
  ] as const) {
    it(`${scheme}: estimated Jaccard is within ±0.1 of the true Jaccard (${perms} slots)`, () => {
      const r = rng(7);
      const h = new MinHasher({ perms, shingle: 5, seed: 11, scheme });
      const errors: number[] = [];
      for (let i = 0; i < 40; i++) {
        const a = paragraph(r, 60 + Math.floor(r() * 140));
        const b = mutate(r, a, Math.floor(r() * a.length * 0.4));
        const ta = a.join(' ');
        const tb = b.join(' ');
        const truth = jaccard(shingleSet(ta, 5), shingleSet(tb, 5));
        errors.push(Math.abs(estimateJaccard(h.signature(ta), h.signature(tb)) - truth));
      }
      expect(Math.max(...errors)).toBeLessThanOrEqual(0.1);
      expect(errors.reduce((x, y) => x + y, 0) / errors.length).toBeLessThan(0.05);
    });
  }
});

describe('lshParams', () => {
  it('fits the signature and catches pairs at the threshold with high probability', () => {
    for (const [t, perms] of [
      [0.85, 128],
      [0.5, 128],
      [0.7, 64],
      [0.95, 256],
    ] as const) {
      const { bands, rows } = lshParams(t, perms);
      expect(bands * rows).toBeLessThanOrEqual(perms);
      expect(candidateProbability(t, bands, rows)).toBeGreaterThan(0.88);
      expect(candidateProbability(Math.min(1, t + 0.05), bands, rows)).toBeGreaterThan(0.95);
      expect(candidateProbability(t - 0.3, bands, rows)).toBeLessThan(0.2);
    }
    expect(lshParams(0.85, 128)).toEqual({ bands: 12, rows: 10 });
  });
});

describe('NearDuplicateIndex', () => {
  it('catches paragraphs with a few words changed', () => {
    const r = rng(99);
    const idx = new NearDuplicateIndex(OPTS);
    const bases = Array.from({ length: 100 }, () => paragraph(r, 150));
    for (const b of bases) expect(idx.check(b.join(' '))).toBe(false);
    let caught = 0;
    for (const b of bases) {
      const variant = mutate(r, b, 2);
      const j = jaccard(shingleSet(b.join(' '), 5), shingleSet(variant.join(' '), 5));
      expect(j).toBeGreaterThan(0.9);
      if (idx.check(variant.join(' '))) caught++;
    }
    expect(caught).toBe(100);
    // Variants were not indexed: the index holds the 100 originals only.
    expect(idx.size).toBe(100);
  });

  it('catches reformatted copies (case, spacing, a typo)', () => {
    const idx = new NearDuplicateIndex(OPTS);
    const text =
      'Quarterly revenue rose eleven percent on strong demand for the enterprise plan, while churn held steady at two percent and the sales team closed three large accounts in the northern region.';
    expect(idx.check(text)).toBe(false);
    expect(idx.check(text.toUpperCase().replace(/ /g, '  '))).toBe(true);
    expect(idx.check(text.replace('eleven', 'elevn'))).toBe(true);
  });

  it('has no false positives among 2000 random distinct docs', () => {
    const r = rng(2024);
    const idx = new NearDuplicateIndex(OPTS);
    let flagged = 0;
    for (let i = 0; i < 2000; i++) if (idx.check(paragraph(r, 20 + Math.floor(r() * 200)).join(' '))) flagged++;
    expect(flagged).toBe(0);
    expect(idx.size).toBe(2000);
  });

  it('leaves docs below the threshold alone', () => {
    const r = rng(5);
    const idx = new NearDuplicateIndex(OPTS);
    const base = paragraph(r, 100);
    idx.check(base.join(' '));
    // About a third of the words replaced: Jaccard well under 0.85.
    const far = mutate(r, base, 35);
    expect(jaccard(shingleSet(base.join(' '), 5), shingleSet(far.join(' '), 5))).toBeLessThan(0.6);
    expect(idx.check(far.join(' '))).toBe(false);
  });
});
