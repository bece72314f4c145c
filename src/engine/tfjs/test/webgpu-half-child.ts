// Child process for webgpu-half.test.ts, run on an adapter with shader-f16 (Mesa's lavapipe in CI):
// the f16 weight copy and the f16-weight product against float64 on the host, then 50 training steps
// of a small dense model with f16 storage and with fp32, from the same weights and batches.
// Prints one JSON line.
import { useBackend } from '../backend.js';
import { tf } from '../tf.js';
import { TfjsEngine } from '../engine.js';
import { dispatchCount, installWebGpu, takeWebGpuErrors } from '../webgpu.js';
import { halfCopy, halfCopyOf, halfMatMul, halfStorage } from '../webgpu-half.js';
import { initWeights } from '../../../model/weights.js';
import { seededFloats, smallGpuSpec } from '../../test/fixtures.js';
import type { ModelSpec } from '../../../model/spec.js';

const probe = await installWebGpu();
if (!probe.ok || !probe.f16) {
  console.log(
    JSON.stringify({ skipped: probe.ok ? `the adapter (${probe.adapter}) has no shader-f16` : probe.reason }),
  );
  process.exit(0);
}
await useBackend('webgpu', () => {});

/** IEEE binary16 to a number. */
function fromHalf(b: number): number {
  const e = (b >> 10) & 31;
  const f = b & 1023;
  const s = b & 0x8000 ? -1 : 1;
  if (e === 0) return s * f * 2 ** -24;
  if (e === 31) return f ? NaN : s * Infinity;
  return s * (1 + f / 1024) * 2 ** (e - 15);
}

async function halves(h: tf.Tensor, n: number): Promise<Float64Array> {
  const bits = new Uint16Array(((await h.data()) as Float32Array).buffer).subarray(0, n);
  return Float64Array.from(bits, fromHalf);
}

/** C = A B^T (bt 1, B [N, K]) or A B (bt 0, B [K, N]) in float64. */
function product(a: Float32Array, b: Float64Array, m: number, k: number, n: number, bt: boolean): Float64Array {
  const c = new Float64Array(m * n);
  for (let i = 0; i < m; i++)
    for (let j = 0; j < n; j++) {
      let s = 0;
      for (let q = 0; q < k; q++) s += a[i * k + q]! * b[bt ? j * k + q : q * n + j]!;
      c[i * n + j] = s;
    }
  return c;
}

function maxRel(got: Float32Array, want: Float64Array): number {
  const scale = want.reduce((a, b) => Math.max(a, Math.abs(b)), 0);
  return got.reduce((a, g, i) => Math.max(a, Math.abs(g - want[i]!) / scale), 0);
}

// Odd sizes: every edge of the 64x64 tiles and the 16-deep K steps is crossed.
const [M, K, N] = [37, 70, 45];
const w = tf.variable(tf.tensor(seededFloats(N * K, 3, 0.7), [N, K]));
const x = tf.tensor(seededFloats(M * K, 4), [M, K]) as tf.Tensor2D;
const dy = tf.tensor(seededFloats(M * N, 5), [M, N]) as tf.Tensor2D;
const wHost = (await w.data()) as Float32Array;
const wHalf = await halves(halfCopy(w), N * K);
// Round to nearest: within half an f16 ulp (2^-11 relative; normal numbers here).
const rounding = wHost.reduce((a, v, i) => Math.max(a, Math.abs(v - wHalf[i]!) / Math.abs(v) / 2 ** -11), 0);
const forward = maxRel(
  (await halfMatMul(x, halfCopy(w), N, 1).data()) as Float32Array,
  product((await x.data()) as Float32Array, wHalf, M, K, N, true),
);
const backward = maxRel(
  (await halfMatMul(dy, halfCopy(w), K, 0).data()) as Float32Array,
  product((await dy.data()) as Float32Array, wHalf, M, N, K, false),
);
// A weight assigned new values gets a new copy.
w.assign(tf.mul(w, 2));
const reassigned = maxRel(
  Float32Array.from(await halves(halfCopy(w), N * K)),
  Float64Array.from(wHalf, (v) => v * 2),
);

// 50 steps of the small dense model, f16 storage against fp32, from the same weights and batches.
const spec = smallGpuSpec({ kvHeads: 2 });
// Four batches of sequences with a learnable next token, taken in turn.
const batches = [0, 1, 2, 3].map((b) => {
  const ids = Int32Array.from({ length: 4 * 33 }, (_, i) => ((i % 33) * (7 + b) + Math.floor(i / 33) * 13) % 256);
  const rows = [0, 1, 2, 3].map((r) => ids.subarray(r * 33, r * 33 + 33));
  return {
    batch: 4,
    seq: 32,
    inputs: Int32Array.from(rows.flatMap((r) => [...r.subarray(0, 32)])),
    targets: Int32Array.from(rows.flatMap((r) => [...r.subarray(1)])),
  };
});

async function train(half: boolean, spec: ModelSpec, steps: number) {
  const e = await TfjsEngine.create({
    backend: 'webgpu',
    spec,
    weights: initWeights(spec, 11),
    optimizer: { beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.1, gradClip: 1 },
    halfStorage: half,
  });
  const active = halfStorage();
  const losses: number[] = [];
  let dispatches = 0;
  for (let step = 0; step < steps; step++) {
    const c0 = dispatchCount();
    const r = await e.forwardBackward(batches[step % 4]!, { name: 'cross_entropy' });
    await e.optimStep(3e-3);
    if (step === 1) dispatches = dispatchCount() - c0;
    losses.push(r.loss);
  }
  // The copies AdamW wrote in place still round the fp32 masters.
  let copyOff = 0;
  if (half) {
    const params = (e as unknown as { model: { params: Map<string, tf.Variable> } }).model.params;
    for (const p of params.values()) {
      const h = halfCopyOf(p);
      if (!h) continue;
      const master = (await p.data()) as Float32Array;
      const copy = await halves(h, p.size);
      master.forEach((v, i) => (copyOff = Math.max(copyOff, Math.abs(v - copy[i]!) / Math.max(Math.abs(v), 2 ** -14))));
    }
    copyOff /= 2 ** -11;
  }
  await e.dispose();
  return { active, losses, dispatches, copyOff };
}
const f16 = await train(true, spec, 50);
const fp32 = await train(false, spec, 50);
// MoE (8 experts, top 2): the experts' products read f16 copies too, on their routed rows.
const moeSpec = smallGpuSpec({ arch: 'moe', kvHeads: 2, experts: 8, topK: 2, ffnDim: 64 });
const moe = { f16: await train(true, moeSpec, 20), fp32: await train(false, moeSpec, 20) };

console.log(
  JSON.stringify({
    adapter: probe.adapter,
    rounding,
    forward,
    backward,
    reassigned,
    f16,
    fp32,
    moe,
    validation: takeWebGpuErrors(),
  }),
);
