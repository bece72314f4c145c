// The torch engine against the tfjs engine, on the CPU in fp32, from the same initial weights and
// the same batches: every stage's per-step loss, cross-loaded checkpoints, and an HF export.
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { scratch, tallySlice } from '../../../test/helpers.js';
import { miniBase, POST, TALLY_REWARD } from '../../../test/post-helpers.js';
import { maxAbsDiff, runHf, type HfCheck } from '../../export/test/hf-python.js';
import { exportHf } from '../../export/hf.js';
import { loadModel } from '../../runs/index.js';
import { Recipe } from '../../runs/recipe.js';
import type { Metric } from '../../runs/rundir.js';
import { readTensorFiles } from '../../runs/checkpoint.js';
import { initWeights } from '../../model/weights.js';
import { modelSpec } from '../../model/spec.js';
import { ModelSchema } from '../../recipe/schema.js';
import type { Engine, EngineBatch, LossSpec } from '../engine.js';
import { TfjsEngine } from '../tfjs/engine.js';
import { TorchEngine } from './engine.js';
import { Rng } from '../../random.js';
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';

const REL = 1e-4;
let dir: string;
beforeAll(async () => {
  dir = await scratch('lathe-parity-');
});

/** Relative difference of two numbers. */
const rel = (a: number, b: number) => Math.abs(a - b) / Math.max(Math.abs(a), Math.abs(b), 1e-12);

/** The same recipe trained on both engines; returns both runs' metrics. */
async function both(input: Record<string, unknown>, name: string): Promise<{ tfjs: Metric[]; torch: Metric[] }> {
  const r = new Recipe(input, { baseDir: dir });
  const a = await r.run({ out: join(dir, `${name}-tfjs`), engine: 'tfjs', backend: 'cpu' });
  const b = await r.run({ out: join(dir, `${name}-torch`), engine: 'torch', device: 'cpu', dtype: 'fp32' });
  expect(a.summary!.status, a.summary!.error).toBe('completed');
  expect(b.summary!.status, b.summary!.error).toBe('completed');
  expect(b.lock.engine).toMatchObject({ kind: 'torch', device: 'cpu', dtype: 'fp32' });
  return { tfjs: await a.dir.readMetrics(), torch: await b.dir.readMetrics() };
}

/** Asserts per-step `key` within REL (relative, or `abs` absolute), and returns the largest difference. */
function agree(m: { tfjs: Metric[]; torch: Metric[] }, key: string, steps: number, abs = false): number {
  const at = (ms: Metric[]) => ms.filter((x) => x.step > 0 && typeof x[key] === 'number');
  const [a, b] = [at(m.tfjs), at(m.torch)];
  expect(a.map((x) => x.step)).toEqual(b.map((x) => x.step));
  expect(a.length).toBe(steps);
  let worst = 0;
  a.forEach((x, i) => {
    const [p, q] = [x[key] as number, b[i]![key] as number];
    const d = abs ? Math.abs(p - q) : rel(p, q);
    worst = Math.max(worst, d);
    expect(d, `${key} at step ${x.step}: ${x[key]} vs ${b[i]![key]}`).toBeLessThanOrEqual(REL);
  });
  return worst;
}

const tiny = { dim: 32, layers: 2, heads: 4, kvHeads: 2, context: 64 };
const steps30 = { steps: 30, warmupSteps: 3, checkpointEvery: 0 };

