// Child process for webgpu.test.ts, run where Dawn has an adapter (SwiftShader in CI): each of
// Lathe's WGSL kernels against the cpu backend's ops on the same inputs (values and gradients),
// and the dispatches of one training step of a small dense model with Lathe's kernels and with
// tfjs's own compositions (LATHE_FUSED_KERNELS=0's path), and greedy generation on both backends.
// Prints one JSON line.
import { useBackend } from '../backend.js';
import { tf } from '../tf.js';
import { setFusedKernels } from '../kernels.js';
import { attention, embed, rmsNorm, ropeTables, swiglu } from '../layers.js';
import { tokenNll } from '../losses.js';
import { TfjsEngine } from '../engine.js';
import { dispatchCount, installWebGpu, takeReadsBack, takeWebGpuErrors } from '../webgpu.js';
import { stepOn } from '../../../train/loop.js';
import { runGpuKernel } from '../webgpu-kernels.js';
import { gpuMatMul } from '../webgpu-matmul.js';
import { moeFfn } from '../moe.js';
import { moeNames } from '../../../model/spec.js';
import { initWeights } from '../../../model/weights.js';
import { generate } from '../../sample.js';
import type { ModelSpec } from '../../../model/spec.js';
import { seededFloats, smallGpuSpec } from '../../test/fixtures.js';

const probe = await installWebGpu();
if (!probe.ok) {
  console.log(JSON.stringify({ skipped: probe.reason }));
  process.exit(0);
}

/** The value and the gradients (of sum(value * probe)) of f at inputs, on one backend. */
async function run(
  backend: 'cpu' | 'webgpu',
  f: (xs: tf.Tensor[]) => tf.Tensor,
  inputs: { data: Float32Array | Int32Array; shape: number[]; grad?: boolean }[],
): Promise<Float32Array[]> {
  await useBackend(backend, () => {});
  const xs = inputs.map((i) =>
    i.data instanceof Int32Array ? tf.tensor(i.data, i.shape, 'int32') : tf.tensor(i.data, i.shape),
  );
  const diff = xs.filter((_, i) => inputs[i]!.grad !== false);
  const out = f(xs);
  const weight = tf.tensor(seededFloats(out.size, 99), out.shape);
  const grads = tf.grads((...ys: tf.Tensor[]) => {
    const all = xs.map((x) => (diff.includes(x) ? ys[diff.indexOf(x)]! : x));
    return tf.sum(tf.mul(f(all), weight));
  })(diff);
  const res = [out, ...grads];
  const values = await Promise.all(res.map(async (t) => (await t.data()) as Float32Array));
  tf.dispose([...xs, weight, ...res]);
  return values;
}

/** Largest |a - b| / (|b| + 1e-3) over every output. */
function maxRel(a: Float32Array[], b: Float32Array[]): number {
  let m = 0;
  a.forEach((x, k) => {
    const y = b[k]!;
    if (x.length !== y.length) m = Infinity;
    for (let i = 0; i < x.length; i++) m = Math.max(m, Math.abs(x[i]! - y[i]!) / (Math.abs(y[i]!) + 1e-3));
  });
  return m;
}

const errors: Record<string, number> = {};
async function compare(
  name: string,
  f: (xs: tf.Tensor[]) => tf.Tensor,
  inputs: { data: Float32Array | Int32Array; shape: number[]; grad?: boolean }[],
): Promise<void> {
  const want = await run('cpu', f, inputs);
  const got = await run('webgpu', f, inputs);
  errors[name] = maxRel(got, want);
}

const [n, d] = [48, 40];
await compare('rmsNorm', ([x, w]) => rmsNorm(x as tf.Tensor2D, w!, 1e-5), [
  { data: seededFloats(n * d, 1), shape: [n, d] },
  { data: seededFloats(d, 2), shape: [d] },
]);
const pw = (seed: number, o: number, i: number) => ({ data: seededFloats(o * i, seed, 0.3), shape: [o, i] });
await compare('swiglu', ([x, g, u, dn]) => swiglu(x as tf.Tensor2D, g!, u!, dn!), [
  { data: seededFloats(n * d, 3), shape: [n, d] },
  pw(4, 56, d),
  pw(5, 56, d),
  pw(6, d, 56),
]);
// Attention with RoPE and a grouped-query layout, from a fresh start and with a KV cache offset.
const [batch, seq, heads, kvHeads, headDim] = [2, 12, 4, 2, 8];
const dim = heads * headDim;
const rope = () => ropeTables(32, headDim, 10000);
for (const pos0 of [0, 5]) {
  await compare(
    `attention@${pos0}`,
    ([x, q, k, v, o]) => {
      const tables = rope();
      const cache = pos0
        ? {
            k: tf.tensor4d(seededFloats(batch * kvHeads * pos0 * headDim, 7), [batch, kvHeads, pos0, headDim]),
            v: tf.tensor4d(seededFloats(batch * kvHeads * pos0 * headDim, 8), [batch, kvHeads, pos0, headDim]),
          }
        : undefined;
      const y = attention(
        x as tf.Tensor2D,
        batch,
        seq,
        { q: q!, k: k!, v: v!, o: o! },
        { heads, kvHeads, headDim, normEps: 1e-5 },
        tables,
        pos0,
        cache,
      );
      return y;
    },
    [
      { data: seededFloats(batch * seq * dim, 9), shape: [batch * seq, dim] },
      pw(10, dim, dim),
      pw(11, kvHeads * headDim, dim),
      pw(12, kvHeads * headDim, dim),
      pw(13, dim, dim),
    ],
  );
}
const vocab = 70;
const targets = Int32Array.from({ length: n }, (_, i) => (i === 3 ? -1 : (i * 37) % vocab));
await compare('tokenNll', ([x, t]) => tokenNll(x as tf.Tensor2D, t as tf.Tensor1D), [
  { data: seededFloats(n * vocab, 14, 4), shape: [n, vocab] },
  { data: targets, shape: [n], grad: false },
]);

