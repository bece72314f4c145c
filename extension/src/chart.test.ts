import { describe, expect, it } from 'vitest';
import {
  chartKeys,
  decimate,
  ema,
  evalTable,
  figure,
  parseMetrics,
  payloadRuns,
  runSeries,
  DEFAULT_OPTIONS,
  type RunPayload,
} from './chart';

const run = (n: number, extra: (i: number) => Record<string, number> = () => ({})): RunPayload => ({
  id: 'r1',
  name: 'tiny',
  status: 'running',
  metrics: Array.from({ length: n }, (_, i) => ({
    step: i + 1,
    stage: 'pretrain',
    loss: 6 - i / n,
    lr: 1e-3,
    tokens: (i + 1) * 512,
    ...extra(i),
  })),
});

describe('ema', () => {
  it('is the identity at weight 0 and debiased (first point kept) otherwise', () => {
    expect(ema([3, 1, 2], 0)).toEqual([3, 1, 2]);
    const s = ema([3, 1, 2], 0.5);
    expect(s[0]).toBeCloseTo(3, 12);
    // (0.5*3*0.5 + 0.5*1) / (1 - 0.25) = (0.75 + 0.5) / 0.75
    expect(s[1]).toBeCloseTo(1.25 / 0.75, 12);
  });
  it('smooths noise: the variance of a noisy constant drops by more than 5x at 0.9', () => {
    let seed = 7;
    const rnd = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31 - 0.5;
    const xs = Array.from({ length: 2000 }, () => 1 + rnd());
    const v = (a: number[]) => a.reduce((s, x) => s + (x - 1) ** 2, 0) / a.length;
    expect(v(ema(xs, 0.9).slice(100))).toBeLessThan(v(xs) / 5);
  });
  it('passes non-finite values through without poisoning the rest', () => {
    const s = ema([1, NaN, 1], 0.5);
    expect(Number.isNaN(s[1])).toBe(true);
    expect(s[2]).toBeCloseTo(1, 12);
  });
});

describe('decimate', () => {
  it('keeps everything under the budget', () => {
    expect(decimate([1, 2, 3], [1, 2, 3], 100)).toEqual([0, 1, 2]);
  });
  it('brings 100k points under the budget, in order, keeping the ends and a lone spike', () => {
    const n = 100_000;
    const x = Array.from({ length: n }, (_, i) => i);
    const y = x.map((i) => (i === 54_321 ? 100 : Math.sin(i / 1000)));
    const keep = decimate(x, y, 2000);
    expect(keep.length).toBeLessThanOrEqual(2000);
    expect(keep.length).toBeGreaterThan(1000);
    expect(keep[0]).toBe(0);
    expect(keep.at(-1)).toBe(n - 1);
    expect(keep).toContain(54_321);
    for (let i = 1; i < keep.length; i++) expect(keep[i]!).toBeGreaterThan(keep[i - 1]!);
  });
});

describe('series and figure', () => {
  it('charts loss and eval loss on y, lr on y2, eval suite scores as their own traces', () => {
    const r = run(100, (i) =>
      i % 25 === 24 ? { eval_loss: 5, 'eval/tasks/accuracy': i / 100, 'eval/held/loss': 4 } : {},
    );
    expect(chartKeys(r.metrics)).toEqual(['loss', 'eval_loss', 'lr', 'eval/held/loss', 'eval/tasks/accuracy']);
    const s = runSeries(r, { ...DEFAULT_OPTIONS, smoothing: 0 });
    const by = Object.fromEntries(s.map((x) => [x.key, x]));
    expect(by.loss!.axis).toBe('y');
    expect(by.lr!.axis).toBe('y2');
    expect(by['eval/tasks/accuracy']!.axis).toBe('y2');
    expect(by['eval/held/loss']!.axis).toBe('y');
    expect(by.eval_loss!.x).toEqual([25, 50, 75, 100]);
    expect(by.eval_loss!.mode).toBe('lines+markers');
    expect(by.loss!.y[0]).toBe(6);
  });
  it('uses tokens on x when asked and scattergl for long traces', () => {
    const r = run(8000);
    const f = figure([r], { ...DEFAULT_OPTIONS, x: 'tokens', maxPoints: 100_000 });
    const loss = f.data.find((d) => d.name === 'loss')!;
    expect((loss.x as number[])[0]).toBe(512);
    expect(loss.type).toBe('scattergl');
    expect((f.layout.yaxis as { type: string }).type).toBe('linear');
    expect((figure([r], { ...DEFAULT_OPTIONS, logY: true }).layout.yaxis as { type: string }).type).toBe('log');
  });
  it('overlays several runs with their names', () => {
    const a = { ...run(10), id: 'a', name: 'dense' };
    const b = { ...run(10), id: 'b', name: 'moe' };
    const f = figure(payloadRuns({ runs: [a, b] }), DEFAULT_OPTIONS);
    expect(f.data.map((d) => d.name)).toEqual(['dense loss', 'dense lr', 'moe loss', 'moe lr']);
  });
  it('tables the latest eval score per suite metric', () => {
    const r = run(3, (i) => ({ 'eval/tasks/accuracy': i / 10 }));
    expect(evalTable(r)).toEqual([{ suite: 'tasks', metric: 'accuracy', value: 0.2, step: 3 }]);
  });
  it('parses metrics.jsonl, skipping a torn last line', () => {
    expect(parseMetrics('{"step":1,"loss":2}\n{"step":2,"lo').map((m) => m.step)).toEqual([1]);
  });
});
