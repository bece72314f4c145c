import { describe, expect, it } from 'vitest';
import {
  FRONTEND_TYPES,
  KERNEL_TYPES,
  parseFrontendMessage,
  parseKernelMessage,
  type RunInfo,
  type RunsFrontendMessage,
  type RunsKernelMessage,
} from './runs-comm.js';

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
const roomRef = {
  name: 'run:r1',
  path: 'lathe-rooms/run%3Ar1',
  param: 'room_token',
  token: 't',
  role: 'read',
  expires: '2026-01-01T00:00:00.000Z',
} as const;
const metric = { step: 3, stage: 'pretrain', loss: 5.5, lr: 0.001, grad_norm: null, moe_load: [0.5, 0.5] };
const event = { time: '2026-01-01T00:00:00Z', type: 'started' as const, message: 'started' };
const summary = {
  id: 'r1',
  lockId: 'l',
  stage: 'pretrain',
  status: 'completed' as const,
  step: 10,
  steps: 10,
  tokens: 100,
  seconds: 2,
  backend: 'cpu',
  lathe: '0.1.0',
};

/** One valid message of every type, both ways (some types twice, with their optional fields). */
const VALID_FRONTEND: RunsFrontendMessage[] = [
  { type: 'list' },
  { type: 'follow', id: 'r1' },
  { type: 'unfollow', id: 'r1' },
  { type: 'cancel', id: 'r1' },
  { type: 'cancel', id: 'r1', by: 'Ada' },
  { type: 'interrupt', id: 'r1' },
];
/** One valid message of every type from the kernel. */
const VALID_KERNEL: RunsKernelMessage[] = [
  { type: 'runs', runs: [] },
  { type: 'runs', runs: [info, { ...info, id: 'r2', name: null, loss: null, live: false, status: 'failed' }] },
  { type: 'started', run: { ...info, roomRef } },
  { type: 'snapshot', id: 'r1', run: info, metrics: [metric as never], events: [event] },
  { type: 'metric', id: 'r1', metric: metric as never },
  { type: 'event', id: 'r1', event: { ...event, type: 'checkpoint', step: 2 } },
  { type: 'done', id: 'r1', summary, run: { ...info, status: 'completed', live: false } },
  { type: 'done', id: 'r1', summary: null, run: { ...info, status: 'failed', live: false } },
  { type: 'ack', request: 'cancel', id: 'r1' },
  { type: 'error', request: 'follow', id: 'nope', message: 'no run nope in this kernel' },
  { type: 'error', request: null, field: 'type', message: 'bad' },
];

describe('lathe.runs comm messages', () => {
  it('accepts every valid message, both ways, and covers every declared type', () => {
    for (const m of VALID_FRONTEND)
      expect(parseFrontendMessage(m), JSON.stringify(m)).toEqual({ ok: true, message: m });
    for (const m of VALID_KERNEL) expect(parseKernelMessage(m), JSON.stringify(m)).toEqual({ ok: true, message: m });
    expect(new Set(VALID_FRONTEND.map((m) => m.type))).toEqual(new Set(FRONTEND_TYPES));
    expect(new Set(VALID_KERNEL.map((m) => m.type))).toEqual(new Set(KERNEL_TYPES));
    // A newer peer may add fields: they are let through.
    expect(parseFrontendMessage({ type: 'follow', id: 'r1', since: 4 }).ok).toBe(true);
  });

  it('rejects malformed frontend messages, naming the field', () => {
    const cases: [unknown, string, RegExp][] = [
      [42, '', /bad frontend message: expected an object, got 42/],
      [null, '', /expected an object, got null/],
      [['list'], '', /expected an object, got an array/],
      [{}, 'type', /type: expected one of list, follow, unfollow, cancel, interrupt, got nothing/],
      [{ type: 'explode', id: 'r1' }, 'type', /got "explode"/],
      [
        { type: 'follow' },
        'id',
        /bad frontend "follow" message: id: expected a run id \(a non-empty string\), got nothing/,
      ],
      [{ type: 'unfollow', id: '' }, 'id', /id: expected a run id/],
      [{ type: 'interrupt', id: 7 }, 'id', /id: expected a run id .* got 7/],
      [{ type: 'cancel', id: 'r1', by: 3 }, 'by', /"cancel" message: by: expected a string, got 3/],
    ];
    for (const [data, field, error] of cases) {
      const p = parseFrontendMessage(data);
      expect(p.ok, JSON.stringify(data)).toBe(false);
      if (p.ok) continue;
      expect(p.field, JSON.stringify(data)).toBe(field);
      expect(p.error).toMatch(/^lathe\.runs: bad frontend/);
      expect(p.error).toMatch(error);
    }
  });

  it('rejects malformed kernel messages, naming the field (nested paths included)', () => {
    const cases: [unknown, string, RegExp][] = [
      ['runs', '', /expected an object/],
      [{ type: 'runs' }, 'runs', /runs: expected an array, got nothing/],
      [
        { type: 'runs', runs: [info, { ...info, status: 'exploded' }] },
        'runs[1].status',
        /expected one of running, completed, interrupted, cancelled, failed, got "exploded"/,
      ],
      [{ type: 'started', run: { ...info, live: 'yes' } }, 'run.live', /expected true or false/],
      [
        { type: 'started', run: { ...info, roomRef: { ...roomRef, role: 'owner' } } },
        'run.roomRef.role',
        /one of read, write/,
      ],
      [{ type: 'started', run: { ...info, step: Number.NaN } }, 'run.step', /expected a number, got NaN/],
      [
        { type: 'snapshot', id: 'r1', run: info, metrics: [{ step: 1 }], events: [] },
        'metrics[0].stage',
        /expected a string, got nothing/,
      ],
      [
        { type: 'snapshot', id: 'r1', run: info, metrics: [], events: [{ type: 'started' }] },
        'events[0].time',
        /expected a string/,
      ],
      [{ type: 'metric', id: 'r1', metric: { step: 's', stage: 'sft' } }, 'metric.step', /expected a number, got "s"/],
      [
        { type: 'metric', id: 'r1', metric: { step: 1, stage: 'sft', loss: {} } },
        'metric.loss',
        /a number, a string, null or a list of numbers, got an object/,
      ],
      [{ type: 'event', id: 'r1', event: { ...event, step: '2' } }, 'event.step', /expected a number/],
      [{ type: 'done', id: 'r1', run: info }, 'summary', /summary: expected an object, got nothing/],
      [
        { type: 'done', id: 'r1', run: info, summary: { ...summary, status: 'done' } },
        'summary.status',
        /one of running/,
      ],
      [{ type: 'ack', request: 'list', id: 'r1' }, 'request', /one of unfollow, cancel, interrupt, got "list"/],
      [{ type: 'error', request: 'follow' }, 'message', /message: expected a string, got nothing/],
    ];
    for (const [data, field, error] of cases) {
      const p = parseKernelMessage(data);
      expect(p.ok, JSON.stringify(data)).toBe(false);
      if (p.ok) continue;
      expect(p.field, JSON.stringify(data)).toBe(field);
      expect(p.error).toMatch(/^lathe\.runs: bad kernel/);
      expect(p.error).toMatch(error);
    }
  });
});
