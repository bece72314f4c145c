import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { scratch } from '../../test/helpers.js';
import { POST, tallyBase } from '../../test/post-helpers.js';
import { fitSequence, pairExample } from '../data/pairs.js';
import type { PostManifest } from '../data/post.js';
import type { Doc } from '../data/sources.js';
import { dpo } from '../runs/recipe.js';
import { Tokenizer } from '../tokenizer/index.js';

const doc = (row: Record<string, unknown>): Doc => ({ text: '', source: 's', file: 'f', line: 1, row });

describe('preference pairs', () => {
  it('reads string and chat pairs (TRL formats) and names what is wrong with a bad one', async () => {
    const tok = await Tokenizer.train(['let px = 1\nemit px', 'hello world'], { vocabSize: 300 });
    const s = pairExample(doc({ prompt: 'let px = 1\nemit', chosen: ' px', rejected: ' qq' }), tok, 64);
    if (typeof s === 'string') throw new Error(s);
    expect(s.prompt[0]).toBe(tok.special.bos);
    expect(s.chosen.at(-1)).toBe(tok.special.eos);
    expect(tok.decode(s.chosen.slice(0, -1))).toBe(' px');
    const c = pairExample(
      doc({
        prompt: [{ role: 'user', content: 'hi' }],
        chosen: [{ role: 'assistant', content: 'hello' }],
        rejected: [{ role: 'assistant', content: 'go away' }],
      }),
      tok,
      64,
    );
    if (typeof c === 'string') throw new Error(c);
    expect(tok.decode(c.prompt)).toBe('<|bos|><|user|>hi<|end|><|assistant|>');
    expect(tok.decode(c.chosen)).toBe('hello<|end|>');
    const bad = (row: Record<string, unknown>) => pairExample(doc(row), tok, 64);
    expect(bad({ prompt: 'p', chosen: 'a' })).toBe(
      'missing field "rejected" (pairs need "prompt", "chosen" and "rejected")',
    );
    expect(bad({ prompt: 'p', chosen: '', rejected: 'b' })).toBe('chosen is an empty completion');
    expect(bad({ prompt: 'p', chosen: 'a', rejected: 'a' })).toBe('chosen and rejected are the same completion');
    expect(bad({ prompt: 'p', chosen: [{ role: 'assistant', content: 'a' }], rejected: 'b' })).toMatch(
      /chosen must be a string, as the prompt is/,
    );
    expect(bad({ prompt: [{ role: 'assistant', content: 'x' }], chosen: [], rejected: [] })).toMatch(
      /^prompt: prompt\[0\]\.role is "assistant" where "user" is expected/,
    );
    expect(
      bad({
        prompt: [{ role: 'user', content: 'x' }],
        chosen: [{ role: 'user', content: 'a' }],
        rejected: [{ role: 'assistant', content: 'b' }],
      }),
    ).toBe('chosen must hold exactly one assistant message');
    expect(bad({ prompt: 3, chosen: 'a', rejected: 'b' })).toBe(
      'field "prompt" must be a string or a list of chat messages, got number',
    );
    // Cut to fit: the prompt loses its oldest tokens (keeping the first), the completion its tail.
    const fit = fitSequence([1, 2, 3, 4, 5, 6], [7, 8], 5);
    expect(fit).toEqual({ prompt: [1, 4, 5, 6], completion: [7, 8], truncated: true });
  });
});

describe('DPO', () => {
  let dir: string;
  let base: string;
  beforeAll(async () => {
    dir = await scratch('lathe-dpo-');
    base = await tallyBase(dir);
  });

  it('held-out preference accuracy rises above 0.8 (wasm, 40 steps from a 100-step base)', async () => {
    const r = dpo(
      {
        from: base,
        backend: 'wasm',
        seed: 2,
        data: { sources: [{ path: join(POST, 'pairs.jsonl') }] },
        train: { steps: 40, batchSize: 8, lr: 2e-3, beta: 0.1, warmupSteps: 3, checkpointEvery: 0 },
        eval: { every: 20, batches: 8, onStart: true },
      },
      { baseDir: dir },
    );
    const run = await r.run({ out: join(dir, 'dpo') });
    expect(run.summary!.status).toBe('completed');
    const ms = await run.dir.readMetrics();
    const start = ms.find((m) => m.step === 0)!;
    const end = ms.find((m) => m.step === 40)!;
    if (process.env.LATHE_MEASURE) console.log('DPO effect', start, end);
    // Measured (wasm, seed 2, 64 held-out pairs): implicit-reward accuracy 0 (policy = reference) → 0.92;
    // margin 0 → 1.41; held-out DPO loss 0.693 → 0.30; the policy's own log-prob preference 0.81 → 0.91.
    expect(start['eval_rewards/accuracies']).toBe(0);
    expect(end['eval_rewards/accuracies'] as number).toBeGreaterThan(0.8);
    expect(end['eval_rewards/margins'] as number).toBeGreaterThan(0.3);
    expect(end.eval_loss!).toBeLessThan(start.eval_loss! - 0.1);
    for (const k of ['rewards/chosen', 'rewards/rejected', 'rewards/margins', 'rewards/accuracies'])
      expect(typeof end[k]).toBe('number');
  });

  it('bad pairs: missing fields, empty completions and mixed formats are skipped and counted, or stop the run at file:line', async () => {
    const rows = [
      { prompt: 'let px = 1\nemit', chosen: ' px', rejected: ' qq' },
      { prompt: 'let px = 1\nemit', chosen: ' px' },
      { prompt: 'let px = 2\nemit', chosen: '', rejected: ' zz' },
      { prompt: 'let px = 3\nemit', chosen: [{ role: 'assistant', content: 'px' }], rejected: ' qq' },
      { chosen: ' a', rejected: ' b' },
      { prompt: 'let qty = 4\nemit', chosen: ' qty', rejected: ' px' },
    ];
    const file = join(dir, 'bad-pairs.jsonl');
    await writeFile(file, rows.map((r) => JSON.stringify(r)).join('\n') + '\n');
    const failing = dpo(
      {
        from: base,
        backend: 'wasm',
        data: { sources: [{ path: file }] },
        train: { steps: 2, batchSize: 2, warmupSteps: 0 },
      },
      { baseDir: dir },
    );
    const f = await failing.start({ out: join(dir, 'dpo-bad-fail') });
    await expect(f.done).rejects.toThrow(
      `${file}:2: missing field "rejected" (pairs need "prompt", "chosen" and "rejected")`,
    );

    const skipping = dpo(
      {
        from: base,
        backend: 'wasm',
        data: { sources: [{ path: file }], onError: 'skip', valFraction: 0 },
        train: { steps: 2, batchSize: 2, warmupSteps: 0 },
      },
      { baseDir: dir },
    );
    const run = await skipping.run({ out: join(dir, 'dpo-bad-skip') });
    expect(run.summary!.status).toBe('completed');
    const m = JSON.parse(await readFile(join(run.dir.dataDir, 'rows.json'), 'utf8')) as PostManifest;
    expect(m.examples.train).toBe(2);
    expect(m.rejections.map((x) => x.line)).toEqual([2, 3, 4, 5]);
    expect(m.rejections[1]!.reason).toBe('chosen is an empty completion');
  });
});
