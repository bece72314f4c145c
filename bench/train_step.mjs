#!/usr/bin/env node
// One benchmark child: the training step of src/train/pretrain.ts on the tfjs engine (forwardBackward
// of the cross-entropy per micro-batch, then optimStep: global-norm clipping and AdamW) on a benchmark
// model, timed per step. Prints one JSON line.
//
//   node bench/train_step.mjs export --model small-dense --dir D [--batches N]
//       writes D/weights.safetensors (the seed's initial weights) and D/tokens.bin (int32 batches)
//   node bench/train_step.mjs train --model small-dense --backend wasm --dir D --warmup 1 --steps 3 [--micro 4] [--tf-profile]
//       trains on D/tokens.bin from the same seed's weights and reports losses, step times, peak RSS
//   ... train ... --serve
//       reads commands from stdin (loss | step | grads | profile | memory | quit) so bench/run.mjs can interleave it with the reference
//   ... train ... --lora 16 [--lora-targets q_proj,k_proj,v_proj,o_proj] [--lora-quantize int8]
//       trains LoRA adapters of that rank on the frozen model instead (QLoRA with --lora-quantize)
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { MODELS, TRAIN, flopsPerToken } from './configs.mjs';

const dist = new URL('../dist/src/', import.meta.url);
const { tf } = await import(new URL('engine/tfjs/tf.js', dist));
const { useBackend } = await import(new URL('engine/tfjs/backend.js', dist));
const { LanguageModel } = await import(new URL('engine/tfjs/model.js', dist));
const { lmLoss } = await import(new URL('engine/tfjs/losses.js', dist));
const { TfjsEngine } = await import(new URL('engine/tfjs/engine.js', dist));
const { initWeights } = await import(new URL('model/weights.js', dist));
const { initAdapters } = await import(new URL('model/lora.js', dist));
const { encodeSafetensors, f32 } = await import(new URL('model/safetensors.js', dist));
const { Rng } = await import(new URL('random.js', dist));

const { positionals, values: a } = parseArgs({
  allowPositionals: true,
  options: {
    model: { type: 'string', default: 'small-dense' },
    backend: { type: 'string', default: 'wasm' },
    engine: { type: 'string', default: 'tfjs' },
    dtype: { type: 'string', default: 'fp32' },
    // --engine torch: ranks on this machine (torchrun, DDP over gloo on the CPU).
    ranks: { type: 'string', default: '1' },
    dir: { type: 'string' },
    batches: { type: 'string', default: '8' },
    warmup: { type: 'string', default: '1' },
    steps: { type: 'string', default: '3' },
    micro: { type: 'string' },
    'tf-profile': { type: 'boolean', default: false },
    lora: { type: 'string' },
    'lora-targets': { type: 'string', default: 'q_proj,k_proj,v_proj,o_proj' },
    'lora-quantize': { type: 'string', default: 'none' },
    serve: { type: 'boolean', default: false },
  },
});
const mode = positionals[0];
const spec = MODELS[a.model];
if (!spec || !a.dir || !['export', 'train'].includes(mode)) {
  console.error(
    'usage: train_step.mjs export|train --model NAME --dir DIR [--backend cpu|wasm|webgpu] [--warmup N] [--steps N]',
  );
  process.exit(2);
}
const { batch } = TRAIN;
const seq = spec.context;

function peakRssMb() {
  const m = readFileSync('/proc/self/status', 'utf8').match(/VmHWM:\s+(\d+) kB/);
  return m ? Number(m[1]) / 1024 : NaN;
}

if (mode === 'export') {
  await useBackend('cpu', () => {});
  const model = LanguageModel.init(spec, TRAIN.seed);
  const tensors = new Map();
  for (const [name, w] of await model.weights()) tensors.set(name, f32(w.shape, w.data));
  writeFileSync(join(a.dir, 'weights.safetensors'), encodeSafetensors(tensors));
  // Batches of random token windows: inputs [B, T] and next-token targets, drawn from one stream.
  const n = Number(a.batches);
  const rng = Rng.derive(TRAIN.seed, 7);
  const toks = new Int32Array(n * batch * (seq + 1));
  for (let i = 0; i < toks.length; i++) toks[i] = rng.int(spec.vocabSize);
  writeFileSync(join(a.dir, 'tokens.bin'), new Uint8Array(toks.buffer));
  writeFileSync(join(a.dir, 'spec.json'), JSON.stringify({ spec, train: TRAIN, batches: n, seq }));
  console.log(JSON.stringify({ ok: true, params: model.numParams }));
  process.exit(0);
}

await useBackend(a.backend, () => {});
// webgpu: compute dispatches per step (every kernel is one) and the adapter (SwiftShader or a GPU).
const gpu = a.backend === 'webgpu' ? await import(new URL('engine/tfjs/webgpu.js', dist)) : undefined;
const adapter = gpu ? await gpu.installWebGpu() : undefined;
const raw = readFileSync(join(a.dir, 'tokens.bin'));
const toks = new Int32Array(raw.buffer, raw.byteOffset, raw.byteLength / 4);
const nBatches = toks.length / (batch * (seq + 1));
function batchAt(i) {
  const off = (i % nBatches) * batch * (seq + 1);
  const inputs = new Int32Array(batch * seq);
  const targets = new Int32Array(batch * seq);
  for (let b = 0; b < batch; b++) {
    const row = off + b * (seq + 1);
    inputs.set(toks.subarray(row, row + seq), b * seq);
    targets.set(toks.subarray(row + 1, row + seq + 1), b * seq);
  }
  return { inputs, targets, batch, seq };
}

