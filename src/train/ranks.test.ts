import { describe, expect, it } from 'vitest';

import { RankMonitor } from './ranks.js';

const work = (rank: number, tokens: number, seconds: number) => ({ rank, host: `h${rank}`, tokens, seconds });

describe('RankMonitor', () => {
  it('sums work between metric lines and names a rank under 0.8 of the others', () => {
    const m = new RankMonitor(100);
    expect(m.take(1)).toBeUndefined();
    m.record([work(0, 1000, 1), work(1, 1000, 1)]);
    m.record([work(0, 1000, 1), work(1, 1000, 3)]);
    const r = m.take(2)!;
    expect(r.metrics).toEqual({ rank_tokens_per_s: [1000, 500], slowest_rank: 1 });
    expect(r.straggler).toBe("straggler: rank 1 on h1 at 500 tokens/s, 0.50 of the other ranks' median 1000 (2 ranks)");
    // Named again only when it moves or after `every` steps.
    m.record([work(0, 1000, 1), work(1, 500, 1)]);
    expect(m.take(3)!.straggler).toBeUndefined();
    m.record([work(0, 1000, 1), work(1, 500, 1)]);
    expect(m.take(102)!.straggler).toMatch(/^straggler: rank 1 /);
  });

  it('names nobody when the ranks are within 0.8 of each other', () => {
    const m = new RankMonitor();
    m.record([work(0, 900, 1), work(1, 1000, 1), work(2, 950, 1)]);
    const r = m.take(5)!;
    expect(r.metrics.slowest_rank).toBe(0);
    expect(r.straggler).toBeUndefined();
  });
});
