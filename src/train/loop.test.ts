import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { scratch } from '../../test/helpers.js';
import { POST } from '../../test/post-helpers.js';
import type { Engine } from '../engine/engine.js';
import type { EngineOptions } from '../engine/index.js';
import { TfjsEngine } from '../engine/tfjs/engine.js';
import type { tf } from '../engine/tfjs/tf.js';
import { Recipe } from '../runs/recipe.js';
import { RunDir, type Metric, type RunEvent } from '../runs/rundir.js';
import { executeStage, type Sink } from './execute.js';

/**
 * A tfjs engine whose gradients turn NaN on chosen optimizer steps (counted from 1), as an overflow
 * in the backward pass would: the loss of that step is finite, its gradient norm is not.
 */
class NonFiniteGradients extends TfjsEngine {
  static poisoned = new Set<number>();
  private steps = 0;

  protected override accumulate(grads: tf.NamedTensorMap): void {
    if (NonFiniteGradients.poisoned.has(this.steps + 1)) {
      const [k, g] = Object.entries(grads)[0]!;
      grads[k] = g.mul(NaN);
      g.dispose();
    }
    super.accumulate(grads);
  }

  override async optimStep(lr: number) {
    this.steps++;
    return super.optimStep(lr);
  }
}

/** Runs a recipe's stage through executeStage, in a fresh run directory, on a chosen engine. */
async function execute(r: Recipe, out: string, createEngine?: (o: EngineOptions) => Promise<Engine>) {
  const lock = await r.lock();
  const rd = await RunDir.create(lock, out);
  const sink: Sink = { emit: (m) => rd.appendMetric(m), event: (e) => rd.appendEvent(e), replay: () => {} };
  const summary = await executeStage(rd, lock, 'test', sink, {}, { resume: false, createEngine });
  return { rd, summary, metrics: await rd.readMetrics(), events: await rd.readEvents() };
}

const tiny = { dim: 32, layers: 1, heads: 2, context: 128 };
const short = { steps: 3, warmupSteps: 0, lr: 1e-3, checkpointEvery: 1 };

/** One small recipe per stage, each from a fresh model on cpu (no base to train first). */
function stageRecipes(dir: string): Record<string, Recipe> {
  const mk = (input: Record<string, unknown>) =>
    new Recipe({ seed: 3, backend: 'cpu', tokenizer: { vocabSize: 300 }, model: tiny, ...input }, { baseDir: dir });
  const prompts = { sources: [{ path: join(POST, 'prompts.jsonl') }], valFraction: 0, onError: 'skip' };
  const online = { ...short, batchSize: 2, maxNewTokens: 4, stop: ['\n'] };
  // A judge that ranks any two different texts, so every online-DPO step has pairs to train on.
  const judge = { module: join(dir, 'text-hash.mjs'), export: 'score' };
  return {
    pretrain: mk({
      stage: 'pretrain',
      data: { sources: [{ path: join(POST, 'completions.jsonl'), field: 'completion' }], valFraction: 0 },
      train: { ...short, batchSize: 2, gradAccum: 2 },
      eval: { every: 0, batches: 1 },
    }),
    sft: mk({
      stage: 'sft',
      data: { sources: [{ path: join(POST, 'sft.jsonl') }] },
      train: { ...short, batchSize: 2 },
    }),
    dpo: mk({
      stage: 'dpo',
      data: { sources: [{ path: join(POST, 'pairs.jsonl') }] },
      train: { ...short, batchSize: 2 },
    }),
    'online-dpo': mk({
      stage: 'online-dpo',
      data: prompts,
      judge: { reward: judge },
      train: { ...online, samplesPerPrompt: 2 },
    }),
    grpo: mk({
      stage: 'grpo',
      data: prompts,
      reward: judge,
      train: { ...online, groupSize: 2, innerSteps: 1, beta: 0.04 },
    }),
  };
}

