import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { REPO_ROOT } from '../src/kernel.js';
import { jupyterEnv, python, requireSetup, tempRuns } from './jupyter.js';

const NOTEBOOKS = join(REPO_ROOT, 'notebooks');
const books = readdirSync(NOTEBOOKS).filter((f) => f.endsWith('.ipynb')).sort();

interface Notebook {
  metadata: { kernelspec?: { name?: string; display_name?: string } };
  cells: { cell_type: string; outputs?: unknown[]; execution_count?: number | null; source: string | string[] }[];
}
const read = (path: string) => JSON.parse(readFileSync(path, 'utf8')) as Notebook;

describe('notebook gallery', () => {
  it('holds the pretraining gallery, including the quickstart npm start opens', () => {
    expect(books).toEqual(expect.arrayContaining(['quickstart.ipynb', 'data.ipynb', 'pretrain-fim.ipynb', 'dense-vs-moe.ipynb']));
  });

  it.each(books)('%s is committed without outputs, on the lathe kernel', (name) => {
    const nb = read(join(NOTEBOOKS, name));
    expect(nb.metadata.kernelspec).toMatchObject({ name: 'lathe', display_name: 'Lathe (TypeScript)' });
    for (const c of nb.cells.filter((c) => c.cell_type === 'code')) {
      expect(c.outputs, `${name}: ${String(c.source).slice(0, 60)}`).toEqual([]);
      expect(c.execution_count).toBeNull();
    }
  });

  describe('headless runs (nbclient, LATHE_STEPS=4)', () => {
    const out = tempRuns('notebooks');
    const runs = tempRuns('notebook-runs');
    beforeAll(requireSetup);

    it.each(books)('%s runs every cell without error', async (name) => {
      const { code, out: log } = await python(['run_notebooks.py', NOTEBOOKS, out, name], jupyterEnv({ LATHE_STEPS: '4', LATHE_RUNS_DIR: runs }), 280_000);
      expect(code, log).toBe(0);
      const executed = read(join(out, name));
      const codeCells = executed.cells.filter((c) => c.cell_type === 'code');
      expect(codeCells.every((c) => typeof c.execution_count === 'number'), log).toBe(true);
      const errors = codeCells.flatMap((c) => (c.outputs ?? []).filter((o) => (o as { output_type: string }).output_type === 'error'));
      expect(errors, log).toEqual([]);
    }, 300_000);

    it('shows the live run chart in the executed quickstart, final state complete', () => {
      const nb = read(join(out, 'quickstart.ipynb'));
      const shown = nb.cells.flatMap((c) => c.outputs ?? []).find((o) => (o as { data?: Record<string, unknown> }).data?.['application/vnd.lathe.run+json']) as
        | { data: Record<string, { step: number; steps: number; status: string }> }
        | undefined;
      expect(shown?.data['application/vnd.lathe.run+json']).toMatchObject({ step: 4, steps: 4, status: 'completed' });
      expect(shown?.data).toHaveProperty(['application/vnd.plotly.v1+json']);
    });
  });
});
