/** The lm-eval task data in examples/lm-eval/: made by lm-eval-tasks.ts, checked by the Tally interpreter. */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ROOT } from '../../test/helpers.js';
import { run } from './lang.js';
import { buildLmEvalTasks, LM_EVAL_DOCS } from './lm-eval-tasks.js';

const dir = join(ROOT, 'examples', 'lm-eval');

describe('lm-eval Tally tasks', () => {
  const built = buildLmEvalTasks(readFileSync(join(ROOT, 'examples', 'data', 'tally', 'tasks.jsonl'), 'utf8'));

  it('the committed JSONL files are what the generator writes', () => {
    expect(readFileSync(join(dir, 'tally_emit_mc.jsonl'), 'utf8')).toBe(built.mc);
    expect(readFileSync(join(dir, 'tally_emit_gen.jsonl'), 'utf8')).toBe(built.gen);
  });

  it('each multiple-choice document has exactly one choice that prints the expected output', () => {
    const docs = built.mc
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { prompt: string; choices: string[]; gold: number; expected: string });
    expect(docs.length).toBe(LM_EVAL_DOCS);
    for (const d of docs) {
      const right = d.choices.filter((c) => {
        const r = run(`${d.prompt} ${c}`);
        return r.ok && r.output === d.expected;
      });
      expect(right, d.prompt).toEqual([d.choices[d.gold]]);
    }
    const gen = built.gen
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { prompt: string; answer: string; expected: string });
    expect(gen.length).toBe(LM_EVAL_DOCS);
    for (const d of gen) expect(run(`${d.prompt} ${d.answer}`)).toMatchObject({ ok: true, output: d.expected });
  });
});
