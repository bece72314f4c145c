/**
 * `lathe eval --lm-eval`: the real lm-evaluation-harness (pinned in .venv) runs the two Tally tasks
 * of examples/lm-eval/ on a trained run's HF export. Its per-document log-likelihoods equal Lathe's
 * own within float tolerance, its greedy generations equal Lathe's, the scores land in
 * summary.json and gates name them; bad task files get errors that name the file and field.
 */
import { readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Command } from 'commander';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { ROOT, scratch, tallySlice, tinyRecipe } from '../../test/helpers.js';
import { register } from '../cli/eval.js';
import type { Engine } from '../engine/engine.js';
import { generate } from '../engine/sample.js';
import { useBackend } from '../engine/tfjs/backend.js';
import { LatheError } from '../errors.js';
import { Recipe } from '../runs/recipe.js';
import { loadModel } from '../runs/index.js';
import type { Tokenizer } from '../tokenizer/index.js';
import type { LmEvalResult } from './lm-eval.js';

const MC = join(ROOT, 'examples', 'lm-eval', 'tally_emit_mc.yaml');
const GEN = join(ROOT, 'examples', 'lm-eval', 'tally_emit_gen.yaml');
const LIMIT = 12;

async function runCli(args: string[]): Promise<string> {
  const program = new Command().exitOverride().configureOutput({ writeErr: () => {}, writeOut: () => {} });
  register(program);
  let out = '';
  vi.spyOn(process.stdout, 'write').mockImplementation((s) => ((out += String(s)), true));
  vi.spyOn(console, 'log').mockImplementation((s: unknown) => void (out += String(s) + '\n'));
  try {
    await program.parseAsync(['node', 'lathe', ...args]);
  } finally {
    vi.restoreAllMocks();
  }
  return out;
}

/** Lathe's log-likelihood of `cont` after `ctx` (ids), with <|bos|> in front as the harness sends it. */
async function loglik(model: Engine, tok: Tokenizer, ctx: number[], cont: number[]): Promise<number> {
  const ids = [tok.special.bos, ...ctx, ...cont];
  const logits = await model.logits(ids.slice(0, -1));
  const v = model.spec.vocabSize;
  let sum = 0;
  for (let i = 0; i < cont.length; i++) {
    const at = ctx.length + i; // row predicting ids[at + 1]
    const row = logits.subarray(at * v, (at + 1) * v);
    let m = -Infinity;
    for (const x of row) m = Math.max(m, x);
    let z = 0;
    for (const x of row) z += Math.exp(x - m);
    sum += row[cont[i]!]! - m - Math.log(z);
  }
  return sum;
}