describe('torch engine parity with tfjs (cpu, fp32, same weights and batches)', () => {
  it('pretrain dense and MoE: per-step loss within 1e-4 relative over 30 steps', async () => {
    const data = await tallySlice(dir, 600);
    const base = {
      stage: 'pretrain',
      seed: 7,
      data: { sources: [{ path: data }], valFraction: 0.05 },
      tokenizer: { vocabSize: 320 },
      train: { ...steps30, batchSize: 4, gradAccum: 2, lr: 0.01, minLr: 0.001 },
      eval: { every: 10, batches: 2 },
    };
    const dense = await both({ ...base, model: tiny }, 'pre-dense');
    // MoE routing is discrete: a token whose second and third experts tie within float error can
    // route differently on the two engines, and the runs then part. Router logits spread wider
    // (initStd 0.1) and fewer tokens a step make such a near-tie rare; the test checks routing
    // agreed at every step (the routed fractions, to the bit) before it compares losses.
    const moe = await both(
      {
        ...base,
        train: { ...base.train, batchSize: 2, lr: 3e-3, minLr: 3e-4 },
        model: { ...tiny, arch: 'moe', experts: 4, topK: 2, initStd: 0.1 },
      },
      'pre-moe',
    );
    expect(moe.torch.map((m) => m.expert_util)).toEqual(moe.tfjs.map((m) => m.expert_util));
    const worst = [
      agree(dense, 'loss', 30),
      agree(dense, 'eval_loss', 3),
      agree(moe, 'loss', 30),
      agree(moe, 'aux_loss', 30),
    ];
    console.log(
      `[parity] pretrain worst relative loss difference: dense ${worst[0]!.toExponential(2)}, MoE ${worst[2]!.toExponential(2)}`,
    );
  }, 300_000);

  it('SFT and DPO: per-step loss within 1e-4 relative over 30 steps', async () => {
    const post = { seed: 5, tokenizer: { vocabSize: 400 }, model: { ...tiny, context: 128 } };
    const sft = await both(
      {
        ...post,
        stage: 'sft',
        data: { sources: [{ path: join(POST, 'sft.jsonl') }] },
        train: { ...steps30, batchSize: 4, lr: 3e-3 },
      },
      'sft',
    );
    const dpo = await both(
      {
        ...post,
        stage: 'dpo',
        data: { sources: [{ path: join(POST, 'pairs.jsonl') }] },
        train: { ...steps30, batchSize: 2, lr: 3e-3 },
      },
      'dpo',
    );
    agree(sft, 'token_accuracy', 30);
    const worst = [agree(sft, 'loss', 30), agree(dpo, 'loss', 30), agree(dpo, 'rewards/margins', 30)];
    console.log(`[parity] SFT ${worst[0]!.toExponential(2)}, DPO ${worst[1]!.toExponential(2)}`);
  }, 300_000);

  it('GRPO and online DPO: the same rollouts, identical rewards, losses within 1e-4', async () => {
    const { base, prompts } = await miniBase(dir, { backend: 'cpu' });
    const online = {
      steps: 6,
      batchSize: 2,
      lr: 1e-3,
      warmupSteps: 0,
      maxNewTokens: 6,
      checkpointEvery: 0,
      stop: ['\n'],
    };
    const g = await both(
      {
        stage: 'grpo',
        seed: 3,
        from: base,
        data: { sources: [{ path: prompts }], valFraction: 0 },
        reward: { module: TALLY_REWARD, export: 'programReward' },
        train: { ...online, groupSize: 4, innerSteps: 2, beta: 0.04 },
      },
      'grpo',
    );
    const o = await both(
      {
        stage: 'online-dpo',
        seed: 3,
        from: base,
        data: { sources: [{ path: prompts }], valFraction: 0 },
        judge: { reward: { module: TALLY_REWARD, export: 'programReward' } },
        train: { ...online, samplesPerPrompt: 4 },
      },
      'online-dpo',
    );
    for (const m of [g, o]) {
      // Same sampled completions: the same rewards, to the bit, and the same lengths.
      expect(m.torch.map((x) => x.reward_mean)).toEqual(m.tfjs.map((x) => x.reward_mean));
      expect(m.torch.map((x) => x.completion_length)).toEqual(m.tfjs.map((x) => x.completion_length));
    }
    expect(g.tfjs.some((x) => x.reward_std !== 0)).toBe(true);
    // GRPO's loss sits near 0 (advantages average out): compared absolutely, as the issue states it.
    agree(g, 'loss', 6, true);
    agree(g, 'kl', 6, true);
    const trained = o.tfjs.filter((x) => typeof x.loss === 'number').length;
    expect(trained).toBeGreaterThan(0);
    agree(o, 'loss', trained, true);
  }, 300_000);
});

