import { existsSync, readFileSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { scratch } from '../../test/helpers.js';
import { miniBase, TALLY_REWARD, untimed } from '../../test/post-helpers.js';
import { miniProgram } from '../../test/tally-mini.js';
import { Rng } from '../random.js';
import { dpo, grpo, pipeline, pretrain, sft } from '../runs/recipe.js';
import { generate, loadModel, reproduce, resume } from '../runs/index.js';
import type { RunSummary } from '../runs/rundir.js';

describe('pipelines and --from', () => {
  let dir: string;
  let train: string;
  let prompts: string;
  let base: string;
  beforeAll(async () => {
    dir = await scratch('lathe-pipe-');
    ({ base, prompts } = await miniBase(dir, { steps: 20 }));
    train = join(dir, 'mini-train.jsonl');
    const rng = new Rng(9);
    const sftRows: string[] = [];
    const pairRows: string[] = [];
    for (let i = 0; i < 60; i++) {
      const p = miniProgram(rng);
      sftRows.push(
        JSON.stringify({
          messages: [
            { role: 'user', content: `Finish:\n${p.body}\nemit` },
            { role: 'assistant', content: `emit ${p.answer}` },
          ],
        }),
      );
      pairRows.push(JSON.stringify({ prompt: `${p.body}\nemit`, chosen: ` ${p.answer}`, rejected: ' nope' }));
    }
    await writeFile(join(dir, 'chat.jsonl'), sftRows.join('\n') + '\n');
    await writeFile(join(dir, 'pairs.jsonl'), pairRows.join('\n') + '\n');
  });

  const stages = () => [
    pretrain(
      {
        seed: 1,
        data: { sources: [{ path: 'mini-train.jsonl' }], valFraction: 0.02 },
        tokenizer: { vocabSize: 320 },
        model: { dim: 32, layers: 1, heads: 2, context: 48 },
        train: { steps: 6, batchSize: 8, lr: 0.01, warmupSteps: 1, checkpointEvery: 3 },
        eval: { every: 0, batches: 1 },
      },
      { baseDir: dir },
    ),
    sft(
      {
        data: { sources: [{ path: 'chat.jsonl' }] },
        train: { steps: 4, batchSize: 4, warmupSteps: 1, checkpointEvery: 2 },
        eval: { every: 0, batches: 1 },
      },
      { baseDir: dir },
    ),
    dpo(
      {
        data: { sources: [{ path: 'pairs.jsonl' }] },
        train: { steps: 3, batchSize: 4, warmupSteps: 1 },
        eval: { every: 0, batches: 1 },
      },
      { baseDir: dir },
    ),
    grpo(
      {
        data: { sources: [{ path: prompts }] },
        reward: { module: TALLY_REWARD, export: 'programReward' },
        train: { steps: 3, batchSize: 2, groupSize: 3, warmupSteps: 1, maxNewTokens: 4, stop: ['\n'] },
        eval: { every: 0, batches: 1 },
      },
      { baseDir: dir },
    ),
  ];

  it('pretrain → sft → dpo → grpo: each stage from the previous one, resumable at stage granularity, exact', async () => {
    const p = pipeline(stages(), { backend: 'wasm' });
    expect(p.config.train.steps).toBe(16);
    const straight = await p.run({ out: join(dir, 'straight') });
    expect(straight.summary!.status).toBe('completed');
    const ms = await straight.dir.readMetrics();
    expect(ms.map((m) => m.step)).toEqual(Array.from({ length: 16 }, (_, i) => i + 1));
    expect(ms.map((m) => m.stage)).toEqual([
      ...Array(6).fill('pretrain'),
      ...Array(4).fill('sft'),
      ...Array(3).fill('dpo'),
      ...Array(3).fill('grpo'),
    ]);
    expect(ms.slice(6, 10).map((m) => m.stage_step)).toEqual([1, 2, 3, 4]);
    // One run directory per stage, each a complete run; later stages pin the previous stage's last checkpoint.
    for (const s of ['0-pretrain', '1-sft', '2-dpo', '3-grpo'])
      expect(
        (JSON.parse(readFileSync(join(straight.dir.path, 'stages', s, 'summary.json'), 'utf8')) as RunSummary).status,
      ).toBe('completed');
    const dpoLock = JSON.parse(readFileSync(join(straight.dir.path, 'stages', '2-dpo', 'recipe.lock.json'), 'utf8'));
    expect(dpoLock.base).toMatchObject({ kind: 'run', path: join(straight.dir.path, 'stages', '1-sft'), step: 4 });
    expect(dpoLock.recipe.model.dim).toBe(32);
    const summary = (await straight.dir.readSummary())!;
    expect(summary).toMatchObject({ stage: 'pipeline', status: 'completed', step: 16, steps: 16 });
    expect((summary.stages as { stage: string }[]).map((s) => s.stage)).toEqual(['pretrain', 'sft', 'dpo', 'grpo']);
    // The pipeline's model is its last stage's.
    const { model, step } = await loadModel(straight.dir.path);
    expect(step).toBe(3);
    model.dispose();
    expect(typeof (await generate(straight.dir.path, 'let px = 1\nemit', { maxTokens: 3 }))).toBe('string');

    // Stop inside SFT (global step 8 = its step 2), then resume: pretrain is not run again.
    const split = await p.run({ out: join(dir, 'split'), stopAfter: 8 });
    expect(split.summary).toMatchObject({ status: 'interrupted', step: 8 });
    const pretrainEvents = await readFile(join(split.dir.path, 'stages', '0-pretrain', 'events.jsonl'), 'utf8');
    expect(existsSync(join(split.dir.path, 'stages', '2-dpo'))).toBe(false);
    const resumed = await resume(split.dir.path);
    await resumed.done;
    expect(resumed.summary!.status).toBe('completed');
    expect(await readFile(join(split.dir.path, 'stages', '0-pretrain', 'events.jsonl'), 'utf8')).toBe(pretrainEvents);
    expect(untimed(await resumed.dir.readMetrics())).toEqual(untimed(ms));
    const events = await resumed.dir.readEvents();
    expect(events.filter((e) => e.type === 'resumed').map((e) => e.message)).toEqual(['sft: resumed from step 2']);
    // reproduce re-runs the whole chain and compares the global metric stream to the bit.
    expect((await reproduce(straight.dir.path, { out: join(dir, 'again') })).identical).toBe(true);
    const a = await readFile(join(straight.dir.path, 'stages', '3-grpo', 'checkpoints', '3', 'model.safetensors'));
    const b = await readFile(join(resumed.dir.path, 'stages', '3-grpo', 'checkpoints', '3', 'model.safetensors'));
    expect(a.equals(b)).toBe(true);
  });

  it('starts a stage from a run directory or from a Hugging Face folder exported from it, with the same result', async () => {
    const { exportHf } = await import('../export/hf.js');
    const hf = join(dir, 'hf');
    await exportHf(base, hf);
    const r = (from: string) =>
      sft(
        {
          from,
          backend: 'wasm',
          data: { sources: [{ path: 'chat.jsonl' }] },
          train: { steps: 3, batchSize: 4, warmupSteps: 1, checkpointEvery: 0 },
          eval: { every: 0, batches: 1 },
        },
        { baseDir: dir },
      );
    const fromRun = await r('mini-base').run({ out: join(dir, 'from-run') });
    const fromHf = await r('hf').run({ out: join(dir, 'from-hf') });
    expect(fromHf.summary!.status).toBe('completed');
    expect((fromHf.lock as { base?: { kind: string } }).base?.kind).toBe('hf');
    expect(untimed(await fromHf.dir.readMetrics())).toEqual(untimed(await fromRun.dir.readMetrics()));
    // A pipeline can start from a model too.
    const p = pipeline([stages()[2]!], { backend: 'wasm', from: 'hf', baseDir: dir });
    const run = await p.run({ out: join(dir, 'pipe-from-hf') });
    expect(run.summary!.status).toBe('completed');
    await expect(r('nowhere').run({ out: join(dir, 'x') })).rejects.toThrow(
      /^from: nowhere does not exist \(resolved to .*nowhere\)/,
    );
    await expect(r('chat.jsonl').run({ out: join(dir, 'y') })).rejects.toThrow(
      /from: chat\.jsonl is a file; name a run directory or a Hugging Face model folder/,
    );
  });

  it('validates pipelines: later stages take their model from the previous one', () => {
    const bad = () =>
      pipeline(
        [
          sft({ data: { sources: [{ path: 'chat.jsonl' }] } }, { baseDir: dir }),
          pretrain({ data: { sources: [{ path: train }] } }, { baseDir: dir }),
          { stage: 'dpo', from: 'x', model: { dim: 64 }, data: { sources: [{ path: 'pairs.jsonl' }] } },
        ],
        { baseDir: dir },
      );
    expect(bad).toThrow(
      /stages\[1\]\.stage: pretrain starts a model \(fresh, or `from` one\), so it can only be the first stage/,
    );
    expect(bad).toThrow(
      /stages\[2\]\.from: a pipeline stage after the first starts from the previous stage's checkpoint; remove from/,
    );
    expect(bad).toThrow(/stages\[2\]\.model: comes from the previous stage of the pipeline; remove model/);
  });
});
