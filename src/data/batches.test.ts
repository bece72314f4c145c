import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { scratch } from '../../test/helpers.js';
import { Rng } from '../random.js';
import { BatchSampler, evalBatches, toFim } from './batches.js';
import type { PreparedSource } from './prepare.js';

async function source(dir: string, name: string, tokens: number[], weight: number): Promise<PreparedSource> {
  const train = join(dir, `${name}.train.bin`);
  const val = join(dir, `${name}.val.bin`);
  await writeFile(train, Buffer.from(Uint16Array.from(tokens).buffer));
  await writeFile(val, Buffer.from(Uint16Array.from(tokens.slice(0, 40)).buffer));
  return { name, weight, docs: { train: 1, val: 1 }, tokens: { train: tokens.length, val: 40 }, bytes: 0, train, val };
}

describe('BatchSampler', () => {
  it('mixes sources by weight, deterministically from the seed', async () => {
    const dir = await scratch();
    const a = await source(
      dir,
      'a',
      Array.from({ length: 4000 }, () => 1),
      3,
    );
    const b = await source(
      dir,
      'b',
      Array.from({ length: 4000 }, () => 2),
      1,
    );
    const s = new BatchSampler([a, b], { seq: 8, batch: 16, seed: 5 });
    let fromA = 0;
    let total = 0;
    for (let step = 1; step <= 50; step++) {
      const batch = s.next(step, 0);
      for (let i = 0; i < batch.inputs.length; i += 8) {
        total++;
        if (batch.inputs[i] === 1) fromA++;
      }
    }
    expect(fromA / total).toBeGreaterThan(0.7);
    expect(fromA / total).toBeLessThan(0.8);
    const again = new BatchSampler([a, b], { seq: 8, batch: 16, seed: 5 });
    const other = new BatchSampler([a, b], { seq: 8, batch: 16, seed: 6 });
    const first = new BatchSampler([a, b], { seq: 8, batch: 16, seed: 5 }).next(1, 0);
    expect(again.next(1, 0)).toEqual(first);
    expect(other.next(1, 0).inputs).not.toEqual(first.inputs);
    s.close();
    again.close();
    other.close();
  });

  it('packs windows with targets shifted by one, visits every window once per epoch, and restores its position', async () => {
    const dir = await scratch();
    const tokens = Array.from({ length: 8 * 10 + 1 }, (_, i) => i);
    const src = await source(dir, 'seq', tokens, 1);
    const s = new BatchSampler([src], { seq: 8, batch: 2, seed: 1 });
    const starts: number[] = [];
    for (let step = 1; step <= 5; step++) {
      const b = s.next(step, 0);
      for (let r = 0; r < 2; r++) {
        const row = Array.from(b.inputs.slice(r * 8, r * 8 + 8));
        const tgt = Array.from(b.targets.slice(r * 8, r * 8 + 8));
        expect(tgt).toEqual(row.map((x) => x + 1));
        expect(row).toEqual(Array.from({ length: 8 }, (_, i) => row[0]! + i));
        starts.push(row[0]!);
      }
      if (step === 3) {
        const saved = s.position;
        const copy = new BatchSampler([src], { seq: 8, batch: 2, seed: 1 }, saved);
        expect(copy.next(4, 0)).toEqual(new BatchSampler([src], { seq: 8, batch: 2, seed: 1 }, saved).next(4, 0));
        copy.close();
      }
    }
    expect([...starts].sort((x, y) => x - y)).toEqual(Array.from({ length: 10 }, (_, i) => i * 8));
    expect(s.epochs()[0]).toBe(1);
    s.close();
  });

  it('refuses data too short for one sequence, with a fix', async () => {
    const dir = await scratch();
    const src = await source(dir, 'tiny', [1, 2, 3], 1);
    expect(() => new BatchSampler([src], { seq: 8, batch: 2, seed: 1 })).toThrow(
      /no source has enough tokens for one training sequence of 9 tokens; add data or lower model.context/,
    );
  });

  it('builds fixed held-out batches', async () => {
    const dir = await scratch();
    const src = await source(
      dir,
      'v',
      Array.from({ length: 100 }, (_, i) => i),
      1,
    );
    const e1 = evalBatches([src], { seq: 8, batch: 2, count: 3 });
    expect(e1).toHaveLength(3);
    expect(Array.from(e1[0]!.inputs.slice(0, 8))).toEqual([0, 1, 2, 3, 4, 5, 6, 7]);
    expect(evalBatches([src], { seq: 8, batch: 2, count: 3 })).toEqual(e1);
  });
});

describe('fill-in-the-middle', () => {
  it('lays out prefix, suffix and middle with the markers and keeps the length', () => {
    const w = Array.from({ length: 20 }, (_, i) => 100 + i);
    const fim = { prefix: 1, suffix: 2, middle: 3 };
    const out = Array.from(toFim(w, fim, new Rng(9)));
    expect(out).toHaveLength(20);
    expect(out[0]).toBe(1);
    const s = out.indexOf(2);
    const m = out.indexOf(3);
    expect(s).toBeGreaterThan(0);
    expect(m).toBeGreaterThan(s);
    const prefix = out.slice(1, s);
    const suffix = out.slice(s + 1, m);
    const middle = out.slice(m + 1);
    expect([...prefix, ...middle, ...suffix]).toEqual(w.slice(0, 17));
  });
});
