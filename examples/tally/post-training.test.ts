import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { buildPostDatasets } from './post-training.js';

const dir = new URL('../data/tally-post/', import.meta.url);
const read = (name: string) => readFileSync(fileURLToPath(new URL(name, dir)), 'utf8');

describe('Tally post-training datasets', () => {
  it('are byte-identical to a fresh generation (seed 7)', () => {
    const tasks = readFileSync(fileURLToPath(new URL('../data/tally/tasks.jsonl', import.meta.url)), 'utf8');
    const d = buildPostDatasets({ sft: 400, completions: 600, pairs: 600, seed: 7, tasks });
    for (const k of ['sft', 'completions', 'pairs', 'prompts'] as const) expect(d[k], k).toBe(read(`${k}.jsonl`));
    const prompts = new Set(
      d.prompts
        .trim()
        .split('\n')
        .map((l) => (JSON.parse(l) as { prompt: string }).prompt),
    );
    for (const l of d.pairs.trim().split('\n'))
      expect(prompts.has((JSON.parse(l) as { prompt: string }).prompt)).toBe(false);
  });
});
