import { join } from 'node:path';
import { describe, expect, it, vi } from 'vitest';
import { CommManager } from './comms.js';
import {
  bundleOf,
  compareBundle,
  PLOTLY_MIME,
  progressLine,
  RECIPE_MIME,
  RUN_MIME,
  tableBundle,
  type RunLike,
} from './display.js';
import { REPO_ROOT } from './kernel.js';
import { LiveRunDisplay } from './live.js';
import type { Message } from './wire.js';

// A Run stand-in with the parts displays use.
function fakeRun(steps = 10) {
  const metricFns = new Set<(m: unknown) => void>();
  const eventFns = new Set<(e: unknown) => void>();
  let finish!: () => void;
  const run = {
    id: 'tally-abc',
    dir: { path: '/tmp/runs/tally-abc' },
    lock: { id: 'abc', recipe: { name: 'tally', stage: 'pretrain', train: { steps } } },
    status: 'running' as RunLike['status'],
    summary: undefined as RunLike['summary'],
    metricsSoFar: [] as RunLike['metricsSoFar'],
    events: [] as RunLike['events'],
    done: new Promise<void>((r) => (finish = r)),
    onMetric: (fn: (m: unknown) => void) => (metricFns.add(fn), () => metricFns.delete(fn)),
    onEvent: (fn: (e: unknown) => void) => (eventFns.add(fn), () => eventFns.delete(fn)),
    step(step: number) {
      const m = {
        step,
        stage: 'pretrain',
        loss: 5 - step / 10,
        tokens_per_s: 2000,
        ...(step % 5 === 0 ? { eval_loss: 5 - step / 9 } : {}),
      };
      run.metricsSoFar.push(m);
      for (const f of metricFns) f(m);
    },
    end() {
      run.status = 'completed';
      run.events.push({ time: '', type: 'completed', step: steps, message: `completed ${steps} steps` });
      run.summary = {
        id: run.id,
        lockId: 'abc',
        stage: 'pretrain',
        status: 'completed',
        step: steps,
        steps,
        loss: 4,
        tokens: 1,
        seconds: 1,
        backend: 'wasm',
        lathe: '0',
      };
      finish();
    },
  };
  return run;
}

describe('run display', () => {
  it('carries the run id, room, metrics snapshot, a Plotly chart, HTML and one line of text', () => {
    const run = fakeRun();
    run.step(1);
    run.step(2);
    const b = bundleOf(run as never);
    expect(b[RUN_MIME]).toMatchObject({
      id: 'tally-abc',
      room: 'run:tally-abc',
      step: 2,
      steps: 10,
      status: 'running',
    });
    expect((b[RUN_MIME] as { metrics: unknown[] }).metrics).toHaveLength(2);
    expect((b[PLOTLY_MIME] as { data: { name: string; y: number[] }[] }).data[0]).toMatchObject({
      name: 'loss',
      y: [4.9, 4.8],
    });
    expect(b['text/html']).toContain('<svg');
    expect(b['text/plain']).toMatch(/step 2\/10 · loss 4.8 · 2,000 tok\/s · running/);
  });

  it('updates in place at most every interval, and always sends the complete final state', async () => {
    vi.useFakeTimers();
    try {
      let now = 0;
      const sent: { id: string; update: boolean; step: number }[] = [];
      const run = fakeRun(10);
      const live = new LiveRunDisplay(
        run as never,
        (b, id, update) => sent.push({ id, update, step: (b[RUN_MIME] as { step: number }).step }),
        { intervalMs: 250, now: () => now },
      );
      for (let s = 1; s <= 10; s++) {
        now += 50; // 20 metrics a second: far more than the display sends
        vi.advanceTimersByTime(50);
        run.step(s);
      }
      run.end();
      await live.finished;
      expect(sent[0]).toMatchObject({ update: false, step: 0 });
      expect(new Set(sent.map((s) => s.id))).toEqual(new Set([live.displayId]));
      const updates = sent.filter((s) => s.update);
      expect(updates.length).toBeLessThanOrEqual(4);
      expect(updates.at(-1)!.step).toBe(10);
      expect(progressLine(run as never)).toMatch(/completed: completed 10 steps/);
    } finally {
      vi.useRealTimers();
    }
  });
});