// The embedding lookup's gradient, with repeated ids.
await compare('embed', ([w]) => embed(w!, tf.tensor1d([3, 7, 3, 0, 69, 1, 7, 3], 'int32')), [
  { data: seededFloats(vocab * d, 16), shape: [vocab, d] },
]);

// An MoE layer (routed on the device on webgpu, on the host on cpu): 8 experts, top 2; in the
// skewed case experts 0, 6 and 7 get no token (their counts are 0).
const moeSpec = smallGpuSpec({ arch: 'moe', dim: d, ffnDim: 56, experts: 8, topK: 2 });
for (const skewed of [false, true]) {
  const names = moeNames(moeSpec, 0);
  const shapes: [string, number[]][] = [[names.router, [8, d]]];
  for (let e = 0; e < 8; e++) {
    const x = names.expert(e);
    shapes.push([x.gate, [56, d]], [x.up, [56, d]], [x.down, [d, 56]]);
  }
  const router = seededFloats(8 * d, 17, 0.3);
  if (skewed) router.fill(-0.3, 6 * d);
  await compare(
    skewed ? 'moe-skewed' : 'moe',
    ([x, ...ws]) => moeFfn(new Map(shapes.map(([k], i) => [k, ws[i] as tf.Variable])), moeSpec, 0, x as tf.Tensor2D).y,
    [
      { data: skewed ? seededFloats(n * d, 18).map(Math.abs) : seededFloats(n * d, 18), shape: [n, d] },
      { data: router, shape: [8, d] },
      // An expert no token reached is not in the cpu path's graph at all: no gradient to compare.
      ...shapes.slice(1).map(([, shape], i) => ({
        data: seededFloats(shape[0]! * shape[1]!, 19 + i, 0.3),
        shape,
        grad: !(skewed && [0, 6, 7].includes(Math.floor(i / 3))),
      })),
    ],
  );
}

// Lathe's tiled product in each layout, bounded by a row count on the device, against float64.
await useBackend('webgpu', () => {});
const matmul: Record<string, number> = {};
{
  const [M, K, N] = [70, 45, 37];
  const counts = tf.tensor1d([0, 29, 70], 'int32');
  for (const form of ['nn', 'nt', 'tn'] as const)
    for (const limit of [undefined, 'rows', 'depth'] as const) {
      const [at, bt] = [form[0] === 't', form[1] === 't'];
      const a = seededFloats(M * K, 21);
      const b = seededFloats(K * N, 22);
      const got = (await gpuMatMul(tf.tensor2d(a, at ? [K, M] : [M, K]), tf.tensor(b, bt ? [N, K] : [K, N]), {
        n: N,
        at,
        bt,
        ...(limit ? { limit, counts, expert: 1 } : {}),
      }).data()) as Float32Array;
      let err = 0;
      for (let i = 0; i < M; i++)
        for (let j = 0; j < N; j++) {
          let want = 0;
          if (!(limit === 'rows' && i >= 29))
            for (let q = 0; q < (limit === 'depth' ? 29 : K); q++)
              want += a[at ? q * M + i : i * K + q]! * b[bt ? j * K + q : q * N + j]!;
          err = Math.max(err, Math.abs(got[i * N + j]! - want) / 8);
        }
      matmul[`${form}${limit ? `-${limit}` : ''}`] = err;
    }
}

// The router's top-k mask against the host's choice (ties to the lower expert).
await useBackend('webgpu', () => {});
const probs = seededFloats(64 * 6, 15).map((v) => Math.round(Math.abs(v) * 8) / 8); // with ties
const mask = await runGpuKernel('LatheTopKMask', [tf.tensor2d(probs, [64, 6])], { k: 2 })[0]!.data();
let maskMismatches = 0;
for (let r = 0; r < 64; r++) {
  const row = Array.from(probs.subarray(r * 6, r * 6 + 6));
  const order = row.map((p, e) => [p, e] as const).sort((a, b) => b[0] - a[0] || a[1] - b[1]);
  const chosen = new Set([order[0]![1], order[1]![1]]);
  for (let e = 0; e < 6; e++) if ((mask[r * 6 + e] === 1) !== chosen.has(e)) maskMismatches++;
}

