import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Command } from 'commander';
import { beforeAll, describe, expect, it, vi } from 'vitest';
import { lathe, ROOT, scratch, tallySlice, tinyRecipe } from '../../test/helpers.js';
import { register } from '../cli/eval.js';
import { LatheError } from '../errors.js';
import { generate } from '../engine/sample.js';
import { Recipe } from '../runs/recipe.js';
import { loadModel } from '../runs/index.js';
import { RunDir } from '../runs/rundir.js';
import { compareRuns, formatComparison } from './compare.js';
import type { GateReport } from './gates.js';
import { parseSuiteConfig } from '../recipe/eval-schema.js';
import { evaluateRun } from './standalone.js';
import { complete, loadSuite, runSuite } from './suite.js';
import { TrainingEvals } from './training.js';

const TASKS = join(ROOT, 'examples', 'data', 'tally', 'tasks.jsonl');
const CORPUS = join(ROOT, 'examples', 'data', 'tally', 'corpus.txt');

let dir: string;
let run: string;
let shortRun: string;

/** Writes the first n Tally tasks as a suite file. */
async function taskSuite(n: number, name = 'tasks.jsonl'): Promise<string> {
  const lines = (await readFile(TASKS, 'utf8')).split('\n').filter(Boolean).slice(0, n);
  const path = join(dir, name);
  await writeFile(path, lines.join('\n') + '\n');
  return path;
}

beforeAll(async () => {
  dir = await scratch('lathe-eval-');
  const data = await tallySlice(dir, 600);
  const r = new Recipe(
    tinyRecipe(data, {
      train: { steps: 40, batchSize: 4, lr: 0.01, minLr: 0.001, warmupSteps: 5, checkpointEvery: 20 },
    }),
    { baseDir: dir },
  );
  run = join(dir, 'run');
  shortRun = join(dir, 'short');
  await r.run({ out: run });
  await r.run({ out: shortRun, steps: 5 });
  await writeFile(
    join(dir, 'corpus.txt'),
    (await readFile(CORPUS, 'utf8')).split('\n\n').slice(0, 12).join('\n\n') + '\n',
  );
}, 300_000);