describe('the step loop', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await scratch();
    await writeFile(
      join(dir, 'text-hash.mjs'),
      'export function score(c) {\n  let h = 7;\n  for (const ch of c) h = (h * 31 + ch.charCodeAt(0)) % 1000003;\n  return h;\n}\n',
    );
  });

  it('a non-finite gradient skips the optimizer step in every stage: weights and moments unchanged, an event, the run goes on', async () => {
    NonFiniteGradients.poisoned = new Set([2]);
    for (const [stage, r] of Object.entries(stageRecipes(dir))) {
      const { rd, summary, metrics, events } = await execute(r, join(dir, `skip-${stage}`), (o) =>
        NonFiniteGradients.create({ ...o, backend: o.backend }),
      );
      expect(summary.status, `${stage}: ${summary.error}`).toBe('completed');
      expect(
        metrics.map((m) => m.step).filter((s) => s > 0),
        stage,
      ).toEqual([1, 2, 3]);
      const at = (s: number) => metrics.find((m) => m.step === s)!;
      // JSON has no NaN: the norm reads back as null; the loss of that step is finite.
      expect(at(2).grad_norm, stage).toBeNull();
      expect(Number.isFinite(at(1).grad_norm as number), stage).toBe(true);
      expect(Number.isFinite(at(3).grad_norm as number), stage).toBe(true);
      if (at(2).loss !== undefined) expect(Number.isFinite(at(2).loss), stage).toBe(true);
      const skipped = events.filter((e: RunEvent) => e.type === 'skipped');
      expect(
        skipped.map((e) => e.step),
        stage,
      ).toEqual([2]);
      expect(skipped[0]!.message).toMatch(/gradient norm is NaN at step 2: the optimizer step was skipped/);
      const files = async (s: number, f: string) => readFile(join(rd.checkpointPath(s), f));
      // Step 2 changed nothing; steps 1 and 3 did.
      for (const f of ['model.safetensors', 'optimizer.safetensors']) {
        expect((await files(2, f)).equals(await files(1, f)), `${stage} ${f} 1 = 2`).toBe(true);
        expect((await files(3, f)).equals(await files(2, f)), `${stage} ${f} 2 ≠ 3`).toBe(false);
      }
      const state = (s: number) => files(s, 'state.json').then((b) => JSON.parse(b.toString()).optimizerStep);
      expect([await state(1), await state(2), await state(3)], stage).toEqual([1, 1, 2]);
    }
  }, 300_000);

  it('MoE SFT with gradAccum 4: experts that no token chose in the first micro-batch still train, and only then', async () => {
    const r = new Recipe(
      {
        stage: 'sft',
        seed: 2,
        backend: 'cpu',
        tokenizer: { vocabSize: 300 },
        model: { arch: 'moe', dim: 16, layers: 1, heads: 2, context: 96, experts: 64, topK: 1 },
        data: { sources: [{ path: join(POST, 'sft.jsonl') }] },
        train: { steps: 2, batchSize: 1, gradAccum: 4, warmupSteps: 0, lr: 1e-3, packing: false, checkpointEvery: 1 },
        eval: { every: 0, batches: 1 },
      },
      { baseDir: dir },
    );
    // Records, by HF name, which expert weights each micro-batch's gradients reach.
    const reached: Set<string>[] = [];
    class Recording extends TfjsEngine {
      protected override accumulate(grads: tf.NamedTensorMap): void {
        const names = new Map([...this.languageModel.params].map(([name, v]) => [v.name, name]));
        reached.push(
          new Set(
            Object.keys(grads)
              .map((k) => names.get(k)!)
              .filter((n) => /experts/.test(n)),
          ),
        );
        super.accumulate(grads);
      }
    }
    const { rd, summary, metrics } = await execute(r, join(dir, 'moe-sft'), (o) => Recording.create(o));
    expect(summary.status, summary.error).toBe('completed');
    expect(metrics.map((m: Metric) => m.step)).toEqual([1, 2]);
    for (const m of metrics) expect(Number.isFinite(m.loss) && Number.isFinite(m.grad_norm)).toBe(true);
    expect(reached).toHaveLength(8);
    const step1 = reached.slice(0, 4);
    // Some expert gets no token in the first micro-batch but does in a later one of the same step.
    const late = [...step1[1]!, ...step1[2]!, ...step1[3]!].filter((k) => !step1[0]!.has(k));
    expect(late.length).toBeGreaterThan(0);
    // After step 1, experts first reached after the first micro-batch trained; unreached ones did not move.
    const { readSafetensors } = await import('../model/safetensors.js');
    const w0 = await initialWeights(rd.path, r);
    const w1 = (await readSafetensors(join(rd.checkpointPath(1), 'model.safetensors'))).tensors;
    const moved = (name: string) => !Buffer.from(w1.get(name)!.data).equals(Buffer.from(w0.get(name)!));
    expect(late.some(moved)).toBe(true);
    const any = new Set(step1.flatMap((s) => [...s]));
    for (const name of [...w1.keys()].filter((n) => /experts/.test(n) && !any.has(n)))
      expect(moved(name), name).toBe(false);
  }, 120_000);
});

