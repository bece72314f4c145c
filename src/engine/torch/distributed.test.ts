// One run over several ranks (torch.distributed, gloo on this CPU, fp32): 2-rank DDP against one
// process at the same global batch, FSDP against DDP, and the sequence losses (DPO, policy gradient)
// split over ranks, from the same weights and batches.
import { afterAll, describe, expect, it } from 'vitest';
import { initWeights } from '../../model/weights.js';
import { modelSpec } from '../../model/spec.js';
import { ModelSchema } from '../../recipe/schema.js';
import { Rng } from '../../random.js';
import type { EngineBatch, LossSpec, OptimizerConfig } from '../engine.js';
import type { TorchLaunch } from './launch.js';
import { TorchEngine } from './engine.js';

const OPT: OptimizerConfig = { beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.1, gradClip: 1.0 };
const rel = (a: number, b: number) => Math.abs(a - b) / Math.max(Math.abs(a), Math.abs(b), 1e-12);
const launch = (parallel: 'ddp' | 'fsdp', perNode = 2): TorchLaunch => ({
  perNode,
  nodes: 1,
  parallel,
  launcher: 'local',
  timeoutMs: 120_000,
});

const engines: TorchEngine[] = [];
afterAll(async () => {
  await Promise.all(engines.map((e) => e.dispose()));
});

function batches(vocab: number, n: number, b: number, t: number, masked: boolean): EngineBatch[] {
  const rng = new Rng(11);
  return Array.from({ length: n }, () => {
    const inputs = Int32Array.from({ length: b * t }, () => rng.int(vocab));
    // A rule to learn (the next id), so the loss falls.
    const targets = inputs.map((x) => (x + 1) % vocab);
    // SFT-like masks: a different number of counted tokens in every row, so shards differ.
    const weights = masked ? Float32Array.from({ length: b * t }, (_, i) => (i % t >= (i / t) % t ? 1 : 0)) : undefined;
    return { inputs, targets, weights, batch: b, seq: t };
  });
}

/** Trains `steps` steps of two micro-batches each; per-step losses and gradient norms. */
async function train(
  arch: 'dense' | 'moe',
  l: TorchLaunch | undefined,
  data: EngineBatch[],
  loss: LossSpec = { name: 'cross_entropy' },
) {
  const model = ModelSchema.parse({
    dim: 32,
    layers: 2,
    heads: 4,
    kvHeads: 2,
    context: 16,
    ...(arch === 'moe' ? { arch: 'moe', experts: 4, topK: 2 } : {}),
  });
  const spec = modelSpec(model, 96);
  const e = await TorchEngine.create({
    device: 'cpu',
    dtype: 'fp32',
    spec,
    weights: initWeights(spec, 5),
    optimizer: OPT,
    threads: 1,
    launch: l,
  });
  engines.push(e);
  const losses: number[] = [];
  const norms: number[] = [];
  for (let s = 0; s < data.length / 2; s++) {
    const reports = await Promise.all([0, 1].map((m) => e.forwardBackward(data[2 * s + m]!, loss)));
    losses.push((reports[0]!.loss + reports[1]!.loss) / 2);
    const r = await e.optimStep(3e-3);
    norms.push(r.gradNorm);
    if (l) expect(r.ranks?.map((x) => x.rank)).toEqual([0, 1]);
  }
  return { losses, norms, engine: e };
}

const worst = (a: number[], b: number[]) => Math.max(...a.map((x, i) => rel(x, b[i]!)));

describe('torch.distributed (2 ranks, gloo)', () => {
  it('DDP matches one process and FSDP matches DDP: per-step loss within 1e-5 relative over 20 steps', async () => {
    const data = batches(96, 40, 4, 16, false);
    const one = await train('dense', undefined, data);
    const ddp = await train('dense', launch('ddp'), data);
    const fsdp = await train('dense', launch('fsdp'), data);
    expect(ddp.engine.ranks.map((r) => r.rank)).toEqual([0, 1]);
    const [d1, d2, n1] = [worst(one.losses, ddp.losses), worst(ddp.losses, fsdp.losses), worst(one.norms, ddp.norms)];
    console.log(
      `[distributed] dense, 20 steps: DDP vs 1 process ${d1.toExponential(2)} (grad norm ${n1.toExponential(2)}), FSDP vs DDP ${d2.toExponential(2)}`,
    );
    expect(one.losses[19]!).toBeLessThan(one.losses[0]! - 0.05); // it trains
    expect(d1).toBeLessThanOrEqual(1e-5);
    expect(d2).toBeLessThanOrEqual(1e-5);
    expect(worst(ddp.norms, fsdp.norms)).toBeLessThanOrEqual(1e-5);
    // The weights agree too, gathered whole from the shards.
    const [w1, w2] = [await one.engine.weights(), await fsdp.engine.weights()];
    let maxDiff = 0;
    for (const [k, t] of w1) {
      const u = w2.get(k)!.data;
      for (let i = 0; i < t.data.length; i++) maxDiff = Math.max(maxDiff, Math.abs(t.data[i]! - u[i]!));
    }
    expect(maxDiff).toBeLessThan(1e-5);
  }, 300_000);

  it('masked batches (uneven counts per shard) and MoE keep the one-process loss', async () => {
    const data = batches(96, 12, 4, 16, true);
    const one = await train('dense', undefined, data);
    const ddp = await train('dense', launch('ddp'), data);
    expect(worst(one.losses, ddp.losses)).toBeLessThanOrEqual(1e-5);
    // MoE: the cross-entropy is split exactly; the router's balance terms are per rank (as per
    // micro-batch), so the first step's loss is the same and later ones stay close.
    const moeData = batches(96, 12, 4, 16, false);
    const m1 = await train('moe', undefined, moeData);
    const m2 = await train('moe', launch('fsdp'), moeData);
    expect(rel(m1.losses[0]!, m2.losses[0]!)).toBeLessThanOrEqual(1e-5);
    expect(worst(m1.losses, m2.losses)).toBeLessThanOrEqual(1e-3);
  }, 300_000);
});