describe('suites on a trained model (end to end)', () => {
  it('complete() is token-for-token model.generate (greedy) when no stop string is given', async () => {
    const { model, tokenizer } = await loadModel(run);
    try {
      const prompt = 'let px = 10\nemit ';
      const ids = [tokenizer.special.bos, ...tokenizer.encode(prompt)];
      const ref = await generate(model, ids, {
        maxTokens: 12,
        temperature: 0,
        stop: [tokenizer.special.eos, tokenizer.special.end],
      });
      const ours = await complete(model, tokenizer, prompt, { maxTokens: 12 });
      expect(ours.ids).toEqual(ref);
      expect(ours.text).toBe(tokenizer.decode(ref));
      // A stop string cuts the text before it and ends generation there.
      const cut = await complete(model, tokenizer, prompt, { maxTokens: 12, stop: ['\n'] });
      expect(cut.text).toBe(ours.text.split('\n')[0]);
      if (ours.text.includes('\n')) expect(cut.stopped).toBe('stop');
      // A prompt too long for the context keeps its last tokens, leaving room for maxTokens.
      const long = 'let px = 101.25\nlet qty = 300\nlet notional = px * qty\nlet fee = notional * bps(2.5)\nemit ';
      const n = tokenizer.encode(long).length + 1;
      expect(n).toBeGreaterThan(model.spec.context);
      const lc = await complete(model, tokenizer, long, { maxTokens: 8 });
      expect(lc.truncated).toBe(n - (model.spec.context - 8));
      expect(lc.ids.length).toBeLessThanOrEqual(8);
      if (lc.stopped === 'length') expect(lc.ids).toHaveLength(8);
      // Sampling with a seed is repeatable.
      const s1 = await complete(model, tokenizer, prompt, { maxTokens: 8, temperature: 1, seed: 5 });
      const s2 = await complete(model, tokenizer, prompt, { maxTokens: 8, temperature: 1, seed: 5 });
      expect(s1.ids).toEqual(s2.ids);
    } finally {
      await model.dispose();
    }
  });

  it('runSuite is deterministic (greedy): same completions and scores twice; scorer failures are counted', async () => {
    const path = await taskSuite(12);
    await writeFile(
      join(dir, 'flaky.mjs'),
      [
        '// 1 for a completion that parses as a number, else 0; breaks on purpose for some rows.',
        'export default (completion, ex) => {',
        '  if (ex.prompt.startsWith("let qty")) throw new Error("checker exploded");',
        '  if (ex.prompt.startsWith("let fair")) return NaN;',
        '  if (ex.prompt.startsWith("let nav")) return new Promise(() => {});',
        '  return /^-?\\d+(\\.\\d+)?$/.test(completion.trim());',
        '};',
      ].join('\n'),
    );
    const { model, tokenizer } = await loadModel(run);
    const exact = await loadSuite(parseSuiteConfig({ name: 'tasks', path, maxTokens: 8, stop: ['\n'] }), dir);
    const flaky = await loadSuite(
      parseSuiteConfig({
        name: 'flaky',
        path,
        maxTokens: 8,
        stop: ['\n'],
        scorer: { module: 'flaky.mjs' },
        timeoutMs: 300,
      }),
      dir,
    );
    try {
      const a = await runSuite(model, tokenizer, exact, { failures: 20 });
      const b = await runSuite(model, tokenizer, exact, { failures: 20 });
      expect(a.n).toBe(12);
      expect(a.scores).toHaveLength(12);
      expect(a.scores).toEqual(b.scores);
      expect(a.failures.map((f) => f.completion)).toEqual(b.failures.map((f) => f.completion));
      expect(a.accuracy).toBe(a.scores.reduce((x, y) => x + y, 0) / 12);
      expect(a.metrics).toEqual({ 'eval/tasks/accuracy': a.accuracy });
      expect(a.truncated).toBe(
        exact.examples.filter((e) => tokenizer.encode(e.prompt).length + 1 > model.spec.context - 8).length,
      );
      // Completions are not all empty: the model writes something after a (cut) prompt.
      expect(a.failures.some((f) => f.completion.length > 0) || a.accuracy! > 0).toBe(true);
      for (const f of a.failures) {
        expect(f.completion.includes('\n')).toBe(false);
        expect(f.line).toBeGreaterThanOrEqual(1);
      }
      // Failures are the rows that scored below 1, in file order, with their lines.
      expect(a.failures.map((f) => f.line)).toEqual(a.scores.flatMap((s, i) => (s < 1 ? [i + 1] : [])));

      const f1 = await runSuite(model, tokenizer, flaky);
      const rows = exact.examples.map((e) => e.prompt);
      const count = (p: string) => rows.filter((r) => r.startsWith(p)).length;
      expect(f1.errors).toEqual({
        threw: count('let qty'),
        nan: count('let fair'),
        timeout: count('let nav'),
        invalid: 0,
        crashed: 0,
      });
      expect(f1.errors.threw + f1.errors.nan + f1.errors.timeout).toBeGreaterThan(0);
      expect(f1.n).toBe(12);
      expect(f1.failures.find((f) => f.error?.startsWith('threw'))?.error).toMatch(
        /^threw: Error: checker exploded \(at .*\.mjs:\d+:\d+\)$/,
      );
      // The same completions give the same scores: the custom scorer sees exactly what exact saw.
      const f2 = await runSuite(model, tokenizer, flaky);
      expect(f2.scores).toEqual(f1.scores);
    } finally {
      await model.dispose();
      await exact.close();
      await flaky.close();
    }
  });

  it('a real suite: Tally tasks scored by running prompt + completion in the interpreter (TS scorer module)', async () => {
    const path = await taskSuite(10, 'program.jsonl');
    const { model, tokenizer } = await loadModel(run);
    const suite = await loadSuite(
      parseSuiteConfig({
        name: 'program',
        path,
        maxTokens: 12,
        stop: ['\n'],
        scorer: { module: join(ROOT, 'examples', 'tally', 'reward.ts'), export: 'programReward' },
      }),
      dir,
    );
    try {
      const r = await runSuite(model, tokenizer, suite);
      // programReward gives 1 (right output), 0.5 (runs, wrong output) or 0 (does not run).
      expect(r.scores.every((s) => s === 0 || s === 0.5 || s === 1)).toBe(true);
      expect(r.errors).toEqual({ threw: 0, nan: 0, timeout: 0, invalid: 0, crashed: 0 });
      expect((await runSuite(model, tokenizer, suite)).scores).toEqual(r.scores);
    } finally {
      await model.dispose();
      await suite.close();
    }
  });

  it('perplexity over a text file: finite, exp(loss), lower for the trained model than the 5-step one', async () => {
    const s = await loadSuite(parseSuiteConfig({ name: 'corpus', path: 'corpus.txt', scorer: 'perplexity' }), dir);
    const trained = await loadModel(run);
    const early = await loadModel(shortRun);
    try {
      const a = await runSuite(trained.model, trained.tokenizer, s);
      const b = await runSuite(early.model, early.tokenizer, s);
      expect(a.kind).toBe('perplexity');
      expect(a.perplexity).toBeCloseTo(Math.exp(a.loss!), 6);
      expect(Object.keys(a.metrics).sort()).toEqual(['eval/corpus/loss', 'eval/corpus/perplexity']);
      expect(a.n).toBeGreaterThan(1);
      expect(a.perplexity!).toBeGreaterThan(1);
      expect(a.perplexity!).toBeLessThan(b.perplexity!);
      expect((await runSuite(trained.model, trained.tokenizer, s)).perplexity).toBe(a.perplexity);
      // Its loss is the same measure as held-out eval_loss: the same order of magnitude on the same language.
      const evalLoss = (await RunDir.open(run).readSummary())!.eval_loss!;
      expect(Math.abs(a.loss! - evalLoss)).toBeLessThan(1);
    } finally {
      await trained.model.dispose();
      await early.model.dispose();
    }
  });

  it('TrainingEvals: suites due every N steps (their own or eval.every), all at the last step', async () => {
    const path = await taskSuite(3, 'hook.jsonl');
    await writeFile(join(dir, 'one.mjs'), 'export const one = () => 1;\n');
    const ev = await TrainingEvals.load(
      {
        every: 10,
        suites: [
          { name: 'a', path, maxTokens: 2 },
          { name: 'b', path, maxTokens: 2, every: 4, scorer: { module: 'one.mjs', export: 'one' } },
          { name: 'c', path, every: 0 },
        ],
      },
      dir,
    );
    expect(ev.size).toBe(3);
    expect([1, 4, 8, 10, 12, 20].filter((s) => ev.due(s, false))).toEqual([4, 8, 10, 12, 20]);
    expect(ev.due(7, true)).toBe(true);
    const { model, tokenizer } = await loadModel(run);
    try {
      expect((await ev.run(model, tokenizer, 8, false)).metrics).toEqual({ 'eval/b/accuracy': 1 });
      // The custom scorer's worker is stopped between evals and restarts on the next one.
      expect((await ev.run(model, tokenizer, 12, false)).metrics).toEqual({ 'eval/b/accuracy': 1 });
      expect(Object.keys((await ev.run(model, tokenizer, 20, false)).metrics)).toEqual([
        'eval/a/accuracy',
        'eval/b/accuracy',
      ]);
      expect(Object.keys((await ev.run(model, tokenizer, 21, true)).metrics)).toEqual([
        'eval/a/accuracy',
        'eval/b/accuracy',
        'eval/c/accuracy',
      ]);
    } finally {
      await model.dispose();
      await ev.close();
    }
    await expect(
      TrainingEvals.load({ every: 10, suites: [{ name: 'x', path: 'missing.jsonl' }] }, dir),
    ).rejects.toThrow(/suite "x": missing\.jsonl is not a file/);
    await expect(
      TrainingEvals.load(
        { every: 10, suites: [{ name: 'y', path, scorer: { module: 'one.mjs', export: 'two' } }] },
        dir,
      ),
    ).rejects.toThrow(/scorer module one\.mjs#two: has no function export "two" \(exports: one\)/);
  });
});

describe('standalone evaluation, gates and comparison', () => {
  it('evaluateRun records evals in summary.json and recomputes the recipe gates; compare shows them', async () => {
    const path = await taskSuite(6, 'gated.jsonl');
    // The recipe's gates (what eval.gates in a recipe file becomes in the lock).
    const rd = RunDir.open(run);
    const lock = rd.readLock();
    (lock.recipe.eval as { gates?: string[] }).gates = [
      'gated/accuracy >= 0',
      'eval_loss <= 100',
      'corpus/perplexity < 1',
    ];
    await writeFile(rd.lockPath, JSON.stringify(lock, null, 2));

    const e = await evaluateRun(run, [
      { name: 'gated', path, maxTokens: 6, stop: ['\n'] },
      { name: 'corpus', path: join(dir, 'corpus.txt'), scorer: 'perplexity' },
    ]);
    expect(e.step).toBe(40);
    expect(e.recorded).toBe(true);
    expect(e.results.map((r) => r.name)).toEqual(['gated', 'corpus']);
    const summary = (await rd.readSummary())!;
    const evals = summary.evals as Record<
      string,
      { step: number; n: number; accuracy?: number; perplexity?: number; metrics: Record<string, number> }
    >;
    expect(evals.gated).toMatchObject({
      step: 40,
      n: 6,
      accuracy: e.results[0]!.accuracy,
      metrics: { 'eval/gated/accuracy': e.results[0]!.accuracy },
    });
    expect(evals.corpus!.perplexity).toBe(e.results[1]!.perplexity);
    const gates = summary.gates as GateReport;
    expect(gates.status).toBe('blocked');
    expect(gates.results.map((g) => g.pass)).toEqual([true, true, false]);
    expect(gates).toEqual(e.gates);
    expect(summary.status).toBe('completed');
    expect((await rd.readEvents()).at(-1)).toMatchObject({ type: 'eval', step: 40, suites: ['gated', 'corpus'] });

    // Relaxing the failing gate and evaluating again makes the run release-ready.
    (lock.recipe.eval as { gates?: string[] }).gates = ['gated/accuracy >= 0', 'perplexity > 1'];
    await writeFile(rd.lockPath, JSON.stringify(lock, null, 2));
    const again = await evaluateRun(run, [{ name: 'corpus', path: join(dir, 'corpus.txt'), scorer: 'perplexity' }]);
    expect(again.gates?.status).toBe('release-ready');
    expect(Object.keys((await rd.readSummary())!.evals as object).sort()).toEqual(['corpus', 'gated']);

    const rows = await compareRuns([run, shortRun]);
    expect(rows.map((r) => [r.run, r.stage, r.status, r.step, r.gates])).toEqual([
      ['run', 'pretrain', 'completed', 40, 'release-ready'],
      ['short', 'pretrain', 'completed', 5, undefined],
    ]);
    expect(rows[0]!.loss).toBe(summary.loss);
    expect(rows[0]!.eval_loss).toBe(summary.eval_loss);
    expect(rows[0]!.scores).toEqual({
      'gated/accuracy': e.results[0]!.accuracy,
      'corpus/perplexity': again.results[0]!.perplexity,
      'corpus/loss': again.results[0]!.loss,
    });
    expect(rows[1]!.scores).toEqual({});
    const table = formatComparison(rows).split('\n');
    expect(table[0]).toMatch(
      /^run\s+stage\s+status\s+step\s+loss\s+eval_loss\s+corpus\/loss\s+corpus\/perplexity\s+gated\/accuracy\s+gates$/,
    );
    expect(table[2]).toMatch(
      new RegExp(
        `^run\\s+pretrain\\s+completed\\s+40\\s+${summary.loss!.toFixed(4)}\\s+${summary.eval_loss!.toFixed(4)}\\s+.*release-ready$`,
      ),
    );
    expect(table[3]).toMatch(/^short\s+pretrain\s+completed\s+5\s+\S+\s+\S+\s+-\s+-\s+-\s+-$/);
    await expect(compareRuns([join(dir, 'nope')])).rejects.toThrow(/not a run directory/);
  });
});

/** Runs the eval/compare verbs in-process on a fresh commander program, capturing stdout. */
async function cli(args: string[]): Promise<{ out: string; error?: unknown; code?: number }> {
  const program = new Command('lathe').exitOverride();
  register(program);
  program.commands.forEach((c) => c.exitOverride().configureOutput({ writeErr: () => {} }));
  let out = '';
  const spy = vi.spyOn(process.stdout, 'write').mockImplementation((chunk: string | Uint8Array) => {
    out += String(chunk);
    return true;
  });
  const log = vi.spyOn(console, 'log').mockImplementation((...a: unknown[]) => void (out += a.join(' ') + '\n'));
  const before = process.exitCode;
  try {
    await program.parseAsync(args, { from: 'user' });
    const code = process.exitCode as number | undefined;
    return { out, code };
  } catch (error) {
    return { out, error };
  } finally {
    process.exitCode = before;
    spy.mockRestore();
    log.mockRestore();
  }
}

describe('lathe eval / lathe compare', () => {
  it('eval prints a table (or JSON), records into summary.json; compare prints the table; bad input is a LatheError', async () => {
    const path = await taskSuite(4, 'cli.jsonl');
    const text = await cli(['eval', run, '--suite', path, '--max-tokens', '6', '--stop', '\\n']);
    expect(text.error).toBeUndefined();
    expect(text.out).toMatch(/^run .* at step 40\n\nsuite\s+scorer\s+n\s+metric\s+value\s+scorer errors\s+seconds\n/);
    expect(text.out).toMatch(/\ncli\s+exact\s+4\s+accuracy\s+\d\.\d{4}\s+0\s+/);
    const json = await cli([
      'eval',
      run,
      '--suite',
      path,
      '--max-tokens',
      '6',
      '--stop',
      '\\n',
      '--json',
      '--name',
      'cli2',
    ]);
    const parsed = JSON.parse(json.out) as {
      step: number;
      results: { name: string; n: number; accuracy: number; scores: number[] }[];
      recorded: boolean;
    };
    expect(parsed).toMatchObject({ step: 40, recorded: true });
    expect(parsed.results[0]).toMatchObject({ name: 'cli2', n: 4 });
    const evals = (await RunDir.open(run).readSummary())!.evals as Record<string, { accuracy: number }>;
    expect(evals.cli2!.accuracy).toBe(parsed.results[0]!.accuracy);
    expect(evals.cli!.accuracy).toBe(parsed.results[0]!.accuracy);

    const cmp = await cli(['compare', run, shortRun]);
    expect(cmp.out.split('\n')[0]).toMatch(/^run\s+stage\s+status\s+step\s+loss\s+eval_loss\s+.*cli\/accuracy.*gates$/);
    expect(cmp.out).toMatch(/\nshort\s+pretrain\s+completed\s+5\s/);

    for (const [args, msg] of [
      [['eval', run, '--suite', join(dir, 'missing.jsonl')], /--suite .*missing\.jsonl: no such file/],
      [['eval', shortRun], /the recipe has no eval\.suites; pass --suite F/],
      [['eval', join(dir, 'nope'), '--suite', path], /not a run directory/],
    ] as [string[], RegExp][]) {
      const r = await cli(args);
      expect(r.error, args.join(' ')).toBeInstanceOf(LatheError);
      expect((r.error as Error).message).toMatch(msg);
    }
    await writeFile(join(dir, 'bad.jsonl'), '{"prompt":"a","expected":"1"}\n{"prompt":"b"}\n');
    const bad = await cli(['eval', run, '--suite', join(dir, 'bad.jsonl')]);
    expect((bad.error as Error).message).toBe(
      `${join(dir, 'bad.jsonl')}:2: missing "expected" (the expected answer for the exact scorer)`,
    );
    const scorer = await cli(['eval', run, '--suite', path, '--scorer', 'fuzzy']);
    expect((scorer.error as { code?: string }).code).toBe('commander.invalidArgument');
  });

  it("eval with no --suite runs the recipe's suites (paths relative to the recipe); --suite NAME picks one", async () => {
    await taskSuite(3, 'locked.jsonl');
    const rd = RunDir.open(run);
    const lock = rd.readLock();
    (lock.recipe.eval as { suites?: unknown[] }).suites = [
      { name: 'locked', path: 'locked.jsonl', maxTokens: 4 },
      { name: 'ppl', path: 'corpus.txt', scorer: 'perplexity', limit: 2 },
    ];
    await writeFile(rd.lockPath, JSON.stringify(lock, null, 2));
    const all = JSON.parse((await cli(['eval', run, '--json'])).out) as { results: { name: string; n: number }[] };
    expect(all.results.map((r) => [r.name, r.n])).toEqual([
      ['locked', 3],
      ['ppl', 2],
    ]);
    const one = JSON.parse((await cli(['eval', run, '--suite', 'locked', '--limit', '1', '--json'])).out) as {
      results: { name: string; n: number }[];
    };
    expect(one.results.map((r) => [r.name, r.n])).toEqual([['locked', 1]]);
    const unknown = await cli(['eval', run, '--suite', 'nosuch']);
    expect((unknown.error as Error).message).toMatch(
      /--suite nosuch: no such file, and the recipe's suites are locked, ppl/,
    );
  });

  it('--help for both verbs', async () => {
    for (const verb of ['eval', 'compare']) {
      const r = await cli([verb, '--help']);
      expect((r.error as { exitCode?: number }).exitCode).toBe(0);
      expect(r.out).toMatch(new RegExp(`^Usage: lathe ${verb} `));
    }
  });

  it('the built CLI (dist): lathe eval exits 0 with a table, 2 on a bad suite line naming file:line', async () => {
    const built = join(ROOT, 'dist', 'src', 'cli', 'eval.js');
    if (!existsSync(built)) return; // npm test builds dist first (npm run setup)
    const path = await taskSuite(3, 'built.jsonl');
    await writeFile(join(dir, 'built-score.mjs'), 'export const score = (c, ex) => c.trim() === ex.expected;\n');
    // Through bin/lathe.js once main.ts registers the verb; until then through the built module.
    const registered = /^Usage: lathe eval /.test(lathe(['eval', '--help']).stdout);
    const shim = [
      "import { Command } from 'commander';",
      `import { register } from ${JSON.stringify(built)};`,
      "const p = new Command('lathe').exitOverride(); register(p); p.commands.forEach((c) => c.exitOverride());",
      'try { await p.parseAsync(process.argv.slice(1), { from: "user" }); }',
      'catch (e) { if (e.exitCode === 0) process.exit(0); if (e.name !== "CommanderError") console.error("lathe: " + e.message); process.exit(e.exitCode ?? 1); }',
    ].join('\n');
    const exec = (args: string[]) =>
      registered
        ? lathe(args)
        : ((r) => ({ status: r.status ?? -1, stdout: r.stdout, stderr: r.stderr }))(
            spawnSync(process.execPath, ['--input-type=module', '-e', shim, ...args], {
              cwd: ROOT,
              encoding: 'utf8',
              timeout: 300_000,
            }),
          );
    const ok = exec([
      'eval',
      run,
      '--suite',
      path,
      '--scorer',
      `${join(dir, 'built-score.mjs')}#score`,
      '--max-tokens',
      '4',
      '--no-record',
    ]);
    expect(ok.status, ok.stderr).toBe(0);
    expect(ok.stdout).toMatch(/\nbuilt\s+.*built-score\.mjs#score\s+3\s+accuracy\s+/);
    await writeFile(join(dir, 'built-bad.jsonl'), '{"prompt":"a","expected":"1"}\n\n{"prompt": oops}\n');
    const bad = exec(['eval', run, '--suite', join(dir, 'built-bad.jsonl')]);
    expect(bad.status).toBe(2);
    expect(bad.stderr).toContain(`${join(dir, 'built-bad.jsonl')}:3: invalid JSON`);
    expect(bad.stderr).not.toMatch(/\n\s+at /);
  });
});
