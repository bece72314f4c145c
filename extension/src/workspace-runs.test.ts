import { describe, expect, it } from 'vitest';
import { scanWorkspace, type WorkspaceFiles } from './workspace-runs';

// Jupyter's contents API over an in-memory tree: folders list their children, files hold text.
function fakeFiles(tree: Record<string, string | null>) {
  const asked: string[] = [];
  const files: WorkspaceFiles = {
    get: async (path: string) => {
      asked.push(path);
      if (typeof tree[path] === 'string') return { content: tree[path] } as never;
      const prefix = path ? `${path}/` : '';
      const children = Object.keys(tree).filter((p) => p.startsWith(prefix) && !p.slice(prefix.length).includes('/'));
      if (path && tree[path] === undefined) throw new Error(`404 ${path}`);
      return { content: children.map((p) => ({ path: p, type: tree[p] === null ? 'directory' : 'file' })) } as never;
    },
  };
  return { files, asked };
}

const lock = JSON.stringify({ recipe: { name: 'tally', stage: 'pretrain', train: { steps: 10 } } });

describe('workspace scanner', () => {
  it('reads run directories, skips missing folders without asking for them, and reuses finished rows', async () => {
    const { files, asked } = fakeFiles({
      runs: null,
      'runs/a': null,
      'runs/a/recipe.lock.json': lock,
      'runs/a/summary.json': JSON.stringify({ id: 'a', status: 'completed', step: 10, steps: 10, loss: 2 }),
      'runs/b': null,
      'runs/b/recipe.lock.json': lock,
      'runs/b/metrics.jsonl': '{"step":1,"stage":"pretrain","loss":6}\n{"step":2,"stage":"pretrain","loss":5}\n',
      'runs/b/events.jsonl': '{"time":"2026-01-01T00:00:00Z","type":"started","message":"started"}\n',
      'runs/not-a-run': null,
    });
    const rows = await scanWorkspace(files, ['runs', 'notebooks/runs']);
    expect(rows.map((r) => [r.key, r.status, r.step])).toEqual([
      ['runs/a', 'completed', 10],
      ['runs/b', 'running', 2],
    ]);
    expect(asked).not.toContain('notebooks/runs');
    asked.length = 0;
    const again = await scanWorkspace(files, ['runs'], rows);
    expect(again[0]).toBe(rows[0]);
    expect(asked.filter((p) => p.startsWith('runs/a/'))).toEqual([]);
    expect(asked).toContain('runs/b/metrics.jsonl');
  });
});
