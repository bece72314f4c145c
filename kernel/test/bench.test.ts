import { describe, expect, it } from 'vitest';
import { requireSetup } from './jupyter.js';

describe('kernel-latency bench case (npm run bench)', () => {
  it('measures the lathe kernel and ipykernel in one run and reports rows in bench/results.json shape', async () => {
    requireSetup();
    // @ts-expect-error: plain ESM module of the bench, without type declarations
    const { kernelLatency } = (await import('../../bench/kernel.mjs')) as {
      kernelLatency(o: { quick: boolean }): Promise<Record<string, any>[]>;
    };
    const rows = await kernelLatency({ quick: true });
    expect(rows.map((r) => [r.name, r.unit])).toEqual([
      ['kernel-latency', 'ms'],
      ['kernel-latency:p95', 'ms'],
    ]);
    for (const r of rows) {
      expect(r.ours).toBeGreaterThan(0);
      expect(r.reference).toBeGreaterThan(0);
      // Higher is better: ipykernel's time over ours.
      expect(r.ratio).toBeCloseTo(r.reference / r.ours, 2);
      expect(r.detail.lathe.n).toBe(50);
      expect(r.detail.ipykernel.n).toBe(50);
    }
    expect(rows[1]!.ours).toBeGreaterThanOrEqual(rows[0]!.ours);
  }, 120_000);
});
