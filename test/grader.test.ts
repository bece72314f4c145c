import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { judgeCases, judgeChats, judgeGrader } from '../examples/tally/judge.js';
import { ModelGrader } from '../src/eval/grader.js';
import { sft } from '../src/runs/recipe.js';
import { scratch } from './helpers.js';

const jsonl = (rows: unknown[]) => rows.map((r) => JSON.stringify(r)).join('\n') + '\n';

describe('model grader with a Tally judge', () => {
  let dir: string;
  let judge: string;
  beforeAll(async () => {
    dir = await scratch('lathe-grader-');
    await writeFile(join(dir, 'judge-train.jsonl'), jsonl(judgeChats(judgeCases(Number(process.env.JN ?? 2000), 11))));
    const t0 = Date.now();
    const run = await sft(
      {
        backend: 'wasm',
        seed: 1,
        data: { sources: [{ path: 'judge-train.jsonl' }], valFraction: 0.02 },
        tokenizer: { vocabSize: 320 },
        model: {
          dim: Number(process.env.JD ?? 64),
          layers: Number(process.env.JL ?? 2),
          heads: 4,
          context: Number(process.env.JC ?? 128),
        },
        train: {
          steps: Number(process.env.JS ?? 150),
          batchSize: Number(process.env.JB ?? 16),
          lr: Number(process.env.JLR ?? 3e-3),
          minLr: 3e-4,
          warmupSteps: 10,
          checkpointEvery: 0,
          assistantOnly: process.env.JAO !== '0',
        },
        eval: { every: 0, batches: 2 },
      },
      { baseDir: dir },
    ).run({ out: join(dir, 'judge') });
    console.log('judge train s', (Date.now() - t0) / 1000);
    expect(run.summary!.status).toBe('completed');
    judge = run.dir.path;
    const ms = await run.dir.readMetrics();
    console.log(
      ms
        .filter((m, i) => i % 25 === 0 || i === ms.length - 1)
        .map((m) => [m.step, m.loss, m.token_accuracy, m.eval_loss]),
    );
  }, 600_000);

  it('agrees with the interpreter on >= 80% of held-out cases', async () => {
    await writeFile(join(dir, 'grader.json'), JSON.stringify(judgeGrader('judge')));
    const g = await ModelGrader.open(join(dir, 'grader.json'));
    const cases = judgeCases(200, 99);
    const t0 = Date.now();
    const grades = await g.grade(
      cases.map((c) => ({ completion: c.completion, row: { prompt: c.prompt, answer: c.answer } })),
    );
    console.log('grade s', (Date.now() - t0) / 1000);
    let agree = 0;
    const byKind: Record<string, [number, number]> = {};
    grades.forEach((gr, i) => {
      const ok = !('error' in gr) && Math.round(gr.score) === cases[i]!.verdict;
      if (ok) agree++;
      const k = (byKind[cases[i]!.kind] ??= [0, 0]);
      k[0] += ok ? 1 : 0;
      k[1]++;
    });
    console.log('agreement', agree / cases.length, byKind, g.errors);
    await g.close();
    expect(agree / cases.length).toBeGreaterThanOrEqual(0.8);
  }, 600_000);
});
