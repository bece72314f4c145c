// LoRA through the stages (pretrain, SFT, DPO, online DPO, GRPO): only adapters train and are
// checkpointed, the reference of the preference and RL stages is the base with its adapters off,
// resume is bit-exact on tfjs (dropout on), and the torch engine runs the same stage.
import { readFile, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { scratch, tallySlice, tinyRecipe } from '../../test/helpers.js';
import { miniBase, TALLY_REWARD, untimed } from '../../test/post-helpers.js';
import { loadModel, resume } from '../runs/index.js';
import { dpo, grpo, onlineDpo, Recipe, sft } from '../runs/recipe.js';
import { resolveBase } from '../recipe/base.js';
import type { LoraRecipeConfig } from '../recipe/schema.js';
import { loadBase } from '../engine/open.js';

const lora: LoraRecipeConfig = {
  rank: 4,
  alpha: 8,
  dropout: 0.1,
  targets: ['q_proj', 'v_proj', 'o_proj', 'down_proj'],
  quantize: 'none',
};

describe('LoRA stages (wasm, from the mini Tally base)', () => {
  let dir: string;
  let base: string;
  let prompts: string;
  let chats: string;
  let pairs: string;
  beforeAll(async () => {
    dir = await scratch('lathe-lora-');
    ({ base, prompts } = await miniBase(dir));
    const rows = (await readFile(prompts, 'utf8'))
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l) as { prompt: string; answer: string });
    chats = join(dir, 'sft.jsonl');
    pairs = join(dir, 'pairs.jsonl');
    await writeFile(
      chats,
      rows.map((r) => JSON.stringify({ prompt: r.prompt, completion: ` ${r.answer}` })).join('\n'),
    );
    await writeFile(
      pairs,
      rows
        .map((r) =>
          JSON.stringify({ prompt: r.prompt, chosen: ` ${r.answer}`, rejected: r.answer === 'px' ? ' qty' : ' px' }),
        )
        .join('\n'),
    );
  }, 120_000);

  it('SFT: held-out loss falls, checkpoints hold only the adapters, 8 steps + resume + 8 is bit-exact with 16 (dropout on)', async () => {
    const r = sft(
      {
        from: base,
        backend: 'wasm',
        seed: 3,
        data: { sources: [{ path: chats }] },
        train: { steps: 16, batchSize: 8, lr: 1e-2, warmupSteps: 2, checkpointEvery: 8, lora },
        eval: { every: 8, batches: 2, onStart: true },
      },
      { baseDir: dir },
    );
    const straight = await r.run({ out: join(dir, 'sft') });
    expect(straight.summary!.status, straight.summary!.error).toBe('completed');
    const ms = await straight.dir.readMetrics();
    const [start, end] = [ms.find((m) => m.step === 0)!, ms.find((m) => m.step === 16)!];
    if (process.env.LATHE_MEASURE)
      console.log(
        'LoRA SFT',
        ms.map((m) => [m.step, m.loss, m.eval_loss]),
      );
    // Measured (wasm, seed 3): held-out completion loss 1.739 -> 1.641 in 16 steps.
    expect(end.eval_loss!).toBeLessThan(start.eval_loss! - 0.05);
    const events = await straight.dir.readEvents();
    expect(events.find((e) => e.type === 'started')!.message).toMatch(
      /LoRA rank 4 on q_proj, v_proj, o_proj, down_proj trains [\d,]+ \(\d+\.\d+%\), the base frozen/,
    );
    const ck = straight.dir.checkpointPath(16);
    expect(existsSync(join(ck, 'model.safetensors'))).toBe(false);
    expect(existsSync(join(ck, 'adapter.safetensors'))).toBe(true);
    const split = await r.run({ out: join(dir, 'sft-split'), stopAfter: 8 });
    expect(split.summary!.status).toBe('interrupted');
    const resumed = await resume(split.dir.path);
    await resumed.done;
    expect(resumed.summary!.status).toBe('completed');
    expect(untimed(await resumed.dir.readMetrics())).toEqual(untimed(ms));
    for (const f of ['adapter.safetensors', 'optimizer.safetensors'])
      expect((await readFile(join(resumed.dir.checkpointPath(16), f))).equals(await readFile(join(ck, f)))).toBe(true);
  }, 300_000);

  it('QLoRA int8: the same SFT on an int8 base lands within 0.03 of LoRA on the float base, and resumes to the bit', async () => {
    const r = (quantize: 'none' | 'int8') =>
      sft(
        {
          from: base,
          backend: 'wasm',
          seed: 3,
          data: { sources: [{ path: chats }] },
          train: { steps: 16, batchSize: 8, lr: 1e-2, warmupSteps: 2, checkpointEvery: 8, lora: { ...lora, quantize } },
          eval: { every: 8, batches: 2, onStart: true },
        },
        { baseDir: dir },
      );
    const q = await r('int8').run({ out: join(dir, 'qlora') });
    expect(q.summary!.status, q.summary!.error).toBe('completed');
    const [mq, mf] = [
      await q.dir.readMetrics(),
      await (await import('../runs/index.js')).open(join(dir, 'sft')).then((x) => x.dir.readMetrics()),
    ];
    const at = (ms: typeof mq, step: number) => ms.find((m) => m.step === step)!.eval_loss!;
    console.log(
      `[qlora] held-out loss, int8 base vs float base: start ${at(mq, 0).toFixed(4)} vs ${at(mf, 0).toFixed(4)}, after 16 steps ${at(mq, 16).toFixed(4)} vs ${at(mf, 16).toFixed(4)}`,
    );
    expect(Math.abs(at(mq, 16) - at(mf, 16))).toBeLessThan(0.03);
    expect(at(mq, 16)).toBeLessThan(at(mq, 0) - 0.05);
    expect((await q.dir.readEvents()).find((e) => e.type === 'started')!.message).toMatch(/the base frozen, held int8/);
    const split = await r('int8').run({ out: join(dir, 'qlora-split'), stopAfter: 8 });
    const resumed = await resume(split.dir.path);
    await resumed.done;
    expect(untimed(await resumed.dir.readMetrics())).toEqual(untimed(mq));
  }, 300_000);

  it('DPO: the reference is the base with the adapters off (zero implicit rewards at step 1, and the same after a resume)', async () => {
    const r = dpo(
      {
        from: base,
        backend: 'wasm',
        seed: 4,
        data: { sources: [{ path: pairs }] },
        train: { steps: 4, batchSize: 4, lr: 2e-2, warmupSteps: 1, checkpointEvery: 2, lora },
        eval: { every: 0, batches: 1 },
      },
      { baseDir: dir },
    );
    const straight = await r.run({ out: join(dir, 'dpo') });
    expect(straight.summary!.status, straight.summary!.error).toBe('completed');
    const ms = await straight.dir.readMetrics();
    // B starts at zero: the policy is the base, so its rewards against the reference are exactly 0.
    expect(ms[0]!['rewards/chosen']).toBe(0);
    expect(ms[0]!['rewards/margins']).toBe(0);
    expect(ms.at(-1)!['rewards/margins'] as number).toBeGreaterThan(0);
    // A resume starts from trained adapters; the reference must still be the base, not them.
    const split = await r.run({ out: join(dir, 'dpo-split'), stopAfter: 2 });
    const resumed = await resume(split.dir.path);
    await resumed.done;
    expect(untimed(await resumed.dir.readMetrics())).toEqual(untimed(ms));
  }, 300_000);

  it('GRPO and online DPO: train the adapters with the base as the reference (KL 0 at the first step)', async () => {
    const sampling = { maxNewTokens: 4, stop: ['\n'], warmupSteps: 1, checkpointEvery: 0, lr: 1e-2, lora };
    const g = await grpo(
      {
        from: base,
        backend: 'wasm',
        seed: 2,
        data: { sources: [{ path: prompts }] },
        reward: { module: TALLY_REWARD, export: 'programReward' },
        train: { steps: 3, batchSize: 4, groupSize: 4, innerSteps: 1, beta: 0.04, ...sampling },
        eval: { every: 0, batches: 1 },
      },
      { baseDir: dir },
    ).run({ out: join(dir, 'grpo') });
    const o = await onlineDpo(
      {
        from: base,
        backend: 'wasm',
        seed: 5,
        data: { sources: [{ path: prompts }] },
        judge: { reward: { module: TALLY_REWARD, export: 'programReward' } },
        train: { steps: 3, batchSize: 4, samplesPerPrompt: 4, ...sampling },
        eval: { every: 0, batches: 1 },
      },
      { baseDir: dir },
    ).run({ out: join(dir, 'odpo') });
    for (const run of [g, o]) {
      expect(run.summary!.status, run.summary!.error).toBe('completed');
      const ms = await run.dir.readMetrics();
      expect(ms[0]!.kl).toBe(0);
      expect(ms.every((m) => typeof m.reward_mean === 'number')).toBe(true);
      expect(existsSync(join(run.dir.checkpointPath(3), 'adapter.safetensors'))).toBe(true);
    }
    // Once the adapters have moved, the policy parts from the base.
    expect((await g.dir.readMetrics()).some((m) => (m.kl as number) > 0)).toBe(true);
  }, 300_000);

  it('torch engine: LoRA SFT gives the tfjs per-step losses within 1e-4, and resumes to the bit', async () => {
    const r = sft(
      {
        from: base,
        seed: 6,
        data: { sources: [{ path: chats }] },
        train: { steps: 4, batchSize: 4, lr: 2e-2, warmupSteps: 1, checkpointEvery: 2, lora: { ...lora, dropout: 0 } },
        eval: { every: 0, batches: 1 },
      },
      { baseDir: dir },
    );
    const t = await r.run({ out: join(dir, 'torch-vs-tfjs'), engine: 'tfjs', backend: 'cpu' });
    const p = await r.run({ out: join(dir, 'torch'), engine: 'torch', device: 'cpu', dtype: 'fp32' });
    expect(p.summary!.status, p.summary!.error).toBe('completed');
    const [a, b] = [await t.dir.readMetrics(), await p.dir.readMetrics()];
    for (const [i, m] of a.entries())
      expect(Math.abs((m.loss as number) - (b[i]!.loss as number)) / (m.loss as number), `step ${m.step}`).toBeLessThan(
        1e-4,
      );
    const split = await r.run({
      out: join(dir, 'torch-split'),
      engine: 'torch',
      device: 'cpu',
      dtype: 'fp32',
      stopAfter: 2,
    });
    const resumed = await resume(split.dir.path);
    await resumed.done;
    expect(untimed(await resumed.dir.readMetrics())).toEqual(untimed(b));
  }, 300_000);

  it('a LoRA run as `from` stands for its base with the adapters merged in', async () => {
    const ref = await resolveBase(join(dir, 'sft'), dir);
    expect(ref.checkpoint).toMatch(/sft\/checkpoints\/16$/);
    const merged = (await loadBase(ref)).weights;
    const { model } = await loadModel(join(dir, 'sft'));
    const w = await model.weights();
    await model.dispose();
    for (const [k, v] of w) expect(Array.from(merged.get(k)!.data), k).toEqual(Array.from(v.data));
    const q = merged.get('model.layers.0.self_attn.q_proj.weight')!.data;
    const b = (await loadBase(await resolveBase(base, dir))).weights.get(
      'model.layers.0.self_attn.q_proj.weight',
    )!.data;
    expect(q.some((x, i) => x !== b[i])).toBe(true);
  });
});