describe('lathe eval --lm-eval', () => {
  let dir: string;
  let run: string;
  let printed = '';
  let result: LmEvalResult;
  let model: Engine;
  let tokenizer: Tokenizer;
  let docs: { mc: { prompt: string; choices: string[]; gold: number }[]; gen: { prompt: string; answer: string }[] };

  beforeAll(async () => {
    await useBackend('cpu');
    dir = await scratch('lathe-lm-eval-');
    const data = await tallySlice(dir, 300);
    run = join(dir, 'run');
    await new Recipe(
      tinyRecipe(data, {
        model: { dim: 32, layers: 1, heads: 2, context: 128 },
        train: { steps: 30, batchSize: 4, lr: 0.01, minLr: 0.001, warmupSteps: 5, checkpointEvery: 0 },
        eval: {
          every: 0,
          batches: 1,
          gates: ['lm-eval/tally_emit_mc/acc >= 0.1', 'lm-eval/tally_emit_gen/exact_match >= 0.99'],
        },
      }),
      { baseDir: dir },
    ).run({ out: run });
    const text = await runCli(['eval', run, '--lm-eval', `${MC},${GEN}`, '--limit', String(LIMIT), '--json']);
    result = JSON.parse(text) as LmEvalResult;
    printed = await runCli(['eval', run, '--lm-eval', MC, '--limit', '4', '--no-record']);
    ({ model, tokenizer } = await loadModel(run));
    const read = async (f: string) =>
      (await readFile(join(ROOT, 'examples', 'lm-eval', f), 'utf8'))
        .split('\n')
        .filter(Boolean)
        .slice(0, LIMIT)
        .map((l) => JSON.parse(l));
    docs = { mc: await read('tally_emit_mc.jsonl'), gen: await read('tally_emit_gen.jsonl') };
  }, 600_000);

  afterAll(async () => {
    await model?.dispose();
    await rm(dir, { recursive: true, force: true });
  });

  it('runs both tasks and prints a table', () => {
    console.log(`[lm-eval] ${printed.trim().replace(/\n/g, '\n[lm-eval] ')}`);
    expect(result.lmEval).toBe('0.4.13');
    expect(result.tasks.map((t) => [t.task, t.outputType, t.n, t.file])).toEqual([
      ['tally_emit_mc', 'multiple_choice', LIMIT, MC],
      ['tally_emit_gen', 'generate_until', LIMIT, GEN],
    ]);
    expect(printed).toMatch(/lm-eval\/tally_emit_mc\s+multiple_choice\s+4\/100\s+acc [\d.]+, acc_norm [\d.]+/);
    expect(printed).not.toMatch(/gates:/); // --no-record: summary.json and its gates are left alone
  });

  it("multiple choice: lm-eval's per-choice log-likelihoods equal Lathe's (|diff| <= 1e-3), and so does acc", async () => {
    const t = result.tasks.find((x) => x.task === 'tally_emit_mc')!;
    let maxDiff = 0;
    let correct = 0;
    for (const s of t.samples) {
      const d = docs.mc[s.doc_id]!;
      const ours: number[] = [];
      for (const c of d.choices) {
        // The harness encodes context+continuation whole, then splits it after the context's tokens.
        const ctx = tokenizer.encode(d.prompt);
        const whole = tokenizer.encode(`${d.prompt} ${c}`);
        expect(whole.slice(0, ctx.length)).toEqual(ctx);
        ours.push(await loglik(model, tokenizer, ctx, whole.slice(ctx.length)));
      }
      const theirs = (s.resps as [[number, boolean]][]).map((r) => r[0][0]);
      for (let i = 0; i < ours.length; i++) maxDiff = Math.max(maxDiff, Math.abs(ours[i]! - theirs[i]!));
      if (ours.indexOf(Math.max(...ours)) === d.gold) correct++;
    }
    console.log(`[lm-eval] tally_emit_mc: max |log-likelihood diff| lm-eval vs Lathe ${maxDiff.toExponential(2)}`);
    expect(t.samples.length).toBe(LIMIT);
    expect(maxDiff).toBeLessThanOrEqual(1e-3);
    expect(t.metrics['lm-eval/tally_emit_mc/acc']).toBeCloseTo(correct / LIMIT, 10);
  });

  it("generation: lm-eval's greedy answers equal Lathe's greedy completions, and exact_match scores them", async () => {
    const t = result.tasks.find((x) => x.task === 'tally_emit_gen')!;
    let hits = 0;
    for (const s of t.samples) {
      const d = docs.gen[s.doc_id]!;
      const ids = [tokenizer.special.bos, ...tokenizer.encode(d.prompt)];
      const out = await generate(model, ids, { maxTokens: 16, temperature: 0, stop: [tokenizer.special.eos] });
      const ours = tokenizer.decode(out.filter((x) => x !== tokenizer.special.eos)).split('\n')[0]!;
      expect((s.filtered_resps as string[])[0], `doc ${s.doc_id}`).toBe(ours);
      if (ours.trim() === d.answer.trim()) hits++;
    }
    expect(t.metrics['lm-eval/tally_emit_gen/exact_match']).toBeCloseTo(hits / LIMIT, 10);
  });

  it('scores land in summary.json and the recipe gates name them', async () => {
    const summary = JSON.parse(await readFile(join(run, 'summary.json'), 'utf8'));
    const mc = summary.evals['lm-eval/tally_emit_mc'];
    expect(mc).toMatchObject({ scorer: 'lm-eval', n: LIMIT, file: MC, step: 30 });
    expect(mc.accuracy).toBe(mc.metrics['lm-eval/tally_emit_mc/acc']);
    expect(Object.keys(mc.metrics).sort()).toEqual(
      ['acc', 'acc_norm', 'acc_norm_stderr', 'acc_stderr'].map((m) => `lm-eval/tally_emit_mc/${m}`),
    );
    const acc = mc.metrics['lm-eval/tally_emit_mc/acc'] as number;
    const em = summary.evals['lm-eval/tally_emit_gen'].metrics['lm-eval/tally_emit_gen/exact_match'] as number;
    expect(summary.gates.results).toEqual([
      { gate: 'lm-eval/tally_emit_mc/acc >= 0.1', metric: 'lm-eval/tally_emit_mc/acc', value: acc, pass: acc >= 0.1 },
      {
        gate: 'lm-eval/tally_emit_gen/exact_match >= 0.99',
        metric: 'lm-eval/tally_emit_gen/exact_match',
        value: em,
        pass: em >= 0.99,
      },
    ]);
    expect(summary.gates.status).toBe(acc >= 0.1 && em >= 0.99 ? 'release-ready' : 'blocked');
    expect(result.gates).toEqual(summary.gates);
    // lathe compare lists them beside the suites.
    const [row] = JSON.parse(await runCli(['compare', run, '--json'])) as { scores: Record<string, number> }[];
    expect(row!.scores).toMatchObject({ 'lm-eval/tally_emit_mc/acc': acc, 'lm-eval/tally_emit_gen/exact_match': em });
    expect(Object.keys(row!.scores).some((k) => k.includes('stderr'))).toBe(false);
  });

  it('bad input: a missing task file, a task file without `task`, suite flags with --lm-eval', async () => {
    const fail = async (args: string[], re: RegExp) => {
      const e = await runCli(args).catch((x: unknown) => x);
      expect(e instanceof LatheError, String(e)).toBe(true);
      expect((e as Error).message).toMatch(re);
    };
    await fail(['eval', run, '--lm-eval', join(dir, 'nope.yaml')], /--lm-eval .*nope\.yaml: no such task file/);
    const bad = join(dir, 'bad.yaml');
    await writeFile(bad, 'dataset_path: json\noutput_type: multiple_choice\n');
    await fail(['eval', run, '--lm-eval', bad], /bad\.yaml: task: missing/);
    const badData = join(dir, 'bad-data.yaml');
    await writeFile(badData, 'task: t\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: gone.jsonl\n');
    await fail(
      ['eval', run, '--lm-eval', badData],
      /bad-data\.yaml: dataset_kwargs\.data_files: gone\.jsonl: no such file/,
    );
    await fail(
      ['eval', run, '--lm-eval', MC, '--max-tokens', '4'],
      /--max-tokens: applies to suites, not to --lm-eval/,
    );
  });
});
