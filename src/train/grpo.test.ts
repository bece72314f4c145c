import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { scratch } from '../../test/helpers.js';
import { meanMetric, miniBase, TALLY_REWARD, untimed } from '../../test/post-helpers.js';
import { grpo } from '../runs/recipe.js';
import { reproduce, resume } from '../runs/index.js';
import { groupAdvantages } from './grpo.js';
import { cutAtStop } from './rollout.js';

describe('GRPO pieces', () => {
  it('normalises advantages within a group and leaves failed rewards out', () => {
    const a = groupAdvantages([1, 0, 0, 1], true);
    expect(a[0]).toBeCloseTo(0.866, 2);
    expect(a[0]! + a[1]! + a[2]! + a[3]!).toBeCloseTo(0, 6);
    expect(groupAdvantages([0.5, 0.5, 0.5], true)).toEqual([0, 0, 0]);
    expect(groupAdvantages([1, NaN, 0], false)).toEqual([0.5, 0, -0.5]);
    expect(cutAtStop(' px\nemit qty', ['\n'])).toEqual({ text: ' px', hit: true });
  });
});

describe('GRPO', () => {
  let dir: string;
  let base: string;
  let prompts: string;
  beforeAll(async () => {
    dir = await scratch('lathe-grpo-');
    ({ base, prompts } = await miniBase(dir));
  });

  const recipe = (
    over: Record<string, unknown> = {},
    reward: Record<string, unknown> = { module: TALLY_REWARD, export: 'programReward' },
  ) =>
    grpo(
      {
        from: base,
        backend: 'wasm',
        seed: 2,
        data: { sources: [{ path: prompts }] },
        reward: reward as never,
        train: {
          steps: 30,
          batchSize: 8,
          groupSize: 8,
          innerSteps: 2,
          lr: 4e-3,
          warmupSteps: 2,
          maxNewTokens: 6,
          stop: ['\n'],
          checkpointEvery: 0,
        },
        eval: { every: 0, batches: 2 },
        ...over,
      },
      { baseDir: dir },
    );

  it('mean Tally reward rises by more than 0.25 over 30 steps (wasm, mini Tally, the interpreter as the reward)', async () => {
    const run = await recipe().run({ out: join(dir, 'grpo') });
    expect(run.summary!.status).toBe('completed');
    const ms = await run.dir.readMetrics();
    const first = meanMetric(ms, 'reward_mean', 1, 5);
    const last = meanMetric(ms, 'reward_mean', 26, 30);
    if (process.env.LATHE_MEASURE)
      console.log('GRPO effect', { first, last, ms: ms.map((m) => [m.step, m.reward_mean, m.kl, m.clip_ratio]) });
    // Measured (wasm, seed 2): mean reward 0.05 over steps 1-5 → 0.42 over steps 26-30 (seeds 1 and 3: +0.37, +0.36).
    expect(last - first).toBeGreaterThan(0.25);
    for (const m of ms) {
      expect(m.stage).toBe('grpo');
      for (const k of ['reward_mean', 'reward_std', 'kl', 'completion_length', 'reward_errors', 'clip_ratio'])
        expect(typeof m[k], `${k} at ${m.step}`).toBe('number');
    }
    // innerSteps 2: the second update sees ratios off 1, so the clip engages on some tokens.
    expect(ms.some((m) => (m.clip_ratio as number) > 0)).toBe(true);
    expect(ms.at(-1)!.kl as number).toBeGreaterThan(0);
  });

  it('resume is exact: 2 steps + resume + 2 steps equals 4 steps (sampling RNG in the checkpoint)', async () => {
    const r = recipe({
      train: {
        steps: 4,
        batchSize: 2,
        groupSize: 4,
        innerSteps: 2,
        lr: 2e-3,
        warmupSteps: 1,
        maxNewTokens: 6,
        stop: ['\n'],
        checkpointEvery: 0,
      },
    });
    const straight = await r.run({ out: join(dir, 'straight') });
    const split = await r.run({ out: join(dir, 'split'), stopAfter: 2 });
    expect(split.summary!.status).toBe('interrupted');
    const state = JSON.parse(await readFile(join(split.dir.checkpointPath(2), 'state.json'), 'utf8'));
    expect(state.extra.rng).toHaveLength(4);
    const resumed = await resume(split.dir.path);
    await resumed.done;
    expect(resumed.summary!.status).toBe('completed');
    expect(untimed(await resumed.dir.readMetrics())).toEqual(untimed(await straight.dir.readMetrics()));
    const wa = await readFile(join(straight.dir.checkpointPath(4), 'model.safetensors'));
    const wb = await readFile(join(resumed.dir.checkpointPath(4), 'model.safetensors'));
    expect(wa.equals(wb)).toBe(true);
    expect((await reproduce(straight.dir.path, { out: join(dir, 'again') })).identical).toBe(true);
  });

  it('reward functions that throw, hang past the timeout or return NaN are counted and skipped; the run goes on', async () => {
    // Every third call throws, every third returns NaN; prompts whose row says hang never answer.
    await writeFile(
      join(dir, 'flaky.mjs'),
      `let n = 0;\nexport function score(completion, example) {\n  if (example.hang) for (;;) {}\n  n++;\n  if (n % 3 === 0) throw new Error('flaky ' + n);\n  if (n % 3 === 1) return NaN;\n  return completion.length;\n}\n`,
    );
    const rows = Array.from({ length: 12 }, (_, i) =>
      JSON.stringify({ prompt: `let px = ${i + 1}\nemit`, hang: i === 0 }),
    );
    await writeFile(join(dir, 'flaky-prompts.jsonl'), rows.join('\n') + '\n');
    const r = recipe(
      {
        data: { sources: [{ path: join(dir, 'flaky-prompts.jsonl') }], valFraction: 0 },
        train: {
          steps: 3,
          batchSize: 4,
          groupSize: 3,
          innerSteps: 1,
          lr: 1e-3,
          warmupSteps: 0,
          maxNewTokens: 4,
          stop: ['\n'],
          checkpointEvery: 0,
        },
      },
      { module: join(dir, 'flaky.mjs'), export: 'score', timeoutMs: 300, maxErrorRate: 0.9 },
    );
    const run = await r.run({ out: join(dir, 'flaky') });
    expect(run.summary!.status).toBe('completed');
    const ms = await run.dir.readMetrics();
    expect(ms).toHaveLength(3);
    const errors = ms.reduce((a, m) => a + (m.reward_errors as number), 0);
    // 36 calls: 3 timeouts (the hanging prompt's group), and 2 of every 3 others (NaN, throw).
    expect(errors).toBe(3 + 22);
    const notices = (await run.dir.readEvents()).filter((e) => e.type === 'notice').map((e) => e.message);
    expect(
      notices.some((m) => /reward\.module .*flaky\.mjs#score threw Error: flaky \d+ \(at .*flaky\.mjs:5:\d+\)/.test(m)),
    ).toBe(true);
    expect(notices.some((m) => /returned NaN, not a finite number/.test(m))).toBe(true);
    expect(notices.some((m) => /timed out after 300 ms \(reward\.timeoutMs\)/.test(m))).toBe(true);
  });

  it('a reward that always fails stops the run cleanly with a checkpoint and the reason; fixed, it resumes', async () => {
    const mod = join(dir, 'broken.mjs');
    await writeFile(mod, `export default function () {\n  throw new TypeError('cannot read the answer');\n}\n`);
    const r = recipe(
      {
        train: {
          steps: 3,
          batchSize: 2,
          groupSize: 3,
          innerSteps: 1,
          lr: 1e-3,
          warmupSteps: 0,
          maxNewTokens: 4,
          checkpointEvery: 0,
        },
      },
      { module: mod },
    );
    const run = await r.run({ out: join(dir, 'broken') });
    const s = run.summary!;
    expect(s.status).toBe('failed');
    expect(s.error).toMatch(
      /^reward\.module .*broken\.mjs#default: 6 of 6 completions failed at step 1 \(more than maxErrorRate 0\.5; first: threw TypeError: cannot read the answer \(at .*broken\.mjs:2:\d+\)\); stopped with a checkpoint at step 0$/,
    );
    expect(await run.dir.checkpointSteps()).toEqual([0]);
    // Fixed in place, the run resumes from that checkpoint.
    await writeFile(mod, `export default (completion) => completion.length;\n`);
    const again = await resume(run.dir.path);
    await again.done;
    expect(again.summary!.status).toBe('completed');
    expect((await again.dir.readMetrics()).map((m) => m.step)).toEqual([1, 2, 3]);

    // onError fail: the first bad value stops the run.
    await writeFile(join(dir, 'nan.mjs'), `export default () => NaN;\n`);
    const strict = await recipe(
      { train: { steps: 2, batchSize: 1, groupSize: 2, warmupSteps: 0, maxNewTokens: 3 } },
      { module: join(dir, 'nan.mjs'), onError: 'fail' },
    ).run({ out: join(dir, 'strict') });
    expect(strict.summary!.error).toMatch(
      /2 of 2 completions failed at step 1 \(onError is "fail"; first: returned NaN, not a finite number\)/,
    );
  });

  it('a reward module that kills its process stops the stage cleanly (checkpoint, summary); one that never loads is an error before training', async () => {
    await writeFile(
      join(dir, 'suicide.mjs'),
      `let n = 0;\nexport default (completion) => {\n  if (++n === 5) process.kill(process.pid, 'SIGKILL');\n  return completion.length;\n};\n`,
    );
    const train = {
      steps: 3,
      batchSize: 2,
      groupSize: 2,
      innerSteps: 1,
      lr: 1e-3,
      warmupSteps: 0,
      maxNewTokens: 3,
      checkpointEvery: 1,
    };
    const run = await recipe({ train }, { module: join(dir, 'suicide.mjs') }).run({ out: join(dir, 'suicide') });
    const s = run.summary!;
    expect(s.status).toBe('failed');
    expect(s.error).toMatch(
      /^reward\.module .*suicide\.mjs#default: its process died \(SIGKILL\) at step 2; stopped with a checkpoint at step 1$/,
    );
    expect(await run.dir.checkpointSteps()).toEqual([1]);
    expect((await run.dir.readSummary())!.status).toBe('failed');
    expect((await run.dir.readEvents()).at(-1)).toMatchObject({ type: 'failed', step: 1 });

    await writeFile(join(dir, 'spin.mjs'), `for (;;) {}\nexport default () => 1;\n`);
    const t0 = performance.now();
    const spin = await recipe({ train }, { module: join(dir, 'spin.mjs'), loadTimeoutMs: 1000 }).start({
      out: join(dir, 'spin'),
    });
    await expect(spin.done).rejects.toThrow(
      /reward\.module: .*spin\.mjs did not load within 1000 ms \(an endless loop at its top level\?\)/,
    );
    expect(performance.now() - t0).toBeLessThan(20_000);
    expect((await spin.dir.readSummary())!.status).toBe('failed');
  });

  it('a missing module or export is a clear error before training', async () => {
    await expect(recipe({}, { module: join(dir, 'nope.mjs') }).run({ out: join(dir, 'nope') })).rejects.toThrow(
      /reward\.module: .*nope\.mjs does not exist/,
    );
    await writeFile(join(dir, 'named.mjs'), `export const good = () => 1;\nexport const other = () => 0;\n`);
    const run = await recipe({}, { module: join(dir, 'named.mjs'), export: 'bad' }).start({ out: join(dir, 'named') });
    await expect(run.done).rejects.toThrow(
      /reward\.module: .*named\.mjs has no function export "bad" \(exports: good, other\)/,
    );
  });
});
