#!/usr/bin/env node
// The torch engine's training step on a benchmark model, as Lathe drives it (the TS core sending
// batches to the Python engine process), with no tfjs: bench/gpu_check.sh runs it on a GPU machine
// (bundled with its node, see bench/gpu_prepare.sh). Prints one JSON line.
//
//   node bench/torch_step.mjs export --model small-dense --dir D [--batches N]
//       writes D/weights.safetensors, D/tokens.bin and D/spec.json (what reference_llama.py reads)
//   node bench/torch_step.mjs train --model small-dense --dir D --device cuda --dtype bf16 [--warmup 1] [--steps 3] [--micro 16]
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { TorchEngine } from '../dist/src/engine/torch/engine.js';
import { encodeSafetensors, f32 } from '../dist/src/model/safetensors.js';
import { initWeights } from '../dist/src/model/weights.js';
import { Rng } from '../dist/src/random.js';
import { flopsPerToken, MODELS, TRAIN } from './configs.mjs';

const { positionals, values: a } = parseArgs({
  allowPositionals: true,
  options: {
    model: { type: 'string', default: 'small-dense' },
    dir: { type: 'string' },
    batches: { type: 'string', default: '6' },
    batch: { type: 'string' },
    device: { type: 'string', default: 'cpu' },
    dtype: { type: 'string', default: 'fp32' },
    warmup: { type: 'string', default: '1' },
    steps: { type: 'string', default: '3' },
    micro: { type: 'string' },
    checkpointActivations: { type: 'boolean', default: false },
    // torch.compile the model; its first step (the compile) is reported apart as firstStepSeconds.
    compile: { type: 'boolean', default: false },
    // Ranks on this machine (torchrun): one per GPU on cuda, processes on the CPU; ddp or fsdp.
    ranks: { type: 'string', default: '1' },
    parallel: { type: 'string', default: 'ddp' },
  },
});
const spec = MODELS[a.model];
if (!spec || !a.dir || !['export', 'train'].includes(positionals[0])) {
  console.error('usage: torch_step.mjs export|train --model NAME --dir DIR [--device cpu|cuda] [--dtype fp32|bf16]');
  process.exit(2);
}
const batch = Number(a.batch ?? TRAIN.batch);
const seq = spec.context;

if (positionals[0] === 'export') {
  const weights = initWeights(spec, TRAIN.seed);
  writeFileSync(
    join(a.dir, 'weights.safetensors'),
    encodeSafetensors(new Map([...weights].map(([k, w]) => [k, f32(w.shape, w.data)]))),
  );
  const rng = Rng.derive(TRAIN.seed, 7);
  const toks = new Int32Array(Number(a.batches) * batch * (seq + 1));
  for (let i = 0; i < toks.length; i++) toks[i] = rng.int(spec.vocabSize);
  writeFileSync(join(a.dir, 'tokens.bin'), new Uint8Array(toks.buffer));
  writeFileSync(
    join(a.dir, 'spec.json'),
    JSON.stringify({ spec, train: { ...TRAIN, batch }, batches: Number(a.batches), seq }),
  );
  console.log(JSON.stringify({ ok: true }));
  process.exit(0);
}

const raw = readFileSync(join(a.dir, 'tokens.bin'));
const toks = new Int32Array(raw.buffer, raw.byteOffset, raw.byteLength / 4);
const nBatches = toks.length / (batch * (seq + 1));
const micro = Number(a.micro ?? batch);
const accum = batch / micro;
function microBatch(i, m) {
  const off = (i % nBatches) * batch * (seq + 1) + m * micro * (seq + 1);
  const inputs = new Int32Array(micro * seq);
  const targets = new Int32Array(micro * seq);
  for (let b = 0; b < micro; b++) {
    inputs.set(toks.subarray(off + b * (seq + 1), off + b * (seq + 1) + seq), b * seq);
    targets.set(toks.subarray(off + b * (seq + 1) + 1, off + (b + 1) * (seq + 1)), b * seq);
  }
  return { inputs, targets, batch: micro, seq };
}
const t0 = performance.now();
const engine = await TorchEngine.create({
  device: a.device,
  dtype: a.dtype,
  spec,
  weights: initWeights(spec, TRAIN.seed),
  optimizer: {
    beta1: TRAIN.beta1,
    beta2: TRAIN.beta2,
    eps: TRAIN.eps,
    weightDecay: TRAIN.weightDecay,
    gradClip: TRAIN.gradClip,
  },
  checkpointActivations: a.checkpointActivations,
  compile: a.compile,
  ...(Number(a.ranks) > 1
    ? {
        launch: { perNode: Number(a.ranks), nodes: 1, parallel: a.parallel, launcher: 'local', timeoutMs: 1_200_000 },
      }
    : {}),
});
const startSeconds = (performance.now() - t0) / 1000;
const total = (r) => r.loss + (r.values.aux_loss ?? 0) * spec.auxLossCoef + (r.values.z_loss ?? 0) * spec.zLossCoef;
const steps = [];
for (let i = 0; i < Number(a.warmup) + Number(a.steps); i++) {
  const s0 = performance.now();
  const reports = [];
  for (let m = 0; m < accum; m++) reports.push(engine.forwardBackward(microBatch(i, m), { name: 'cross_entropy' }));
  const rs = await Promise.all(reports);
  await engine.optimStep(TRAIN.lr);
  steps.push({ loss: rs.reduce((x, r) => x + total(r), 0) / accum, seconds: (performance.now() - s0) / 1000 });
  console.error(
    `[torch_step ${a.model} ${a.device} ${a.dtype}] step ${i + 1} loss ${steps[i].loss.toFixed(6)} ${steps[i].seconds.toFixed(3)} s`,
  );
}
const times = steps
  .slice(Number(a.warmup))
  .map((s) => s.seconds)
  .sort((x, y) => x - y);
const median = (times[(times.length - 1) >> 1] + times[times.length >> 1]) / 2;
console.log(
  JSON.stringify({
    model: a.model,
    device: a.device,
    dtype: a.dtype,
    torch: engine.torchVersion,
    params: engine.numParams,
    startSeconds,
    firstStepSeconds: steps[0].seconds,
    compile: a.compile,
    losses: steps.map((s) => s.loss),
    stepSeconds: times,
    medianStepSeconds: median,
    tokensPerSecond: (batch * seq) / median,
    flopsPerToken: flopsPerToken(spec),
  }),
);
await engine.dispose();
process.exit(0);
