// Model graders for real: a judge trained here to grade Tally answers, measured against the interpreter
// on held-out cases, then the same grader file used as an eval suite's scorer, a release gate, the GRPO
// reward and the online DPO judge; a grader whose judge never answers in range is counted, not crashed on.
import { readFileSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import {
  FORM_ERRORS,
  judgeCases,
  judgeGrader,
  judgeTexts,
  NAME_ERRORS,
  type JudgeCase,
} from '../examples/tally/judge.js';
import { ModelGrader } from '../src/eval/grader.js';
import { evaluateRun } from '../src/eval/standalone.js';
import { sha256File } from '../src/hash.js';
import type { SynthLock } from '../src/train/synth.js';
import { grpo, onlineDpo, pretrain } from '../src/runs/recipe.js';
import { lathe, scratch } from './helpers.js';
import { miniBase, TALLY_REWARD } from './post-helpers.js';

const jsonl = (rows: unknown[]) => rows.map((r) => JSON.stringify(r)).join('\n') + '\n';

describe('a model grader with a Tally judge', () => {
  let dir: string;
  let judgeRun: string;
  let grader: string;
  let base: string;
  let prompts: string;
  beforeAll(async () => {
    dir = await scratch('lathe-grader-');
    // The judge: pre-trained (wasm, dim 64, context 64, 200 steps) on 4000 filled rubrics ending in
    // the interpreter's verdict, half right answers, half wrong in form.
    await writeFile(join(dir, 'judge-train.jsonl'), jsonl(judgeTexts(judgeCases(4000, 11))));
    const run = await pretrain(
      {
        backend: 'wasm',
        seed: 1,
        data: { sources: [{ path: 'judge-train.jsonl' }], valFraction: 0.02 },
        tokenizer: { vocabSize: 320 },
        model: { dim: 64, layers: 2, heads: 4, context: 64 },
        train: { steps: 200, batchSize: 16, lr: 1e-2, minLr: 3e-4, warmupSteps: 10, checkpointEvery: 0 },
        eval: { every: 0, batches: 1 },
      },
      { baseDir: dir },
    ).run({ out: join(dir, 'judge') });
    expect(run.summary!.status).toBe('completed');
    judgeRun = run.dir.path;
    grader = join(dir, 'grader.json');
    await writeFile(grader, JSON.stringify(judgeGrader('judge')));
    ({ base, prompts } = await miniBase(dir));
  }, 600_000);

  /** Share of cases where the grade (rounded) equals the interpreter's verdict, overall and by kind. */
  async function agreement(g: ModelGrader, cases: JudgeCase[]) {
    const grades = await g.grade(
      cases.map((c) => ({ completion: c.completion, row: { prompt: c.prompt, answer: c.answer } })),
    );
    const byKind: Record<string, string> = {};
    const tally: Record<string, [number, number]> = {};
    let agree = 0;
    grades.forEach((gr, i) => {
      const ok = !('error' in gr) && Math.round(gr.score) === cases[i]!.verdict;
      agree += ok ? 1 : 0;
      const t = (tally[cases[i]!.kind] ??= [0, 0]);
      t[0] += ok ? 1 : 0;
      t[1]++;
    });
    for (const [k, [a, n]] of Object.entries(tally)) byKind[k] = `${a}/${n}`;
    return { rate: agree / cases.length, byKind };
  }

  it("agrees with the interpreter's verdict on >= 80% of 200 held-out cases", async () => {
    const g = await ModelGrader.open(grader);
    expect(g.judge.path).toBe(judgeRun);
    const held = judgeCases(200, 99);
    // No held-out case is a training case.
    const seen = new Set(judgeCases(4000, 11).map((c) => c.prompt + c.completion));
    expect(held.filter((c) => seen.has(c.prompt + c.completion)).length).toBeLessThan(10);
    const form = await agreement(g, held);
    // Wrong variable names (defined earlier, or never): the judge is not asked to pass these; measured.
    const names = await agreement(g, judgeCases(100, 98, NAME_ERRORS));
    if (process.env.LATHE_MEASURE) console.log('judge agreement', { form, names, errors: g.errors });
    // Measured (wasm, seed 1): 199/200 (right 100/100, syntax 25/25, keyword 44/44, number 30/31);
    // wrong names 0/50 (the judge calls every defined-looking name right).
    expect(form.rate).toBeGreaterThanOrEqual(0.8);
    expect(g.errorCount).toBe(0);
    await g.close();
    expect(FORM_ERRORS.every((k) => k in form.byKind)).toBe(true);
  });

  it('scores an eval suite; a judge whose answers hold no score is counted as invalid, not crashed on', async () => {
    await writeFile(
      join(dir, 'bad-grader.yaml'),
      `kind: model\njudge: judge\nrubric: "{prompt}{completion} ? {answer}:"\nchat: false\nscore: {pattern: "grade=(\\\\d)"}\n`,
    );
    const suite = { path: prompts, limit: 24, maxTokens: 4, stop: ['\n'] };
    const ev = await evaluateRun(
      base,
      [
        { name: 'judged', ...suite, scorer: { grader } },
        { name: 'interp', ...suite, scorer: { module: TALLY_REWARD, export: 'programReward' } },
        { name: 'bad', ...suite, limit: 6, scorer: { grader: join(dir, 'bad-grader.yaml') } },
      ],
      { record: false },
    );
    const [judged, interp, bad] = ev.results;
    expect(judged!.scorer).toBe(`model ${grader}`);
    expect(judged!.n).toBe(24);
    expect(judged!.errors).toMatchObject({ threw: 0, timeout: 0, crashed: 0 });
    expect(judged!.accuracy).toBe(judged!.scores.reduce((a, b) => a + b, 0) / 24);
    expect(judged!.scores.every((x) => x === 0 || x === 1)).toBe(true);
    // On the base model's own completions, mostly wrong variable names, this judge (which cannot
    // compare names) and the interpreter disagree: measured, reported, not asserted.
    const same = judged!.scores.filter((x, i) => x === (interp!.scores[i] === 1 ? 1 : 0)).length;
    if (process.env.LATHE_MEASURE) console.log('suite', { judged: judged!.accuracy, interp: interp!.accuracy, same });
    expect(bad!.n).toBe(6);
    expect(bad!.accuracy).toBe(0);
    expect(bad!.errors.invalid).toBe(6);
    expect(bad!.failures[0]!.error).toMatch(/^invalid: unparsable: the judge answered ".*": no score in \[0, 1\]/);
  });

  it('rewards GRPO and gates its release; the lock pins the grader file and its judge', async () => {
    const run = await grpo(
      {
        from: base,
        backend: 'wasm',
        seed: 2,
        data: { sources: [{ path: prompts }] },
        reward: { grader: 'grader.json' },
        train: {
          steps: 4,
          batchSize: 4,
          groupSize: 4,
          lr: 4e-3,
          warmupSteps: 1,
          maxNewTokens: 4,
          stop: ['\n'],
          checkpointEvery: 0,
        },
        eval: {
          every: 0,
          batches: 1,
          suites: [
            { name: 'judged', path: prompts, limit: 8, maxTokens: 4, stop: ['\n'], scorer: { grader: 'grader.json' } },
          ],
          gates: ['eval/judged/accuracy >= 0.5'],
        },
      },
      { baseDir: dir },
    ).run({ out: join(dir, 'grpo') });
    expect(run.summary!.status).toBe('completed');
    const lock = run.dir.readLock();
    expect(lock.grader).toMatchObject({ path: grader, sha256: (await sha256File(grader)).sha256 });
    expect(lock.grader!.judge).toMatchObject({ path: judgeRun, step: 200 });
    const ms = await run.dir.readMetrics();
    const steps = ms.filter((m) => typeof m.reward_mean === 'number');
    expect(steps.map((m) => m.step)).toEqual([1, 2, 3, 4]);
    // The judge sometimes answers a policy's odd completion with no score ("::"): counted, skipped.
    for (const m of steps) {
      expect(m.reward_errors as number).toBeLessThanOrEqual(8);
      expect(m.reward_mean as number).toBeGreaterThanOrEqual(0);
      expect(m.reward_mean as number).toBeLessThanOrEqual(1);
    }
    const acc = ms.findLast((m) => typeof m['eval/judged/accuracy'] === 'number')!['eval/judged/accuracy'] as number;
    const gate = run.summary!.gates!.results[0]!;
    expect(gate).toMatchObject({ metric: 'eval/judged/accuracy', value: acc, pass: acc >= 0.5 });
    expect(run.summary!.gates!.status).toBe(acc >= 0.5 ? 'release-ready' : 'blocked');
  });

  it('judges online DPO (judge.reward.grader)', async () => {
    const run = await onlineDpo(
      {
        from: base,
        backend: 'wasm',
        seed: 5,
        data: { sources: [{ path: prompts }] },
        judge: { reward: { grader: 'grader.json' } },
        train: {
          steps: 2,
          batchSize: 4,
          samplesPerPrompt: 4,
          lr: 2e-3,
          warmupSteps: 1,
          maxNewTokens: 4,
          stop: ['\n'],
          checkpointEvery: 0,
        },
        eval: { every: 0, batches: 1 },
      },
      { baseDir: dir },
    ).run({ out: join(dir, 'odpo') });
    expect(run.summary!.status).toBe('completed');
    expect(run.dir.readLock().grader!.judge.path).toBe(judgeRun);
    const ms = (await run.dir.readMetrics()).filter((m) => typeof m.reward_mean === 'number');
    expect(ms.map((m) => m.step)).toEqual([1, 2]);
    for (const m of ms) expect(m.reward_errors as number).toBeLessThanOrEqual(8);
  });

  it('lathe data synth: teacher answers filtered by the grader, repeats and near-duplicates dropped, a lock, the same bytes for the same seed', async () => {
    // Five prompts, each asked twice: the second asks repeat the first at temperature 0.
    const five = (await readFile(prompts, 'utf8')).split('\n').slice(0, 5).join('\n') + '\n';
    await writeFile(join(dir, 'five.jsonl'), five);
    const synth = (out: string, more: string[] = []) => {
      const r = lathe(
        [
          'data',
          'synth',
          '--teacher',
          base,
          '--prompts',
          'five.jsonl',
          '--n',
          '10',
          '--out',
          out,
          '--max-tokens',
          '6',
          ...more,
        ],
        { cwd: dir },
      );
      expect(r.stderr).toBe('');
      expect(r.status).toBe(0);
      return JSON.parse(readFileSync(join(dir, `${out}.lock.json`), 'utf8')) as SynthLock;
    };
    const greedy = synth('greedy.jsonl', ['--temperature', '0']);
    expect(greedy.counts).toMatchObject({ generated: 10, exactRepeats: 5 - greedy.counts.empty });
    expect(greedy.teacher).toMatchObject({ kind: 'run', path: base });
    expect(greedy.prompts.sha256).toBe((await sha256File(join(dir, 'five.jsonl'))).sha256);

    // Graded: every kept answer scores at least --min when graded again; the counts add up.
    const graded = synth('graded.jsonl', ['--grader', 'grader.json', '--min', '1', '--seed', '3']);
    const c = graded.counts;
    expect(c.kept + c.belowMin + c.ungraded + c.exactRepeats + c.nearDuplicates + c.empty).toBe(10);
    expect(graded.grader).toMatchObject({ path: grader, min: 1, judge: { path: judgeRun } });
    const rows = readFileSync(join(dir, 'graded.jsonl'), 'utf8')
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l) as { messages: { content: string }[]; source: string });
    expect(rows.length).toBe(c.kept);
    const byPrompt = new Map(
      five
        .trim()
        .split('\n')
        .map((l) => [JSON.parse(l).prompt as string, JSON.parse(l) as Record<string, unknown>]),
    );
    const g = await ModelGrader.open(grader);
    const again = await g.grade(
      rows.map((r) => ({ completion: r.messages[1]!.content, row: byPrompt.get(r.messages[0]!.content)! })),
    );
    await g.close();
    expect(again.every((x) => !('error' in x) && x.score >= 1)).toBe(true);
    if (process.env.LATHE_MEASURE) console.log('synth', { greedy: greedy.counts, graded: c });

    // The same seed gives the same bytes; another seed other answers.
    const sampled = synth('a.jsonl', ['--seed', '7']);
    synth('b.jsonl', ['--seed', '7']);
    synth('c.jsonl', ['--seed', '8']);
    const bytes = (f: string) => readFileSync(join(dir, f), 'utf8');
    expect(bytes('b.jsonl')).toBe(bytes('a.jsonl'));
    expect(bytes('c.jsonl')).not.toBe(bytes('a.jsonl'));
    expect(sampled.out.sha256).toBe((await sha256File(join(dir, 'a.jsonl'))).sha256);

    // With a.jsonl as training data, the same run keeps nothing: every answer is a near-duplicate of it.
    const dedup = synth('d.jsonl', ['--seed', '7', '--dedupe-against', 'a.jsonl']);
    expect(dedup.counts).toMatchObject({ kept: 0, nearDuplicates: sampled.counts.kept });
    expect(dedup.dedupeAgainst).toEqual([{ path: join(dir, 'a.jsonl'), sha256: sampled.out.sha256 }]);

    // lathe data inspect shows the synthetic source as such.
    await writeFile(
      join(dir, 'student.json'),
      JSON.stringify({ stage: 'sft', from: base, data: { sources: [{ path: 'a.jsonl' }] } }),
    );
    const inspect = lathe(['data', 'inspect', 'student.json'], { cwd: dir });
    expect(inspect.status).toBe(0);
    expect(inspect.stdout).toContain(
      `synthetic source: ${join(dir, 'a.jsonl')} (teacher ${base}; ${sampled.counts.kept} of 10 generated kept)`,
    );

    await writeFile(join(dir, 'bad.jsonl'), '{"prompt": "let px = 1\\nemit"}\n{"text": "no prompt"}\n');
    const bad = lathe(['data', 'synth', '--teacher', base, '--prompts', 'bad.jsonl', '--n', '2', '--out', 'x.jsonl'], {
      cwd: dir,
    });
    expect(bad.status).not.toBe(0);
    expect(bad.stderr).toContain(`${join(dir, 'bad.jsonl')}:2: prompt: expected a string field "prompt"`);
  }, 300_000);
});