describe('stepOn', () => {
  it('on an engine that queues steps: a micro-batch that fails fails the step with its own error and updates nothing; the next step trains', async () => {
    const { initWeights } = await import('../model/weights.js');
    const { modelSpec } = await import('../model/spec.js');
    const { ModelSchema } = await import('../recipe/schema.js');
    const { stepOn } = await import('./loop.js');
    const spec = modelSpec(ModelSchema.parse({ dim: 16, layers: 1, heads: 2, context: 8 }), 32);
    let failOn = 2; // the call (counted from 1) whose backward pass throws
    let calls = 0;
    class Failing extends TfjsEngine {
      protected override accumulate(grads: tf.NamedTensorMap): void {
        if (++calls === failOn) throw new Error('backward failed here');
        super.accumulate(grads);
      }
    }
    const e = await Failing.create({
      backend: 'cpu',
      spec,
      weights: initWeights(spec, 1),
      optimizer: { beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0, gradClip: 1 },
    });
    expect(e.queuesSteps).toBe(true);
    const batch = {
      batch: 1,
      seq: 8,
      inputs: Int32Array.from([1, 2, 3, 4, 5, 6, 7, 8]),
      targets: new Int32Array(8).fill(3),
    };
    const micro = () => e.forwardBackward(batch, { name: 'cross_entropy' });
    const events: RunEvent[] = [];
    const ctx = { engine: e, event: (ev: RunEvent) => events.push(ev) };
    const before = await e.weights();
    await expect(stepOn(ctx, 1, 0.1, [micro, micro, micro])).rejects.toThrow(/^backward failed here$/);
    expect(e.optimizerSteps).toBe(0);
    for (const [name, w] of await e.weights())
      expect(Array.from(w.data), name).toEqual(Array.from(before.get(name)!.data));
    failOn = 0;
    const { reports, gradNorm } = await stepOn(ctx, 1, 0.1, [micro, micro]);
    expect(reports).toHaveLength(2);
    expect(reports[0]!.loss).toBeCloseTo(Math.log(32), 1);
    expect(gradNorm).toBeGreaterThan(0);
    expect(e.optimizerSteps).toBe(1);
    const moved = [...(await e.weights())].filter(
      ([n, w]) => !Buffer.from(w.data.buffer).equals(Buffer.from(before.get(n)!.data.buffer)),
    );
    expect(moved.length).toBeGreaterThan(0);
    expect(events).toEqual([]);
    await e.dispose();
  });
});

/** The initial weights of a run's recipe (the fresh model under its seed), as raw bytes by name. */
async function initialWeights(runDir: string, r: Recipe): Promise<Map<string, Uint8Array>> {
  const { initWeights } = await import('../model/weights.js');
  const { modelSpec } = await import('../model/spec.js');
  const { Tokenizer } = await import('../tokenizer/index.js');
  const tok = await Tokenizer.load(join(runDir, 'data', 'tokenizer.json'));
  const w = initWeights(modelSpec(r.config.model, tok.vocabSize), r.config.seed);
  return new Map([...w].map(([k, v]) => [k, new Uint8Array(v.data.buffer, v.data.byteOffset, v.data.byteLength)]));
}