/** Fixed random batches for the engine-level checks. */
function batches(n: number, vocab: number, b: number, t: number, seed: number): EngineBatch[] {
  const rng = new Rng(seed);
  return Array.from({ length: n }, () => {
    const inputs = Int32Array.from({ length: b * t }, () => rng.int(vocab));
    const targets = Int32Array.from({ length: b * t }, () => rng.int(vocab));
    return { inputs, targets, batch: b, seq: t };
  });
}

async function trainSteps(e: Engine, bs: EngineBatch[], loss: LossSpec, lr = 0.01): Promise<number[]> {
  const out: number[] = [];
  for (const b of bs) {
    out.push((await e.forwardBackward(b, loss)).loss);
    await e.optimStep(lr);
  }
  return out;
}

describe('checkpoints cross between engines', () => {
  it('a checkpoint written by tfjs continues on torch, and the reverse, matching the engine that wrote it', async () => {
    const spec = modelSpec(ModelSchema.parse({ ...tiny, arch: 'moe', experts: 4, topK: 2 }), 300);
    const opt = { beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.1, gradClip: 1 };
    const bs = batches(10, 300, 2, 16, 11);
    const ce: LossSpec = { name: 'cross_entropy' };
    for (const [first, second] of [
      ['tfjs', 'torch'],
      ['torch', 'tfjs'],
    ] as const) {
      const make = async (
        kind: string,
        weights = initWeights(spec, 3),
        state?: Parameters<typeof TfjsEngine.create>[0]['optimizer'],
      ) =>
        kind === 'tfjs'
          ? TfjsEngine.create({ backend: 'cpu', spec, weights, optimizer: state ?? opt })
          : TorchEngine.create({ device: 'cpu', dtype: 'fp32', spec, weights, optimizer: state ?? opt });
      const a = await make(first);
      await trainSteps(a, bs.slice(0, 5), ce);
      const ck = await mkdtemp(join(tmpdir(), 'lathe-cross-'));
      await a.saveTensors(ck);
      const same = await trainSteps(a, bs.slice(5), ce);
      await a.dispose();
      // The written files, read back as any checkpoint is, into the other engine.
      const { weights, moments } = await readTensorFiles(ck);
      const b = await make(second, weights, { ...opt, state: { ...moments!, step: 5 } });
      const other = await trainSteps(b, bs.slice(5), ce);
      await b.dispose();
      other.forEach((l, i) => expect(rel(l, same[i]!), `${first} → ${second}, step ${6 + i}`).toBeLessThanOrEqual(REL));
    }
  }, 120_000);

  it('a torch run exported to HF loads in transformers with the same logits (1e-4)', async () => {
    const data = await tallySlice(dir, 300);
    const r = new Recipe(
      {
        stage: 'pretrain',
        seed: 2,
        data: { sources: [{ path: data }], valFraction: 0.05 },
        tokenizer: { vocabSize: 320 },
        model: { ...tiny, tieEmbeddings: false },
        train: { steps: 8, batchSize: 4, lr: 0.01, warmupSteps: 1, checkpointEvery: 0 },
        eval: { every: 0, batches: 1 },
      },
      { baseDir: dir },
    );
    const run = await r.run({ out: join(dir, 'hf-torch'), engine: 'torch' });
    const out = join(dir, 'hf-torch-export');
    await exportHf(run.dir.path, out);
    const { model, tokenizer } = await loadModel(run.dir.path);
    expect(model.kind).toBe('torch');
    const ids = [tokenizer.special.bos, ...tokenizer.encode('let px = 10\nemit px')];
    const flat = await model.logits(ids);
    await model.dispose();
    const v = tokenizer.vocabSize;
    const ours = Array.from({ length: ids.length }, (_, i) => Array.from(flat.subarray(i * v, (i + 1) * v)));
    const [hf] = runHf([{ op: 'check', dir: out, prompt: ids, max_new_tokens: 1, tokenizer: false }]) as HfCheck[];
    const diff = maxAbsDiff(ours, hf!.logits);
    console.log(`[parity] torch run → HF export: max |logit diff| vs transformers = ${diff.toExponential(3)}`);
    expect(diff).toBeLessThanOrEqual(1e-4);
  }, 120_000);
});
