import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { Recipe } from '../src/runs/recipe.js';
import { scratch, tallySlice, tinyRecipe } from './helpers.js';

describe('eval suites during training', () => {
  it('run every N steps into metrics.jsonl, and gates mark the summary', async () => {
    const dir = await scratch();
    const data = await tallySlice(dir, 300);
    const rows = [
      { prompt: 'let px = 1\nemit ', expected: 'px' },
      { prompt: 'let qty = 2\nemit ', expected: 'qty' },
      { prompt: 'let fee = 3\nemit ', expected: 'fee' },
    ];
    await writeFile(join(dir, 'suite.jsonl'), rows.map((r) => JSON.stringify(r)).join('\n') + '\n');
    const r = new Recipe(
      tinyRecipe(data, {
        train: { steps: 6, batchSize: 4, warmupSteps: 1, checkpointEvery: 0 },
        eval: {
          every: 3,
          batches: 1,
          suites: [{ name: 'names', path: 'suite.jsonl', scorer: 'contains', maxTokens: 4 }],
          gates: ['names/accuracy >= 2'],
        },
      }),
      { baseDir: dir },
    );
    const run = await r.run({ out: join(dir, 'run') });
    const ms = await run.dir.readMetrics();
    const withSuite = ms.filter((m) => typeof m['eval/names/accuracy'] === 'number').map((m) => m.step);
    expect(withSuite).toEqual([3, 6]);
    const summary = JSON.parse(await readFile(join(run.dir.path, 'summary.json'), 'utf8'));
    // Accuracy is at most 1, so a ">= 2" gate must block.
    expect(summary.gates.status).toBe('blocked');
  });
});