describe('LoRA pre-training', () => {
  it('pretrain: adapters on the fresh model of the seed train, the checkpoint names the base "init", resume is bit-exact, generate loads it', async () => {
    const dir = await scratch('lathe-lora-pre-');
    const data = await tallySlice(dir, 300);
    const r = new Recipe(
      tinyRecipe(data, {
        train: {
          steps: 20,
          batchSize: 4,
          lr: 0.05,
          minLr: 0.005,
          warmupSteps: 2,
          checkpointEvery: 10,
          lora: { rank: 8, dropout: 0.1, targets: ['q_proj', 'v_proj', 'gate_proj', 'up_proj', 'down_proj'] as const },
        },
      }),
      { baseDir: dir },
    );
    const run = await r.run({ out: join(dir, 'pre') });
    expect(run.summary!.status, run.summary!.error).toBe('completed');
    const ms = await run.dir.readMetrics();
    // Adapters on a random model move its loss only a little (measured: 5.760 -> 5.66-5.71 over
    // steps 16-20); continued pre-training of a trained base is where LoRA pre-training pays.
    const tail = ms.slice(-5).reduce((a, m) => a + (m.loss as number), 0) / 5;
    expect(tail).toBeLessThan((ms[0]!.loss as number) - 0.04);
    const split = await r.run({ out: join(dir, 'pre-split'), stopAfter: 10 });
    const resumed = await resume(split.dir.path);
    await resumed.done;
    expect(untimed(await resumed.dir.readMetrics())).toEqual(untimed(ms));
    const state = JSON.parse(await readFile(join(run.dir.checkpointPath(20), 'state.json'), 'utf8')) as {
      lora: { base: string };
    };
    expect(state.lora.base).toBe('init');
    const { generate } = await import('../runs/index.js');
    expect(typeof (await generate(run.dir.path, 'let px = ', { maxTokens: 3 }))).toBe('string');
  }, 120_000);
});
