import { afterEach, describe, expect, it, vi } from 'vitest';
import { parseFrontendMessage, type RunInfo, type RunsKernelMessage } from '../../dist/src/rooms/runs-comm.js';
import { KernelRuns, type RunsKernel } from './kernel-runs';

// A kernel connection stand-in: one comm that records what the model sends.
function fakeKernel() {
  const sent: unknown[] = [];
  const comm = {
    isDisposed: false,
    onMsg: undefined as unknown,
    open: vi.fn(),
    close: vi.fn(),
    send: (data: unknown) => void sent.push(data),
  };
  const kernel = { id: 'k1', createComm: vi.fn(() => comm) } as unknown as RunsKernel;
  return { kernel, comm, sent };
}

const info: RunInfo = {
  id: 'r1',
  room: 'run:r1',
  dir: '/ws/runs/r1',
  name: 'tally',
  stage: 'pretrain',
  status: 'running',
  step: 3,
  steps: 10,
  loss: 5.5,
  live: true,
};

afterEach(() => vi.restoreAllMocks());

describe('lathe.runs, the browser end', () => {
  it('takes every kernel message in, follows live runs, and sends only valid requests', () => {
    const { kernel, comm, sent } = fakeKernel();
    const changed = vi.fn();
    const runs = new KernelRuns(kernel, changed);
    expect(kernel.createComm).toHaveBeenCalledWith('lathe.runs');
    expect(comm.open).toHaveBeenCalled();
    const got: RunsKernelMessage[] = [];
    const stop = runs.follow('r1', (m) => got.push(m));
    const messages: RunsKernelMessage[] = [
      { type: 'runs', runs: [info, { ...info, id: 'r0', live: false, status: 'completed' }] },
      { type: 'started', run: { ...info, id: 'r2' } },
      {
        type: 'snapshot',
        id: 'r1',
        run: info,
        metrics: [{ step: 3, stage: 'pretrain', loss: 5.5 }],
        events: [{ time: '2026-01-01T00:00:00Z', type: 'started', message: 'started' }],
      },
      { type: 'metric', id: 'r1', metric: { step: 4, stage: 'pretrain', loss: 5.2 } },
      { type: 'event', id: 'r1', event: { time: '2026-01-01T00:01:00Z', type: 'checkpoint', message: 'ckpt' } },
      { type: 'ack', request: 'cancel', id: 'r1' },
      { type: 'done', id: 'r1', summary: null, run: { ...info, status: 'cancelled', live: false, step: 4 } },
      { type: 'error', request: 'follow', id: 'r1', message: 'no run r1 in this kernel' },
    ];
    const warn = vi.spyOn(console, 'warn').mockImplementation(() => undefined);
    const error = vi.spyOn(console, 'error').mockImplementation(() => undefined);
    for (const m of messages) runs.receive(JSON.parse(JSON.stringify(m)));
    expect(error).not.toHaveBeenCalled();
    expect(warn).toHaveBeenCalledWith('lathe.runs (kernel k1): no run r1 in this kernel');
    expect(changed).toHaveBeenCalledTimes(messages.length);
    expect([...runs.infos.keys()]).toEqual(['r1', 'r0', 'r2']);
    expect(runs.infos.get('r1')).toMatchObject({ status: 'cancelled', step: 4 });
    expect(runs.last.get('r1')).toEqual({ step: 4, stage: 'pretrain', loss: 5.2 });
    expect(runs.started.get('r1')).toBe(Date.parse('2026-01-01T00:00:00Z'));
    // Every message about r1 reached its follower; `runs` and `started` carry no run id of their own.
    expect(got.map((m) => m.type)).toEqual(['snapshot', 'metric', 'event', 'ack', 'done', 'error']);
    stop();
    runs.cancel('r1', 'Ada');
    // The follow asked for, then each live run it learnt of, once; everything sent is a valid request.
    expect(sent).toEqual([
      { type: 'follow', id: 'r1' },
      { type: 'follow', id: 'r1' },
      { type: 'follow', id: 'r2' },
      { type: 'cancel', id: 'r1', by: 'Ada' },
    ]);
    for (const m of sent) expect(parseFrontendMessage(m).ok).toBe(true);
    runs.dispose();
    expect(comm.close).toHaveBeenCalled();
  });

  it('logs a malformed kernel message, naming the field, and drops it without a crash', () => {
    const { kernel } = fakeKernel();
    const changed = vi.fn();
    const runs = new KernelRuns(kernel, changed);
    const error = vi.spyOn(console, 'error').mockImplementation(() => undefined);
    const followed = vi.fn();
    runs.follow('r1', followed);
    const bad: [unknown, RegExp][] = [
      [undefined, /bad kernel message: expected an object, got nothing/],
      [{ type: 'runs', runs: [{ ...info, status: 'paused' }] }, /"runs" message: runs\[0\]\.status: expected one of/],
      [{ type: 'metric', id: 'r1', metric: { stage: 'pretrain' } }, /metric\.step: expected a number, got nothing/],
      [{ type: 'snapshot', id: 'r1', run: info, metrics: null, events: [] }, /metrics: expected an array, got null/],
      [{ type: 'teleport', id: 'r1' }, /type: expected one of runs, started, .*got "teleport"/],
    ];
    for (const [data] of bad) expect(() => runs.receive(data)).not.toThrow();
    expect(error).toHaveBeenCalledTimes(bad.length);
    for (const [i, [, message]] of bad.entries()) {
      expect(error.mock.calls[i]![0]).toMatch(message);
      expect(error.mock.calls[i]![0]).toMatch(/\(kernel k1\)$/);
    }
    expect(runs.infos.size).toBe(0);
    expect(runs.last.size).toBe(0);
    expect(followed).not.toHaveBeenCalled();
    expect(changed).not.toHaveBeenCalled();
    // A good message after the bad ones still goes through.
    runs.receive({ type: 'started', run: info });
    expect(runs.infos.get('r1')).toEqual(info);
  });
});
