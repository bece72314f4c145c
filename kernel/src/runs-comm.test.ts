import type * as Lathe from 'lathe';
import { describe, expect, it } from 'vitest';
import { parseKernelMessage, type RunsKernelMessage } from '../../dist/src/rooms/runs-comm.js';
import { CommManager } from './comms.js';
import { registerRunsTarget } from './runs-comm.js';
import type { Message } from './wire.js';

// A Run stand-in with the parts the comm uses; `step` streams a metric, `end` finishes it.
function fakeRun(id: string) {
  const metricFns = new Set<(m: Lathe.runs.Metric) => void>();
  let finish!: () => void;
  const run = {
    id,
    dir: { path: `/ws/runs/${id}` },
    lock: { id: 'l', recipe: { name: 'tally', stage: 'pretrain', train: { steps: 10 } } },
    status: 'running' as Lathe.runs.RunSummary['status'],
    summary: undefined as Lathe.runs.RunSummary | undefined,
    metricsSoFar: [] as Lathe.runs.Metric[],
    events: [{ time: '2026-01-01T00:00:00Z', type: 'started', message: 'started' }] as Lathe.runs.RunEvent[],
    done: new Promise<void>((r) => (finish = r)),
    cancelled: 0,
    interrupted: 0,
    onMetric: (fn: (m: Lathe.runs.Metric) => void) => (metricFns.add(fn), () => metricFns.delete(fn)),
    onEvent: () => () => undefined,
    cancel: () => void run.cancelled++,
    interrupt: () => void run.interrupted++,
    step(step: number) {
      const m = { step, stage: 'pretrain', loss: 5 - step / 10 };
      run.metricsSoFar.push(m);
      for (const f of metricFns) f(m);
    },
    end() {
      run.status = 'cancelled';
      run.summary = {
        ...{ id, lockId: 'l', stage: 'pretrain', status: 'cancelled', step: 2, steps: 10 },
        ...{ tokens: 1, seconds: 1, backend: 'cpu', lathe: '0' },
      };
      finish();
    },
  };
  return run;
}

function setup() {
  const sent: RunsKernelMessage[] = [];
  const warnings: string[] = [];
  const cm = new CommManager(
    (type, content) => type === 'comm_msg' && sent.push(content.data as RunsKernelMessage),
    (w) => warnings.push(w),
  );
  const live = fakeRun('r1');
  const cancelledBy: string[] = [];
  registerRunsTarget(
    cm,
    () => [live as unknown as Lathe.Run],
    () => () => undefined,
    (_run, by) => (cancelledBy.push(by), true),
  );
  const msg = (content: Record<string, unknown>) => ({ content, header: { msg_id: 'm' } }) as unknown as Message;
  cm.handleOpen(msg({ comm_id: 'c', target_name: 'lathe.runs', data: {} }));
  const request = (data: unknown) => cm.handleMsg(msg({ comm_id: 'c', data }));
  return { sent, warnings, live, cancelledBy, request };
}

describe('lathe.runs, the kernel end', () => {
  it('answers every valid request with messages the frontend accepts', async () => {
    const { sent, warnings, live, cancelledBy, request } = setup();
    expect(sent[0]).toMatchObject({ type: 'runs', runs: [{ id: 'r1', live: true, room: 'run:r1' }] });
    request({ type: 'list' });
    request({ type: 'follow', id: 'r1' });
    live.step(1);
    live.step(2);
    request({ type: 'interrupt', id: 'r1' });
    request({ type: 'cancel', id: 'r1', by: 'Ada' });
    request({ type: 'cancel', id: 'r1' });
    live.end();
    await live.done;
    await new Promise((r) => setTimeout(r, 0));
    request({ type: 'unfollow', id: 'r1' });
    expect(sent.map((m) => m.type)).toEqual([
      'runs',
      'runs',
      'snapshot',
      'metric',
      'metric',
      'ack',
      'ack',
      'ack',
      'done',
      'ack',
    ]);
    expect(sent.find((m) => m.type === 'done')).toMatchObject({ summary: { status: 'cancelled' } });
    // Cancel with `by` goes through the run's room; without, straight to the run.
    expect(cancelledBy).toEqual(['Ada']);
    expect([live.cancelled, live.interrupted]).toEqual([1, 1]);
    for (const m of sent) expect(parseKernelMessage(m), JSON.stringify(m)).toMatchObject({ ok: true });
    expect(warnings).toEqual([]);
  });

  it('answers a malformed request with an error naming the field, and goes on', () => {
    const { sent, warnings, live, request } = setup();
    sent.length = 0;
    request({ type: 'follow' });
    request({ type: 'cancel', id: 'r1', by: 7 });
    request({ type: 'launch', id: 'r1' });
    request({ id: 5 });
    request({ type: 'follow', id: 'nope' });
    request(null);
    request('list');
    expect(sent).toEqual([
      {
        type: 'error',
        request: 'follow',
        id: null,
        field: 'id',
        message: 'lathe.runs: bad frontend "follow" message: id: expected a run id (a non-empty string), got nothing',
      },
      expect.objectContaining({ type: 'error', request: 'cancel', id: 'r1', field: 'by' }),
      expect.objectContaining({ type: 'error', request: 'launch', field: 'type' }),
      expect.objectContaining({ type: 'error', request: null, id: null, field: 'type' }),
      { type: 'error', request: 'follow', id: 'nope', message: 'no run nope in this kernel' },
      expect.objectContaining({ type: 'error', request: null, field: '', message: expect.stringMatching(/got null/) }),
      expect.objectContaining({
        type: 'error',
        request: null,
        field: '',
        message: expect.stringMatching(/got "list"/),
      }),
    ]);
    expect(sent[1]!.type === 'error' && sent[1]!.message).toMatch(/by: expected a string, got 7/);
    expect(live.cancelled).toBe(0);
    for (const m of sent) expect(parseKernelMessage(m).ok).toBe(true);
    // Still working after them.
    request({ type: 'list' });
    expect(sent.at(-1)).toMatchObject({ type: 'runs' });
    expect(warnings).toEqual([]);
  });
});