const optimizer = {
  beta1: TRAIN.beta1,
  beta2: TRAIN.beta2,
  eps: TRAIN.eps,
  weightDecay: TRAIN.weightDecay,
  gradClip: TRAIN.gradClip,
};
// --engine torch: the same step through the torch engine (a Python child process), fp32 or bf16.
const torch = a.engine === 'torch';
const { TorchEngine } = torch ? await import(new URL('engine/torch/engine.js', dist)) : {};
const loraCfg = a.lora && {
  rank: Number(a.lora),
  alpha: 2 * Number(a.lora),
  dropout: 0,
  targets: a['lora-targets'].split(','),
  quantize: a['lora-quantize'],
};
const lora = loraCfg && { ...loraCfg, seed: TRAIN.seed, adapters: initAdapters(spec, loraCfg, TRAIN.seed) };
const engine = torch
  ? await TorchEngine.create({
      device: 'cpu',
      dtype: a.dtype,
      spec,
      weights: initWeights(spec, TRAIN.seed),
      optimizer,
      lora,
      ...(Number(a.ranks) > 1
        ? { launch: { perNode: Number(a.ranks), nodes: 1, parallel: 'ddp', launcher: 'local', timeoutMs: 600_000 } }
        : {}),
    })
  : await TfjsEngine.create({ backend: a.backend, spec, weights: initWeights(spec, TRAIN.seed), optimizer, lora });
const model = torch ? undefined : engine.languageModel;
const vars = torch ? [] : [...model.params.values()];

// The step of pretrain(): the batch of `batch` sequences is split into micro-batches of `micro`
// sequences, as a recipe with batchSize=micro and gradAccum=batch/micro would.
const micro = Number(a.micro || batch);
if (!(micro > 0 && batch % micro === 0)) throw new Error(`--micro ${a.micro} must divide the batch ${batch}`);
const accum = batch / micro;
const microBatch = (full, m) => ({
  inputs: full.inputs.subarray(m * micro * seq, (m + 1) * micro * seq),
  targets: full.targets.subarray(m * micro * seq, (m + 1) * micro * seq),
  batch: micro,
  seq,
});
// What is minimised: cross-entropy plus the MoE terms, as the reference reports it.
const total = (r) => r.loss + (r.values.aux_loss ?? 0) * spec.auxLossCoef + (r.values.z_loss ?? 0) * spec.zLossCoef;
async function step(i) {
  const full = batchAt(i);
  const reports = [];
  for (let m = 0; m < accum; m++)
    reports.push(await engine.forwardBackward(microBatch(full, m), { name: 'cross_entropy' }));
  const { gradNorm } = await engine.optimStep(TRAIN.lr);
  const mean = (f) => reports.reduce((s, r) => s + f(r), 0) / accum;
  return { loss: mean(total), ce: mean((r) => r.loss), gradNorm };
}

// Threads of the wasm backend (LATHE_WASM_THREADS, default one per core) and whether the fused
// kernels are on (LATHE_FUSED_KERNELS=0 runs the plain tfjs compositions instead).
const { getThreadsCount } = await import('@tensorflow/tfjs-backend-wasm');
const { fusedKernels } = await import(new URL('engine/tfjs/kernels.js', dist));
const { nativeStatus } = await import(new URL('engine/tfjs/native.js', dist));
const threads = torch ? undefined : a.backend === 'wasm' ? getThreadsCount() : 1;
const info = {
  model: a.model,
  backend: torch ? `torch ${a.dtype}${Number(a.ranks) > 1 ? ` ddp ${a.ranks} ranks` : ''}` : a.backend,
  engine: a.engine,
  torch: torch ? engine.torchVersion : undefined,
  threads,
  native: torch ? undefined : nativeStatus(),
  fusedKernels: torch ? undefined : fusedKernels(),
  microBatch: micro,
  batch,
  lora: loraCfg,
  params: engine.numParams,
  tokensPerStep: batch * seq,
  flopsPerToken: flopsPerToken(spec),
  adapter: adapter?.adapter,
  softwareAdapter: adapter ? /swiftshader/i.test(adapter.adapter ?? '') || adapter.software : undefined,
  shaderF16: adapter?.f16,
  storage: engine.storage,
};
let done = 0;
async function timed() {
  const t0 = performance.now();
  const c0 = process.cpuUsage();
  const d0 = gpu?.dispatchCount();
  const r = await step(done++);
  const c = process.cpuUsage(c0);
  const dispatches = gpu ? gpu.dispatchCount() - d0 : undefined;
  const errors = gpu?.takeWebGpuErrors();
  if (errors?.length) throw new Error(`webgpu: ${errors.join('; ')}`);
  return {
    ...r,
    step: done,
    seconds: (performance.now() - t0) / 1000,
    cpuSeconds: (c.user + c.system) / 1e6,
    dispatches,
  };
}