describe('tables and recipe cards', () => {
  it('renders records and eval results as tables', () => {
    const t = tableBundle([{ path: 'model.arch', before: 'dense', after: 'moe' }]);
    expect(t['text/html']).toContain('<th style="text-align:left">path</th>');
    expect(t['text/plain']).toMatch(/path\s+before\s+after/);
    expect(bundleOf({ step: 5, loss: 4.2, perplexity: 66.7, batches: 4 })['text/html']).toContain('<table');
    expect(bundleOf({ a: { nested: 1 } })['text/html']).toBeUndefined();
  });

  it('renders a recipe as a card', async () => {
    const { recipe } = (await import(join(REPO_ROOT, 'dist', 'src', 'index.js'))) as typeof import('lathe');
    const r = recipe.pretrain({
      name: 'card',
      data: { sources: [{ path: 'x.jsonl' }] },
      model: { arch: 'moe', experts: 4 },
    });
    const b = bundleOf(r);
    expect(b[RECIPE_MIME]).toMatchObject({ name: 'card', stage: 'pretrain', recipe: { name: 'card' } });
    expect(b['text/html']).toContain('moe · 2 layers');
    expect(b['text/plain']).toMatch(/^Recipe card/);
  });

  it('renders a pipeline as a card listing its stages, and a post-training stage without the base’s model', async () => {
    const { recipe } = (await import(join(REPO_ROOT, 'dist', 'src', 'index.js'))) as typeof import('lathe');
    const p = await recipe.load(join(REPO_ROOT, 'examples', 'recipes', 'tally-pipeline.json'));
    const b = bundleOf(p);
    expect(b[RECIPE_MIME]).toMatchObject({ name: 'tally-pipeline', stage: 'pipeline' });
    expect((b[RECIPE_MIME] as { stages: unknown[] }).stages).toEqual([
      { index: 0, stage: 'pretrain', steps: 300, from: 'a fresh model' },
      { index: 1, stage: 'sft', steps: 100, from: "stage 1's final checkpoint" },
      { index: 2, stage: 'dpo', steps: 60, from: "stage 2's final checkpoint" },
      { index: 3, stage: 'grpo', steps: 30, from: "stage 3's final checkpoint" },
    ]);
    const text = String(b['text/plain']);
    expect(text).toMatch(
      /^Pipeline tally-pipeline\n {2}stages {4}pretrain → sft → dpo → grpo\n {2}training {2}490 steps in all/,
    );
    expect(text).toMatch(
      /4 {2}grpo {6}stage 3's final checkpoint .* prompts\.jsonl {5}reward\.ts#programReward {2}30 steps · batch 4/,
    );
    expect(b['text/html']).toContain('<th style="text-align:left">starts from</th>');

    const grpo = bundleOf(await recipe.load(join(REPO_ROOT, 'examples', 'recipes', 'tally-grpo.json')));
    expect(grpo['text/plain']).toMatch(/from {6}\.\.\/\.\.\/runs\/tally-sft\n/);
    expect(grpo['text/plain']).toMatch(
      /reward {4}reward\.ts#programReward\n {2}training {2}30 steps · batch 4 · lr 5\.000e-4 · 8 completions per prompt · β 0\.04/,
    );
    // The base decides architecture and tokenizer, so the card shows neither.
    expect(grpo['text/plain']).not.toMatch(/model|tokenizer/);
  });
});

describe('comms', () => {
  const msg = (content: Record<string, unknown>) => ({ content, header: { msg_id: 'm' } }) as unknown as Message;

  it('opens, routes, lists and closes comms; unknown targets are closed at once', () => {
    const sent: [string, Record<string, unknown>][] = [];
    const cm = new CommManager((type, content) => sent.push([type, content]));
    const got: unknown[] = [];
    cm.registerTarget('echo', (comm) => comm.onMsg((data) => comm.send({ echo: data })));
    cm.handleOpen(msg({ comm_id: 'c1', target_name: 'echo', data: {} }));
    cm.handleMsg(msg({ comm_id: 'c1', data: { x: 1 } }));
    expect(sent).toContainEqual(['comm_msg', { comm_id: 'c1', data: { echo: { x: 1 } } }]);
    expect(cm.info()).toEqual({ comms: { c1: { target_name: 'echo' } } });
    expect(cm.info('other')).toEqual({ comms: {} });
    cm.handleClose(msg({ comm_id: 'c1' }));
    expect(cm.info()).toEqual({ comms: {} });
    cm.handleOpen(msg({ comm_id: 'c2', target_name: 'nope' }));
    expect(sent.at(-1)![0]).toBe('comm_close');
    expect(got).toEqual([]);
  });
});

describe('diffs and comparisons for the extension', () => {
  it('shows recipe.diff(a, b) as a diff card with a table fallback', () => {
    const b = bundleOf([
      { path: 'model.dim', kind: 'changed', before: 128, after: 256 },
      { path: 'model.experts', kind: 'added', after: 8 },
    ]);
    expect(b[RECIPE_MIME]).toEqual({
      version: 1,
      diff: {
        a: 'before',
        b: 'after',
        changes: [
          { path: 'model.dim', kind: 'changed', before: 128, after: 256 },
          { path: 'model.experts', kind: 'added', after: 8 },
        ],
      },
    });
    expect(b['text/plain']).toMatch(/model\.dim\s+changed\s+128\s+256/);
  });
  it('overlays compared runs in one run bundle, each named', () => {
    const run = (id: string, name: string): RunLike => ({
      id,
      dir: { path: `/r/${id}` },
      lock: { id: 'l', recipe: { name, stage: 'pretrain', train: { steps: 2 } } },
      status: 'completed',
      metricsSoFar: [
        { step: 1, stage: 'pretrain', loss: 3 },
        { step: 2, stage: 'pretrain', loss: 2 },
      ] as never,
      events: [],
    });
    const b = compareBundle([run('a', 'dense'), run('b', 'moe')]);
    const data = b[RUN_MIME] as { runs: { id: string; name: string; metrics: unknown[] }[] };
    expect(data.runs.map((r) => [r.id, r.name, r.metrics.length])).toEqual([
      ['a', 'dense', 2],
      ['b', 'moe', 2],
    ]);
    expect(b[PLOTLY_MIME]).toBeDefined();
  });
});