// AddN over more inputs than a shader stage may bind (the grad_norm fault's cause).
const parts = Array.from({ length: 21 }, (_, i) => tf.scalar(i + 1));
const addN = (await tf.addN(parts).data())[0];

// Dispatches of one training step (forwardBackward, then optimStep) of a small dense model.
const spec = smallGpuSpec();
const stepBatch = {
  batch: 2,
  seq: 32,
  inputs: Int32Array.from({ length: 64 }, (_, i) => (i * 31) % 256),
  targets: Int32Array.from({ length: 64 }, (_, i) => (i * 17 + 1) % 256),
};
/** Reads that came back while the step was still queuing kernels (the host waited inside the step). */
const waitsInside = (end: number) => takeReadsBack().filter((at) => at < end).length;

async function stepDispatches(
  fused: boolean,
): Promise<{ dispatches: number; loss: number; gradNorm: number; waits: { awaited: number; queued: number } }> {
  const prev = setFusedKernels(fused);
  const e = await TfjsEngine.create({
    backend: 'webgpu',
    spec,
    weights: initWeights(spec, 5),
    optimizer: { beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.1, gradClip: 1 },
  });
  const step = async () => {
    const r = await e.forwardBackward(stepBatch, { name: 'cross_entropy' });
    return { loss: r.loss, gradNorm: (await e.optimStep(1e-3)).gradNorm };
  };
  await step(); // first step: compiles the pipelines
  const c0 = dispatchCount();
  takeReadsBack();
  const r = await step();
  const dispatches = dispatchCount() - c0;
  const awaited = waitsInside(dispatchCount());
  // The loop's way (stepOn): optimStep queued before the reports are read.
  const ctx = { engine: e, event: () => {} };
  await stepOn(ctx, 3, 1e-3, [() => e.forwardBackward(stepBatch, { name: 'cross_entropy' })]);
  const queued = waitsInside(dispatchCount());
  await e.dispose();
  setFusedKernels(prev);
  return { dispatches, ...r, waits: { awaited, queued } };
}
const lathe = await stepDispatches(true);
const plain = await stepDispatches(false);

// A DPO step through stepOn: reads back while it still queued kernels, with the reference's
// log-probs read first (the old way) and computed by the engine ('engine').
async function dpoWaits(own: boolean): Promise<number> {
  const e = await TfjsEngine.create({
    backend: 'webgpu',
    spec,
    weights: initWeights(spec, 5),
    optimizer: { beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.1, gradClip: 1 },
  });
  await e.setReference(initWeights(spec, 6));
  const pairs = { ...stepBatch, weights: new Float32Array(64).fill(1) };
  const ctx = { engine: e, event: () => {} };
  const step = async (n: number) => {
    const reference = own ? ('engine' as const) : await e.logprobs(pairs, { sum: true, reference: true });
    const loss = { name: 'dpo' as const, pairs: 1, reference, beta: 0.1, labelSmoothing: 0 };
    await stepOn(ctx, n, 1e-3, [() => e.forwardBackward(pairs, loss)]);
  };
  await step(1); // compiles the pipelines
  takeReadsBack();
  await step(2);
  const waits = waitsInside(dispatchCount());
  await e.dispose();
  return waits;
}
const dpo = { given: await dpoWaits(false), engine: await dpoWaits(true) };

// Greedy generation (the KV-cache decode path) from the same random weights on cpu and webgpu,
// dense and MoE; a larger init scale than training's makes the greedy choice vary from token to token.
async function greedy(backend: 'cpu' | 'webgpu', s: ModelSpec): Promise<number[]> {
  await useBackend(backend, () => {});
  const e = await TfjsEngine.create({ backend, spec: s, weights: initWeights(s, 9) });
  const ids = await generate(e, [1, 17, 42, 99, 5], { temperature: 0, maxTokens: 8 });
  await e.dispose();
  return ids;
}
const generated: Record<string, { cpu: number[]; webgpu: number[] }> = {};
for (const arch of ['dense', 'moe'] as const) {
  const s: ModelSpec = { ...spec, arch, initStd: 0.5, layers: 1 };
  generated[arch] = { cpu: await greedy('cpu', s), webgpu: await greedy('webgpu', s) };
}

console.log(
  JSON.stringify({
    adapter: probe.adapter,
    f16: probe.f16,
    errors,
    matmul,
    maskMismatches,
    addN,
    lathe,
    plain,
    dpo,
    generated,
    validation: takeWebGpuErrors(),
  }),
);
process.exit(0);
