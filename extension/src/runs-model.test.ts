import { describe, expect, it } from 'vitest';
import { formatElapsed, mergeRows, ranksOf, rowFromDir, rowFromKernel, workspacePath } from './runs-model';

describe('runs panel rows', () => {
  const lock = { recipe: { name: 'tally', stage: 'pretrain', train: { steps: 300 } } };
  it('reads a finished run from its summary and a running one from its metrics', () => {
    const done = rowFromDir('runs/a', {
      lock,
      summary: { id: 'a1', status: 'completed', step: 300, steps: 300, loss: 1.7, seconds: 95, tokens_per_s: 2000 },
    });
    expect(done).toMatchObject({
      id: 'a1',
      name: 'tally',
      status: 'completed',
      step: 300,
      loss: 1.7,
      elapsed: 95,
      tokensPerS: 2000,
      source: 'workspace',
    });
    const live = rowFromDir('runs/b', {
      lock,
      metrics: [
        { step: 1, loss: 6 },
        { step: 2, loss: 5.5, tokens_per_s: 1800 },
      ],
      events: [{ type: 'started', time: '2026-01-01T00:00:00Z' }],
    });
    expect(live).toMatchObject({
      status: 'running',
      step: 2,
      steps: 300,
      loss: 5.5,
      tokensPerS: 1800,
      startedAt: Date.parse('2026-01-01T00:00:00Z'),
    });
  });
  it('maps kernel run dirs into the workspace and merges them over directory rows', () => {
    expect(workspacePath('/srv/ws/nb/runs/x', '/srv/ws')).toBe('nb/runs/x');
    expect(workspacePath('/elsewhere/x', '/srv/ws')).toBeNull();
    const dirRow = rowFromDir('nb/runs/x', { lock, metrics: [{ step: 1, loss: 6 }] });
    const k = rowFromKernel(
      {
        id: 'x',
        room: 'run:x',
        dir: '/srv/ws/nb/runs/x',
        name: 'tally',
        stage: 'pretrain',
        status: 'running',
        step: 5,
        steps: 300,
        loss: 5,
        live: true,
      },
      'k1',
      '/srv/ws',
      { step: 7, loss: 4.5, tokens_per_s: 10 },
    );
    const other = rowFromDir('runs/old', { lock, summary: { status: 'completed', step: 300 } });
    const rows = mergeRows([dirRow, other], [k]);
    expect(rows).toHaveLength(2);
    expect(rows[0]).toMatchObject({ key: 'nb/runs/x', source: 'kernel', kernelId: 'k1', step: 7, loss: 4.5 });
  });
  it('formats elapsed time', () => {
    expect(formatElapsed(42)).toBe('42s');
    expect(formatElapsed(185)).toBe('3m 05s');
    expect(formatElapsed(3720)).toBe('1h 02m');
    expect(formatElapsed(null)).toBe('');
  });

  it('shows the ranks of a multi-rank run and names a straggler', () => {
    expect(ranksOf(null, { step: 1 })).toBeNull();
    expect(ranksOf({ ranks: 1, parallel: 'ddp' }, { step: 1 })).toBeNull();
    const even = ranksOf({ ranks: 2, parallel: 'ddp' }, { step: 5, rank_tokens_per_s: [1000, 950] });
    expect(even).toEqual({ text: '2 ddp', title: 'rank 0: 1000 tok/s\nrank 1: 950 tok/s', straggler: null });
    const slow = ranksOf({ ranks: 3, parallel: 'fsdp' }, { step: 5, rank_tokens_per_s: [1000, 400, 990] });
    expect(slow).toMatchObject({ text: '3 fsdp · rank 1 slow', straggler: 1 });
    const row = rowFromDir('runs/d', {
      lock: { recipe: { ...lock.recipe, resources: { gpus: 2, nodes: 1, parallel: 'ddp' } } },
      metrics: [{ step: 3, loss: 5, rank_tokens_per_s: [300, 1000] }],
    });
    expect(row.ranks).toMatchObject({ text: '2 ddp · rank 0 slow', straggler: 0 });
  });
});