// Loss of batch i without an update (mean over micro-batches): the same-model check.
async function forwardLoss(i) {
  const full = batchAt(i);
  let sum = 0;
  for (let m = 0; m < accum; m++) sum += total(await engine.forward(microBatch(full, m), { name: 'cross_entropy' }));
  return sum / accum;
}

// Kernel-level profile of one step: wall time per kernel name, and per kernel name and input
// shapes, summed, heaviest first. `forward` is a customGrad op (Lathe's linear): its time
// includes the kernels it runs, which are also listed on their own.
async function kernelProfile() {
  const prof = await tf.profile(() => step(done++));
  const add = (map, key) => (k) => {
    const e = map.get(key(k)) ?? { ms: 0, calls: 0 };
    e.ms += typeof k.kernelTimeMs === 'number' ? k.kernelTimeMs : 0;
    e.calls += 1;
    map.set(key(k), e);
  };
  const byKernel = new Map();
  const byShape = new Map();
  for (const k of prof.kernels) {
    add(byKernel, (x) => x.name)(k);
    add(byShape, (x) => `${x.name} ${JSON.stringify(x.inputShapes)}`)(k);
  }
  const list = (m, n) =>
    [...m]
      .map(([name, e]) => ({ name, ms: Math.round(e.ms), calls: e.calls }))
      .sort((x, y) => y.ms - x.ms)
      .slice(0, n);
  return { kernels: list(byKernel, 40), shapes: list(byShape, 40) };
}

const log = (r, note = '') =>
  console.error(
    `[train_step ${a.model} ${a.backend}] step ${r.step} loss ${r.loss.toFixed(6)} ${r.seconds.toFixed(2)} s (cpu ${r.cpuSeconds.toFixed(2)} s)${r.dispatches !== undefined ? ` ${r.dispatches} dispatches` : ''}${note}`,
  );
// The wasm heap only grows, so its size is the step's peak; wasm32 stops at 4096 MB.
const wasmHeapMb = () =>
  !torch && a.backend === 'wasm' ? tf.backend().wasm.HEAPU8.buffer.byteLength / 2 ** 20 : undefined;
const final = () => ({
  peakRssMb: peakRssMb(),
  wasmHeapMb: wasmHeapMb(),
  tensors: torch ? undefined : tf.memory().numTensors,
  ...info,
});

if (a.serve) {
  // The orchestrator interleaves our steps with the reference's: `loss` prints the loss of the first
  // batch without an update, `step` runs one optimizer step and prints its JSON line, `grads` only
  // the loss and gradients of a step (no optimizer), `profile` one
  // step under tf.profile, `quit` prints peak RSS and exits.
  console.log(JSON.stringify({ ready: true, ...info }));
  const { createInterface } = await import('node:readline');
  for await (const line of createInterface({ input: process.stdin })) {
    const cmd = line.trim();
    if (cmd === 'step') {
      const r = await timed();
      log(r);
      console.log(JSON.stringify(r));
    } else if (cmd === 'grads') {
      // Loss and gradients of every micro-batch, no clipping or update: what the step costs
      // before the optimizer (used when the full step cannot run).
      const t0 = performance.now();
      const full = batchAt(done++);
      for (let m = 0; m < accum; m++) {
        const b = microBatch(full, m);
        const { value, grads } = tf.variableGrads(() => lmLoss(model, b).total, vars);
        await value.data();
        tf.dispose([value, ...Object.values(grads)]);
      }
      console.log(JSON.stringify({ step: done, seconds: (performance.now() - t0) / 1000 }));
    } else if (cmd === 'loss') console.log(JSON.stringify({ initialLoss: await forwardLoss(0) }));
    else if (cmd === 'profile') console.log(JSON.stringify({ profile: await kernelProfile() }));
    else if (cmd === 'memory') console.log(JSON.stringify({ memory: await engine.memory() }));
    else if (cmd === 'quit') break;
  }
  console.log(JSON.stringify(final()));
  await engine.dispose();
  process.exit(0);
}

const warmup = Number(a.warmup);
const steps = Number(a.steps);
const rs = [];
for (let i = 0; i < warmup + steps; i++) {
  rs.push(await timed());
  log(rs[i], i < warmup ? ' (warm-up)' : '');
}
const profile = a['tf-profile'] ? await kernelProfile() : undefined;
const times = rs
  .slice(warmup)
  .map((r) => r.seconds)
  .sort((x, y) => x - y);
const median = (times[(times.length - 1) >> 1] + times[times.length >> 1]) / 2;
console.log(
  JSON.stringify({
    ...final(),
    losses: rs.map((r) => r.loss),
    stepSeconds: times,
    stepCpuSeconds: rs.slice(warmup).map((r) => r.cpuSeconds),
    medianStepSeconds: median,
    tokensPerSecond: (batch * seq) / median,
    dispatchesPerStep: gpu ? rs.at(-1).dispatches : undefined,
    profile,
  }),
);
await engine.dispose();
process.exit(0);
