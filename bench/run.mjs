#!/usr/bin/env node
// `npm run bench`: Lathe against PyTorch / HF tokenizers / numpy on this machine, side by side in
// one invocation. Prints a fixed-width table and writes bench/results.json:
//   { machine: {...}, cases: [{ name, ours, reference, unit, ratio, ... }] }
// ratio is always "higher is better": ours / reference for rates (tokens/s, MB/s, GFLOP/s),
// reference / ours for memory (MB). See bench/README.md for what each case measures.
//
//   node bench/run.mjs [--cases a,b] [--quick] [--out FILE] [--keep] [--list] [--micro N] [--ref-threads N] [--corpus-mb N]
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { writeCorpus } from './corpus.mjs';
import { MODELS } from './configs.mjs';
import { kernelLatency } from './kernel.mjs';
import { browserChart } from './browser.mjs';
import { benchRooms } from './rooms.mjs';
import { benchServe } from './serve.mjs';

const root = fileURLToPath(new URL('..', import.meta.url));
const here = join(root, 'bench');
const python = join(root, '.venv', 'bin', 'python');

/** Every case: its rows, whether the default run includes it, and what it costs. */
const CASES = {
  'matmul-ceiling': {
    default: true,
    about: '1024^2 fp32 matmul GFLOP/s: tfjs wasm and cpu vs the best of numpy and torch',
  },
  'train-small-dense': { default: true, about: 'training tokens/s, 6x384 dense, batch 16 x 256, wasm vs torch' },
  'train-small-moe': { default: true, about: 'training tokens/s, 6x384 MoE 8 experts top-2, wasm vs torch' },
  'train-tiny-dense': { default: true, about: 'training tokens/s, 2x128 dense, wasm vs torch' },
  'tokenizer-train': { default: true, about: 'BPE training MB/s on a ~50 MB corpus vs HF tokenizers' },
  'tokenizer-encode': { default: true, about: 'encode MB/s on the same corpus vs HF tokenizers (encode_batch)' },
  'peak-memory': {
    default: true,
    about: 'peak RSS of the small dense training vs torch (reuses train-small-dense children)',
  },
  'chart-latency': {
    default: true,
    about:
      'in Chromium: metric leaving the kernel → drawn (p50/p95 ms, goal 1 s) and 100k-point chart redraw (ms, goal 100 ms) (bench/browser.mjs)',
  },
  'rooms-propagation': {
    default: true,
    about:
      'run room: 20 viewers on loopback, propagation p50/p95 (goal p95 <= 100 ms) and server RSS after 100k points, vs stock y-websocket (bench/rooms.mjs)',
  },
  'kernel-latency': {
    default: true,
    about: 'execute_request round trip of a trivial cell, p50/p95 ms, the lathe kernel vs ipykernel (bench/kernel.mjs)',
  },
  'train-small-dense:torch': {
    default: true,
    about:
      'training tokens/s, 6x384 dense, the torch engine (Lathe driving PyTorch, fp32) vs the standalone PyTorch reference',
  },
  'train-small-moe:torch': {
    default: true,
    about: 'training tokens/s, 6x384 MoE 8 experts top-2, the torch engine (fp32) vs the standalone PyTorch reference',
  },
  'train-small-dense:torch-bf16': {
    default: true,
    about: 'training tokens/s, 6x384 dense, the torch engine in bf16 autocast (AMX on this CPU) vs the fp32 reference',
  },
  'serve-throughput': {
    default: true,
    about:
      'lathe serve: tokens/s and time to first token (p50/p95) of 8 concurrent streaming clients vs one client at a time, tfjs (bench/serve.mjs)',
  },
  'serve-throughput:torch': {
    default: true,
    about: 'serve-throughput on the torch engine (CPU, fp32)',
  },
  'lora-small-dense': {
    default: true,
    about:
      'LoRA rank 16 (q,k,v,o) vs full fine-tuning of the 6x384 dense model, wasm, same run: step time, optimizer state; QLoRA int8 base memory and loss vs LoRA',
  },
  'lora-small-dense:torch': {
    default: true,
    about: 'the same on the torch engine (cpu, fp32): LoRA r16 vs full fine-tuning, QLoRA int8 vs LoRA',
  },
  'train-small-dense:torch-ddp2': {
    default: true,
    about:
      'training tokens/s, 6x384 dense, the torch engine on 2 DDP ranks (torchrun, gloo, one thread each) vs the torch engine on 1 rank (2 threads)',
  },
  'train-tiny-dense:cpu': {
    default: false,
    about: 'train-tiny-dense on the tfjs cpu backend (slow: ~5-12 min a step here)',
  },
  'train-small-dense:webgpu': {
    default: false,
    about:
      'train-small-dense on the tfjs webgpu backend (Dawn): tokens/s and dispatches per step vs torch; on a CPU Vulkan driver (lavapipe or SwiftShader, no GPU) a correctness-only figure',
  },
  'train-small-dense:cpu': {
    default: false,
    about: 'train-small-dense on the tfjs cpu backend (very slow: an hour or more a step)',
  },
};

/** Goals of issue 8, as ratios (higher is better). */
const GOALS = {
  'train-small-dense': 0.5,
  'train-small-moe': 0.4,
  'tokenizer-encode': 0.3,
  'peak-memory': 1 / 1.5,
  // Issue 14: the torch engine at least 0.95x standalone PyTorch in fp32; bf16 at least 1.5x the fp32 reference.
  'train-small-dense:torch': 0.95,
  'train-small-moe:torch': 0.95,
  'train-small-dense:torch-bf16': 1.5,
  // Issue 17: LoRA rank 16 takes <= 0.7x the step time of full fine-tuning (tokens/s ratio >= 1/0.7)
  // and keeps <= 5% of its optimizer state (memory ratio >= 20).
  'lora-small-dense': 1 / 0.7,
  'lora-small-dense:optimizer-state': 20,
  'lora-small-dense:torch': 1 / 0.7,
  'lora-small-dense:torch:optimizer-state': 20,
};

const { values: args } = parseArgs({
  options: {
    cases: { type: 'string' },
    quick: { type: 'boolean', default: false },
    out: { type: 'string', default: join(here, 'results.json') },
    keep: { type: 'boolean', default: false },
    list: { type: 'boolean', default: false },
    'corpus-mb': { type: 'string', default: '50' },
    micro: { type: 'string' },
    'ref-threads': { type: 'string', default: '2' },
    help: { type: 'boolean', short: 'h', default: false },
  },
});

if (args.help) {
  console.log(`npm run bench -- [options]: Lathe against its references on this machine; a table and bench/results.json

  --cases a,b        run these cases (--list names them; default: the default ones)
  --list             list the cases, default or opt-in, and what each measures
  --quick            fewer repeats (a smoke run, not a figure)
  --out FILE         where the JSON goes (default bench/results.json)
  --keep             keep the scratch folder
  --micro N          micro-batches per training step (default: per model and backend)
  --ref-threads N    CPU threads of the PyTorch/numpy references (default 2)
  --corpus-mb N      size of the tokenizer corpus in MB (default 50)`);
  process.exit(0);
}
if (args.list) {
  for (const [name, c] of Object.entries(CASES))
    console.log(`${name.padEnd(24)} ${c.default ? 'default' : 'opt-in '}  ${c.about}`);
  process.exit(0);
}
const selected = args.cases
  ? args.cases
      .split(',')
      .map((s) => s.trim())
      .filter(Boolean)
  : Object.keys(CASES).filter((k) => CASES[k].default);
for (const c of selected) {
  if (!CASES[c]) {
    console.error(`bench: unknown case "${c}"; cases: ${Object.keys(CASES).join(', ')}`);
    process.exit(2);
  }
}
if (!existsSync(python)) {
  console.error(
    `bench: ${python} is missing; run \`npm run setup\` (it installs torch, numpy and tokenizers from requirements.txt)`,
  );
  process.exit(2);
}
if (!existsSync(join(root, 'dist', 'src', 'engine', 'tfjs', 'model.js'))) {
  console.error('bench: dist/ is missing; run `npm run setup` (or `npm run build`)');
  process.exit(2);
}

const quick = args.quick;
/** Repeats (timed steps of ours after one warm-up step; runs of the tokenizer cases). */
const REPEATS = {
  matmul: quick ? 1 : 3,
  'small-dense': quick ? 1 : 2,
  'small-moe': quick ? 1 : 2,
  'tiny-dense': quick ? 2 : 4,
  tokTrain: quick ? 1 : 2,
  tokEncode: quick ? 1 : 3,
};
/** Micro-batch of our training step per model and backend (see README: the wasm heap is 4 GB). */
const MICRO = {
  wasm: { 'small-dense': 4, 'small-moe': 4, 'tiny-dense': 4 },
  cpu: { 'small-dense': 4, 'small-moe': 4, 'tiny-dense': 4 },
  // A GPU takes the whole batch at once (its memory is not wasm's 4 GB).
  webgpu: { 'small-dense': 16, 'small-moe': 16, 'tiny-dense': 16 },
  // The torch engine trains the whole batch at once, as the reference does.
  torch: { 'small-dense': 16, 'small-moe': 16, 'tiny-dense': 16 },
  'torch-bf16': { 'small-dense': 16, 'small-moe': 16, 'tiny-dense': 16 },
  'torch-ddp2': { 'small-dense': 16, 'small-moe': 16, 'tiny-dense': 16 },
};
/** Child arguments of a backend: the torch ones run our step on the torch engine. */
const engineArgs = (backend) =>
  backend.startsWith('torch')
    ? [
        '--engine',
        'torch',
        '--dtype',
        backend === 'torch-bf16' ? 'bf16' : 'fp32',
        '--ranks',
        backend === 'torch-ddp2' ? '2' : '1',
      ]
    : ['--backend', backend];
const STEP_TIMEOUT_S = 30 * 60;
/**
 * Our children run as Lathe does by default: single-threaded wasm (with the native kernels on, the
 * threaded heap is shared memory that ONNX Runtime cannot read, and the copies cost more than the
 * threads give: 0.32 vs 0.38 on train-small-dense), native kernels on 2 threads, and the V8 flags
 * of bin/lathe.js and the kernel spec (a larger young generation: steps 17% faster).
 */
const OURS_ENV = { LATHE_WASM_THREADS: process.env.LATHE_WASM_THREADS || '1' };
const NODE_FLAGS = ['--max-semi-space-size=64'];
/**
 * webgpu without a Vulkan driver of the machine's own (no GPU): a CPU Vulkan driver, so the row
 * still runs and checks the same model: Mesa's lavapipe where npm test's setup unpacked it (faster,
 * and it has shader-f16), else SwiftShader from Debian's chromium (DESIGN, known ground).
 */
function webgpuEnv() {
  const icds = ['/etc/vulkan/icd.d', '/usr/share/vulkan/icd.d'].some(
    (d) => existsSync(d) && readdirSync(d).some((f) => f.endsWith('.json')),
  );
  if (icds || process.env.VK_ICD_FILENAMES) return {};
  const lavapipe = join(root, '.cache', 'lavapipe', 'lvp_icd.json');
  if (existsSync(lavapipe))
    return { VK_ICD_FILENAMES: lavapipe, XDG_RUNTIME_DIR: process.env.XDG_RUNTIME_DIR ?? '/tmp' };
  const swiftshader = '/usr/lib/chromium/vk_swiftshader_icd.json';
  if (!existsSync(swiftshader)) return {};
  return { LD_LIBRARY_PATH: '/usr/lib/chromium', VK_ICD_FILENAMES: swiftshader };
}
const oursEnv = (backend) => (backend === 'webgpu' ? { ...OURS_ENV, ...webgpuEnv() } : OURS_ENV);
/** tfjs-wasm on its own (XNNPACK, one thread per core, no native kernels): the previous engine. */
const XNNPACK_ENV = { LATHE_WASM_THREADS: 'cores', LATHE_NATIVE_KERNELS: '0' };

const work = mkdtempSync(join(tmpdir(), 'lathe-bench-'));
const log = (m) => console.error(`[bench] ${m}`);
const started = Date.now();

// ---------------------------------------------------------------- child processes

/** Runs a command to completion; resolves to the JSON of its last stdout line. */
function runJson(cmd, argv, opts = {}) {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, argv, {
      cwd: root,
      stdio: ['ignore', 'pipe', 'inherit'],
      env: { ...process.env, ...opts.env },
    });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    const timer = opts.timeoutS ? setTimeout(() => child.kill('SIGKILL'), opts.timeoutS * 1000) : undefined;
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      const last = out.trim().split('\n').pop();
      if (code !== 0)
        return reject(new Error(`${cmd} ${argv.join(' ')} exited ${code ?? signal}${last ? `: ${last}` : ''}`));
      try {
        resolve(JSON.parse(last));
      } catch {
        reject(new Error(`${cmd} ${argv.join(' ')} printed no JSON: ${out.slice(-500)}`));
      }
    });
  });
}

/** A child speaking the line protocol of train_step.mjs / reference_llama.py --serve. */
class Server {
  constructor(label, cmd, argv, env = {}) {
    this.label = label;
    this.child = spawn(cmd, argv, { cwd: root, stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, ...env } });
    // Passed through, and the tail kept so a crash can be reported with its cause.
    this.stderrTail = '';
    this.child.stderr.on('data', (d) => {
      process.stderr.write(d);
      this.stderrTail = (this.stderrTail + d).slice(-4000);
    });
    this.lines = createInterface({ input: this.child.stdout })[Symbol.asyncIterator]();
    this.exit = new Promise((resolve) => this.child.on('close', (code, signal) => resolve(code ?? signal)));
  }

  async next() {
    let timer;
    const timeout = new Promise(
      (_, reject) =>
        (timer = setTimeout(
          () => reject(new Error(`${this.label}: no answer in ${STEP_TIMEOUT_S} s`)),
          STEP_TIMEOUT_S * 1000,
        )),
    );
    const line = this.lines.next().then(async (r) => {
      if (r.done) throw new Error(`${this.label} exited (${await this.exit}) before answering: ${this.cause()}`);
      return JSON.parse(r.value);
    });
    try {
      return await Promise.race([line, timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  /** The error line of a crashed child (e.g. tfjs-wasm's "RuntimeError: Aborted()"). */
  cause() {
    const lines = this.stderrTail
      .split('\n')
      .map((l) => l.trim())
      .filter(Boolean);
    return (
      lines.reverse().find((l) => /Error|Abort|out of memory|Killed/i.test(l) && !l.startsWith('at ')) ??
      lines[0] ??
      'no message'
    );
  }

  async send(cmd) {
    this.child.stdin.write(`${cmd}\n`);
    return this.next();
  }

  async quit() {
    try {
      return await this.send('quit');
    } finally {
      this.child.stdin.end();
    }
  }

  kill() {
    if (this.child.exitCode === null) this.child.kill('SIGKILL');
  }
}

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? (s[(s.length - 1) >> 1] + s[s.length >> 1]) / 2 : NaN;
};

// ---------------------------------------------------------------- cases

let ceiling; // best reference matmul GFLOP/s, for MFU
const training = {}; // per model+backend: the children's reports (peak-memory reuses them)

async function referenceMatmul() {
  return runJson(python, [join(here, 'reference_matmul.py'), '--repeats', quick ? '5' : '10']);
}

async function matmulCeiling() {
  // Rounds interleave the engines so a noisy neighbour hits them alike; median over rounds.
  const ref = [];
  const wasm = [];
  const xnn = []; // tfjs-wasm's own XNNPACK kernel, threaded, and with one thread
  const xnn1 = [];
  for (let r = 0; r < REPEATS.matmul; r++) {
    ref.push(await referenceMatmul());
    wasm.push(
      await runJson(process.execPath, [join(here, 'matmul.mjs'), '--backend', 'wasm', '--repeats', '5'], {
        env: OURS_ENV,
      }),
    );
    xnn.push(
      await runJson(process.execPath, [join(here, 'matmul.mjs'), '--backend', 'wasm', '--repeats', '5'], {
        env: XNNPACK_ENV,
      }),
    );
    xnn1.push(
      await runJson(process.execPath, [join(here, 'matmul.mjs'), '--backend', 'wasm', '--repeats', '5'], {
        env: { ...XNNPACK_ENV, LATHE_WASM_THREADS: '1' },
      }),
    );
  }
  const cpu = await runJson(
    process.execPath,
    [join(here, 'matmul.mjs'), '--backend', 'cpu', '--repeats', quick ? '1' : '2'],
    { env: { LATHE_NATIVE_KERNELS: '0' } },
  );
  const numpy = median(ref.map((r) => r.numpy));
  const torch = median(ref.map((r) => r.torch));
  const refMedian = Math.max(numpy, torch);
  ceiling = Math.max(...ref.map((r) => r.best));
  const refName = numpy >= torch ? `numpy (${ref[0].numpyBlas})` : 'torch';
  const detail = {
    numpy,
    torch,
    numpy2048: median(ref.map((r) => r.numpy2n)),
    torch2048: median(ref.map((r) => r.torch2n)),
    bestReference: ceiling,
    numpyBlas: ref[0].numpyBlas,
    tfjsWasm: median(wasm.map((w) => w.gflops)),
    tfjsWasmBest: Math.max(...wasm.map((w) => w.best)),
    native: wasm[0].native,
    xnnpack: median(xnn.map((w) => w.gflops)),
    xnnpackBest: Math.max(...xnn.map((w) => w.best)),
    xnnpackThreads: xnn[0].threads,
    xnnpack1Thread: median(xnn1.map((w) => w.gflops)),
    tfjsCpu: cpu.gflops,
    threads: ref[0].threads,
    n: 1024,
  };
  const note = `medians; tfjs vs ${refName}, 2 threads; MFU ceiling = fastest reference product seen (1024^2 or 2048^2) ${ceiling.toFixed(0)} GFLOP/s`;
  return [
    {
      name: 'matmul-ceiling',
      ours: detail.tfjsWasm,
      reference: refMedian,
      unit: 'GFLOP/s',
      ratio: detail.tfjsWasm / refMedian,
      note: `wasm backend as Lathe runs it: ${detail.native}; ${note}`,
      detail,
    },
    {
      name: 'matmul-ceiling:xnnpack',
      ours: detail.xnnpack,
      reference: refMedian,
      unit: 'GFLOP/s',
      ratio: detail.xnnpack / refMedian,
      note: `tfjs-wasm's own kernel, ${detail.xnnpackThreads} threads (1 thread: ${detail.xnnpack1Thread.toFixed(1)})`,
      detail,
    },
    {
      name: 'matmul-ceiling:cpu',
      ours: cpu.gflops,
      reference: refMedian,
      unit: 'GFLOP/s',
      ratio: cpu.gflops / refMedian,
      note: 'tfjs cpu backend, its own kernel',
      detail,
    },
  ];
}

/** A case's folder with the model's exported weights and batches, its step count and micro-batch. */
async function caseFolder(model, backend, suffix) {
  const dir = join(work, `${model}-${backend}${suffix}`);
  spawnSync('mkdir', ['-p', dir]);
  const repeats = REPEATS[model];
  const micro = Number(args.micro ?? MICRO[backend][model]);
  const exported = ['export', '--model', model, '--dir', dir, '--batches', String(repeats + 4)];
  await runJson(process.execPath, [join(here, 'train_step.mjs'), ...exported]);
  return { dir, repeats, micro };
}

/** Ours and the PyTorch reference on one model, steps interleaved: ref, ours, ref, ours, ..., ref. */
async function trainCase(caseName, model, backend) {
  const { dir, repeats, micro } = await caseFolder(model, backend, '');
  // A train_step.mjs child serving our steps (engine: engineArgs) for this model and folder.
  const stepChild = (label, engine) =>
    new Server(
      label,
      process.execPath,
      [
        ...NODE_FLAGS,
        join(here, 'train_step.mjs'),
        'train',
        '--serve',
        '--model',
        model,
        ...engine,
        '--dir',
        dir,
        '--micro',
        String(micro),
      ],
      oursEnv(backend),
    );
  const ours = stepChild(`ours ${model} ${backend}`, engineArgs(backend));
  // Several ranks are measured against the same engine on one rank (the scaling the ranks give).
  const oneRank = backend === 'torch-ddp2';
  const ref = oneRank
    ? stepChild(`ours ${model} torch 1 rank`, engineArgs('torch'))
    : new Server(`torch ${model}`, python, [
        join(here, 'reference_llama.py'),
        '--serve',
        '--dir',
        dir,
        '--check-micro',
        String(micro),
        '--threads',
        args['ref-threads'],
      ]);
  const oursSteps = [];
  const refSteps = [];
  let error;
  let check = {};
  let oursInfo;
  let refInfo;
  try {
    oursInfo = await ours.next();
    refInfo = await ref.next();
    // Same model: the first batch's loss from the same weights, before any update.
    const [lo, lr] = [(await ours.send('loss')).initialLoss, (await ref.send('loss')).initialLoss];
    check = {
      initialLossOurs: lo,
      initialLossReference: lr,
      initialLossDiff: Math.abs(lo - lr),
      tolerance: 1e-4,
      pass: Math.abs(lo - lr) <= 1e-4,
    };
    log(
      `${caseName}: initial loss ours ${lo.toFixed(6)} torch ${lr.toFixed(6)} |diff| ${check.initialLossDiff.toExponential(2)} ${check.pass ? 'ok' : 'MISMATCH'}`,
    );
    // Warm-up step each, then bracket each of our timed steps with reference steps.
    const warmRef = await ref.send('step');
    const warmOurs = await ours.send('step');
    check.firstStepLossOurs = warmOurs.loss;
    check.firstStepLossReference = warmRef.loss;
    for (let r = 0; r < repeats; r++) {
      refSteps.push(await ref.send('step'));
      oursSteps.push(await ours.send('step'));
    }
    refSteps.push(await ref.send('step'));
    const common = Math.min(oursSteps.length, refSteps.length);
    check.lossDiffPerStep = [
      Math.abs(warmOurs.loss - warmRef.loss),
      ...oursSteps.slice(0, common).map((s, i) => Math.abs(s.loss - refSteps[i].loss)),
    ];
    oursInfo = { ...oursInfo, ...(await ours.quit()) };
  } catch (e) {
    error = e.message;
    log(`${caseName}: ours failed: ${error}`);
    ours.kill();
  }
  try {
    // The reference carries on alone when ours failed, so the reference column is always filled.
    while (refSteps.length < (error ? repeats : repeats + 1)) refSteps.push(await ref.send('step'));
    refInfo = { ...refInfo, ...(await ref.quit()) };
  } catch (e) {
    ref.kill();
    throw new Error(`${caseName}: the PyTorch reference failed: ${e.message}`, { cause: e });
  }
  let fwdBwd;
  if (error) {
    // Our full step cannot run: time the loss and gradients alone in a fresh child, so the table
    // still shows what the step costs before the optimizer.
    const probe = stepChild(`ours ${model} ${backend} (grads only)`, ['--backend', backend]);
    try {
      await probe.next();
      const timed = await probe.send('grads'); // one cold step: the full step already took minutes
      await probe.quit();
      fwdBwd = { tokensPerSecond: (16 * MODELS[model].context) / timed.seconds, seconds: timed.seconds, warmUp: false };
      log(`${caseName}: loss+gradients alone (no optimizer): ${fwdBwd.tokensPerSecond.toFixed(1)} tokens/s`);
    } catch (e) {
      probe.kill();
      fwdBwd = { error: e.message };
    }
  }
  const tokens = oursInfo?.tokensPerStep ?? 16 * MODELS[model].context;
  const flopsPerToken = oursInfo?.flopsPerToken;
  const oursTps = oursSteps.length ? tokens / median(oursSteps.map((s) => s.seconds)) : 0;
  const refTps = tokens / median(refSteps.map((s) => s.seconds));
  const report = {
    name: caseName,
    ours: oursTps,
    reference: refTps,
    unit: 'tokens/s',
    ratio: oursTps / refTps,
    note: oneRank
      ? `torch engine, 2 DDP ranks (gloo) vs the torch engine on 1 rank, batch 16, torch ${oursInfo?.torch ?? ''}`
      : `${backend}${oursInfo?.threads ? ` ${oursInfo.threads} threads` : ''}${oursInfo?.native ? `, ${oursInfo.native.replace(/^native kernels: /, 'native ')}` : ''}${oursInfo?.fusedKernels === false ? ' plain ops' : ''} micro-batch ${micro}x${16 / micro} vs torch ${refInfo.torch} batch 16, ${refInfo.threads} threads`,
    detail: {
      backend,
      params: oursInfo?.params ?? refInfo.params,
      flopsPerToken,
      microBatch: micro,
      oursStepSeconds: oursSteps.map((s) => s.seconds),
      oursStepCpuSeconds: oursSteps.map((s) => s.cpuSeconds),
      referenceStepSeconds: refSteps.map((s) => s.seconds),
      referenceStepCpuSeconds: refSteps.map((s) => s.cpuSeconds),
      // Noise only ever adds time: the fastest step of each side is the least disturbed estimate.
      bestOfRatio: oursSteps.length
        ? Math.min(...refSteps.map((x) => x.seconds)) / Math.min(...oursSteps.map((x) => x.seconds))
        : 0,
      pairedRatios: oursSteps.map((s, i) => (refSteps[i].seconds + refSteps[i + 1].seconds) / 2 / s.seconds),
      oursThreads: oursInfo?.threads,
      oursFusedKernels: oursInfo?.fusedKernels,
      oursWasmHeapMb: oursInfo?.wasmHeapMb,
      oursPeakRssMb: oursInfo?.peakRssMb,
      referencePeakRssMb: refInfo.peakRssMb,
      sameModel: check,
      ...(fwdBwd ? { oursLossAndGradientsOnly: fwdBwd } : {}),
    },
  };
  if (error) report.error = error;
  if (oursSteps.length) report.note += `; best-of ratio ${report.detail.bestOfRatio.toFixed(2)}`;
  if (check.pass === false)
    report.note += `; SAME-MODEL CHECK FAILED: initial loss differs by ${check.initialLossDiff.toExponential(2)}`;
  if (fwdBwd?.tokensPerSecond) report.note += `; ours loss+grads alone ${fwdBwd.tokensPerSecond.toFixed(1)} tokens/s`;
  if (backend === 'webgpu') {
    const dispatches = oursSteps.map((x) => x.dispatches).filter((d) => d !== undefined);
    report.detail.adapter = oursInfo?.adapter;
    report.detail.shaderF16 = oursInfo?.shaderF16;
    report.detail.storage = oursInfo?.storage ?? 'fp32';
    if (oursInfo?.storage) report.note += '; f16 weight storage';
    report.detail.dispatchesPerStep = dispatches.length ? median(dispatches) : undefined;
    if (dispatches.length) report.note += `; ${median(dispatches)} GPU dispatches a step`;
    report.note += `; adapter ${oursInfo?.adapter ?? 'none'}`;
    if (oursInfo?.softwareAdapter) {
      report.correctnessOnly = true;
      report.note += ' (a CPU Vulkan driver: a correctness-only figure, not a GPU speed)';
    }
  }
  if (flopsPerToken && ceiling)
    report.mfu = {
      ours: (oursTps * flopsPerToken) / (ceiling * 1e9),
      reference: (refTps * flopsPerToken) / (ceiling * 1e9),
    };
  training[`${model}:${backend}`] = report;
  return [report];
}

/**
 * LoRA against full fine-tuning of the same model, same weights and batches, in the same run: three
 * children (full, LoRA rank 16, QLoRA int8 rank 16) take turns step by step. Rows: LoRA tokens/s
 * against full fine-tuning's, LoRA optimizer state against full's, and the QLoRA base's memory
 * against LoRA's full-precision base (with both losses).
 */
async function loraCase(caseName, model, backend) {
  const { dir, repeats, micro } = await caseFolder(model, backend, '-lora');
  const child = (label, extra) =>
    new Server(
      `${label} ${model} ${backend}`,
      process.execPath,
      [
        ...NODE_FLAGS,
        join(here, 'train_step.mjs'),
        'train',
        '--serve',
        '--model',
        model,
        ...engineArgs(backend),
        '--dir',
        dir,
        '--micro',
        String(micro),
        ...extra,
      ],
      OURS_ENV,
    );
  const kids = {
    full: child('full', []),
    lora: child('lora', ['--lora', '16']),
    qlora: child('qlora', ['--lora', '16', '--lora-quantize', 'int8']),
  };
  const steps = { full: [], lora: [], qlora: [] };
  const memory = {};
  const info = {};
  try {
    for (const [k, c] of Object.entries(kids)) info[k] = await c.next();
    for (const [k, c] of Object.entries(kids)) memory[k] = (await c.send('memory')).memory;
    for (const c of Object.values(kids)) await c.send('step'); // warm-up
    for (let r = 0; r < repeats; r++) for (const [k, c] of Object.entries(kids)) steps[k].push(await c.send('step'));
    for (const c of Object.values(kids)) await c.quit();
  } catch (e) {
    for (const c of Object.values(kids)) c.kill();
    throw e;
  }
  const tokens = info.full.tokensPerStep;
  const sec = (k) => median(steps[k].map((s) => s.seconds));
  const tps = (k) => tokens / sec(k);
  const mb = (b) => b / 2 ** 20;
  const engine = backend.startsWith('torch') ? `torch ${backend === 'torch-bf16' ? 'bf16' : 'fp32'}` : backend;
  const stepRatio = sec('lora') / sec('full');
  const optShare = memory.lora.optimizer / memory.full.optimizer;
  const lastLoss = (k) => steps[k].at(-1).loss;
  const detail = {
    backend,
    microBatch: micro,
    lora: info.lora.lora,
    stepSeconds: {
      full: steps.full.map((s) => s.seconds),
      lora: steps.lora.map((s) => s.seconds),
      qlora: steps.qlora.map((s) => s.seconds),
    },
    losses: {
      full: steps.full.map((s) => s.loss),
      lora: steps.lora.map((s) => s.loss),
      qlora: steps.qlora.map((s) => s.loss),
    },
    memoryBytes: memory,
    stepTimeRatio: stepRatio,
    bestOfStepTimeRatio: Math.min(...steps.lora.map((s) => s.seconds)) / Math.min(...steps.full.map((s) => s.seconds)),
    optimizerStateShare: optShare,
  };
  const suffix = caseName.slice('lora-small-dense'.length);
  return [
    {
      name: caseName,
      ours: tps('lora'),
      reference: tps('full'),
      unit: 'tokens/s',
      ratio: tps('lora') / tps('full'),
      note: `LoRA r16 on q,k,v,o vs full fine-tuning, ${engine}: step time ${stepRatio.toFixed(2)}x full (goal <= 0.70x; best-of ${detail.bestOfStepTimeRatio.toFixed(2)}x)`,
      detail,
    },
    {
      name: `${caseName}:optimizer-state`,
      ours: mb(memory.lora.optimizer),
      reference: mb(memory.full.optimizer),
      unit: 'MB',
      ratio: memory.full.optimizer / memory.lora.optimizer,
      note: `AdamW moments: LoRA ${(100 * optShare).toFixed(2)}% of full fine-tuning's (goal <= 5%)`,
      detail: { memoryBytes: memory },
    },
    {
      name: `qlora-small-dense${suffix}:memory`,
      ours: mb(memory.qlora.weights),
      reference: mb(memory.lora.weights),
      unit: 'MB',
      ratio: memory.lora.weights / memory.qlora.weights,
      note: `frozen base held int8 (QLoRA) vs fp32 (LoRA), ${engine}; loss after ${repeats + 1} steps: QLoRA ${lastLoss('qlora').toFixed(5)}, LoRA ${lastLoss('lora').toFixed(5)}, full ${lastLoss('full').toFixed(5)}; QLoRA step ${(sec('qlora') / sec('lora')).toFixed(2)}x LoRA's`,
      detail: { memoryBytes: memory, losses: detail.losses, stepSeconds: detail.stepSeconds },
    },
  ];
}

async function ensureCeiling() {
  if (ceiling) return;
  const r = await referenceMatmul();
  ceiling = r.best;
}

let corpus;
async function ensureCorpus() {
  if (corpus) return corpus;
  const path = join(work, 'corpus.jsonl');
  log(`generating a ${args['corpus-mb']} MB corpus in ${path}`);
  const stats = await writeCorpus(path, Number(args['corpus-mb']));
  corpus = { path, ...stats };
  return corpus;
}

let oursTokenizer;
async function tokenizerTrain() {
  const c = await ensureCorpus();
  const ours = [];
  const ref = [];
  const oursPath = join(work, 'tokenizer-ours.json');
  const refPath = join(work, 'tokenizer-hf.json');
  for (let r = 0; r < REPEATS.tokTrain; r++) {
    ref.push(
      await runJson(python, [
        join(here, 'reference_tokenizers.py'),
        'train',
        '--corpus',
        c.path,
        '--vocab',
        '4096',
        '--out',
        refPath,
      ]),
    );
    ours.push(
      await runJson(process.execPath, [
        join(here, 'tokenizer.mjs'),
        'train',
        '--corpus',
        c.path,
        '--vocab',
        '4096',
        '--out',
        oursPath,
      ]),
    );
  }
  oursTokenizer = oursPath;
  const merges = await runJson(python, [
    join(here, 'reference_tokenizers.py'),
    'merges',
    '--ours',
    oursPath,
    '--theirs',
    refPath,
  ]);
  const o = median(ours.map((x) => x.mbPerSecond));
  const h = median(ref.map((x) => x.mbPerSecond));
  return [
    {
      name: 'tokenizer-train',
      ours: o,
      reference: h,
      unit: 'MB/s',
      ratio: o / h,
      note: `vocab 4096 on ${(c.bytes / 1e6).toFixed(1)} MB; HF tokenizers ${ref[0].threads} threads`,
      detail: {
        corpusBytes: c.bytes,
        docs: c.docs,
        bestOfRatio: Math.min(...ref.map((x) => x.seconds)) / Math.min(...ours.map((x) => x.seconds)),
        oursSeconds: ours.map((x) => x.seconds),
        referenceSeconds: ref.map((x) => x.seconds),
        oursPeakRssMb: ours[0].peakRssMb,
        referencePeakRssMb: ref[0].peakRssMb,
        merges,
      },
    },
  ];
}

async function tokenizerEncode() {
  const c = await ensureCorpus();
  if (!oursTokenizer) {
    oursTokenizer = join(work, 'tokenizer-ours.json');
    await runJson(process.execPath, [
      join(here, 'tokenizer.mjs'),
      'train',
      '--corpus',
      c.path,
      '--vocab',
      '4096',
      '--out',
      oursTokenizer,
    ]);
  }
  const ours = [];
  const ref = [];
  const script = join(here, 'reference_tokenizers.py');
  for (let r = 0; r < REPEATS.tokEncode; r++) {
    ref.push(await runJson(python, [script, 'encode', '--corpus', c.path, '--tokenizer', oursTokenizer]));
    ours.push(
      await runJson(process.execPath, [
        join(here, 'tokenizer.mjs'),
        'encode',
        '--corpus',
        c.path,
        '--tokenizer',
        oursTokenizer,
      ]),
    );
  }
  const single = await runJson(python, [script, 'encode', '--corpus', c.path, '--tokenizer', oursTokenizer], {
    env: { TOKENIZERS_PARALLELISM: 'false' },
  });
  const o = median(ours.map((x) => x.mbPerSecond));
  const h = median(ref.map((x) => x.mbPerSecond));
  const same = ours[0].tokens === ref[0].tokens && ours[0].checksum === ref[0].checksum;
  const row = {
    name: 'tokenizer-encode',
    ours: o,
    reference: h,
    unit: 'MB/s',
    ratio: o / h,
    note: `same tokenizer.json; HF encode_batch ${ref[0].threads} threads (1 thread: ${single.mbPerSecond.toFixed(2)} MB/s); ids ${same ? 'identical' : 'DIFFER'}`,
    detail: {
      corpusBytes: c.bytes,
      bestOfRatio: Math.min(...ref.map((x) => x.seconds)) / Math.min(...ours.map((x) => x.seconds)),
      tokens: ours[0].tokens,
      referenceTokens: ref[0].tokens,
      sameIds: same,
      oursSeconds: ours.map((x) => x.seconds),
      referenceSeconds: ref.map((x) => x.seconds),
      referenceOneThreadMbPerSecond: single.mbPerSecond,
    },
  };
  if (!same) row.error = `token ids differ from HF: ${ours[0].tokens} vs ${ref[0].tokens} tokens`;
  return [row];
}

async function peakMemory() {
  let t = training['small-dense:wasm'];
  if (!t) {
    // Not measured in this invocation: a short session of the same children.
    const saved = REPEATS['small-dense'];
    REPEATS['small-dense'] = 1;
    [t] = await trainCase('train-small-dense', 'small-dense', 'wasm');
    REPEATS['small-dense'] = saved;
  }
  const ours = t.detail.oursPeakRssMb;
  const ref = t.detail.referencePeakRssMb;
  const detail = {
    source: 'VmHWM of the train-small-dense children (wasm; torch batch 16)',
    oursMicroBatch: t.detail.microBatch,
  };
  // PyTorch with our micro-batching, for a like-for-like memory comparison (2 steps).
  if (!quick) {
    const r = await runJson(python, [
      join(here, 'reference_llama.py'),
      '--dir',
      join(work, 'small-dense-wasm'),
      '--warmup',
      '1',
      '--steps',
      '1',
      '--micro',
      String(t.detail.microBatch),
    ]);
    detail.referenceSameMicroBatchPeakRssMb = r.peakRssMb;
  }
  const row = {
    name: 'peak-memory',
    ours: ours ?? NaN,
    reference: ref,
    unit: 'MB',
    ratio: ours ? ref / ours : 0,
    note: `peak RSS, small dense training; ours micro-batch ${t.detail.microBatch}, torch batch 16`,
    detail,
  };
  if (!ours) row.error = t.error ?? 'no measurement';
  return [row];
}

const RUNNERS = {
  'matmul-ceiling': matmulCeiling,
  'train-small-dense': () => trainCase('train-small-dense', 'small-dense', 'wasm'),
  'train-small-moe': () => trainCase('train-small-moe', 'small-moe', 'wasm'),
  'train-tiny-dense': () => trainCase('train-tiny-dense', 'tiny-dense', 'wasm'),
  'train-small-dense:torch': () => trainCase('train-small-dense:torch', 'small-dense', 'torch'),
  'train-small-moe:torch': () => trainCase('train-small-moe:torch', 'small-moe', 'torch'),
  'train-small-dense:torch-bf16': () => trainCase('train-small-dense:torch-bf16', 'small-dense', 'torch-bf16'),
  'lora-small-dense': () => loraCase('lora-small-dense', 'small-dense', 'wasm'),
  'lora-small-dense:torch': () => loraCase('lora-small-dense:torch', 'small-dense', 'torch'),
  'train-small-dense:torch-ddp2': () => trainCase('train-small-dense:torch-ddp2', 'small-dense', 'torch-ddp2'),
  'train-tiny-dense:cpu': () => trainCase('train-tiny-dense:cpu', 'tiny-dense', 'cpu'),
  'train-small-dense:cpu': () => trainCase('train-small-dense:cpu', 'small-dense', 'cpu'),
  'train-small-dense:webgpu': () => trainCase('train-small-dense:webgpu', 'small-dense', 'webgpu'),
  'tokenizer-train': tokenizerTrain,
  'tokenizer-encode': tokenizerEncode,
  'peak-memory': peakMemory,
  'kernel-latency': () => kernelLatency({ quick }),
  'chart-latency': () => browserChart({ quick }),
  'rooms-propagation': async () => (await benchRooms(quick ? { samples: 100, points: 20_000 } : {})).cases,
  'serve-throughput': () => benchServe({ quick }),
  'serve-throughput:torch': () => benchServe({ quick, engine: 'torch' }),
};

// ---------------------------------------------------------------- machine, table, results

function machine() {
  const cpuinfo = existsSync('/proc/cpuinfo') ? readFileSync('/proc/cpuinfo', 'utf8') : '';
  const flags = (cpuinfo.match(/^flags\s*:(.*)$/m)?.[1] ?? '').trim().split(/\s+/);
  const py = spawnSync(
    python,
    [
      '-c',
      'import sys, json, torch, numpy, tokenizers; print(json.dumps({"python": sys.version.split()[0], "torch": torch.__version__, "numpy": numpy.__version__, "tokenizers": tokenizers.__version__, "torchThreads": torch.get_num_threads()}))',
    ],
    { encoding: 'utf8' },
  );
  const pkg = (p) => JSON.parse(readFileSync(join(root, 'node_modules', p, 'package.json'), 'utf8')).version;
  const git = spawnSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: root, encoding: 'utf8' });
  return {
    cpu: cpus()[0]?.model ?? 'unknown',
    cores: cpus().length,
    simd: ['avx2', 'avx512f', 'avx512_vnni', 'amx_tile'].filter((f) => flags.includes(f)),
    memoryGb: Math.round((totalmem() / 2 ** 30) * 10) / 10,
    node: process.version,
    tfjs: pkg('@tensorflow/tfjs'),
    tfjsBackendWasm: pkg('@tensorflow/tfjs-backend-wasm'),
    ...(py.status === 0 ? JSON.parse(py.stdout) : { python: 'unavailable' }),
    commit: git.status === 0 ? git.stdout.trim() : undefined,
    date: new Date().toISOString(),
    loadAverageAtStart: loadavg().map((x) => Math.round(x * 100) / 100),
  };
}

const fmt = (x) =>
  x === undefined || x === null || Number.isNaN(x)
    ? '-'
    : Math.abs(x) >= 100
      ? x.toFixed(0)
      : Math.abs(x) >= 10
        ? x.toFixed(1)
        : x.toFixed(2);
const pct = (x) => (x === undefined ? '' : `${(x * 100).toFixed(1)}%`);

function table(cases) {
  const head = ['case', 'ours', 'reference', 'unit', 'ratio', 'goal', 'MFU ours/ref', 'notes'];
  const rows = cases.map((c) => [
    c.name,
    c.error && !c.ours ? 'FAILED' : fmt(c.ours),
    fmt(c.reference),
    c.unit,
    c.error && !c.ours ? '0' : fmt(c.ratio),
    GOALS[c.name] ? `>=${GOALS[c.name].toFixed(2)} ${c.ratio >= GOALS[c.name] ? 'met' : 'no'}` : '',
    c.mfu ? `${pct(c.mfu.ours)} / ${pct(c.mfu.reference)}` : '',
    c.error ? `${c.note}; ERROR: ${c.error.slice(0, 160)}` : (c.note ?? ''),
  ]);
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  widths[widths.length - 1] = 0;
  const line = (r) =>
    r
      .map((v, i) => (i === 0 || i >= 6 ? v.padEnd(widths[i]) : v.padStart(widths[i])))
      .join('  ')
      .trimEnd();
  return [
    'ratio: higher is better (ours / reference for tokens/s, MB/s, GFLOP/s; reference / ours for MB of memory and ms of latency)',
    `MFU: achieved model FLOP/s / the fastest reference matmul seen (${ceiling ? ceiling.toFixed(0) : '?'} GFLOP/s); FLOPs/token = 6 x active params + 12 x layers x dim x context`,
    line(head),
    line(widths.map((w) => '-'.repeat(w || 5))),
    ...rows.map(line),
  ].join('\n');
}

const m = machine();
log(
  `machine: ${m.cpu}, ${m.cores} cores, ${m.memoryGb} GB, load ${m.loadAverageAtStart.join(' ')}; cases: ${selected.join(', ')}${quick ? ' (quick)' : ''}`,
);
const results = [];
let failed = false;
try {
  // The ceiling first: the training rows' MFU divides by it.
  const order = [...selected].sort((a, b) =>
    a === 'matmul-ceiling' ? -1 : b === 'matmul-ceiling' ? 1 : a === 'peak-memory' ? 1 : b === 'peak-memory' ? -1 : 0,
  );
  if (order.some((c) => c.startsWith('train-')) && !order.includes('matmul-ceiling')) await ensureCeiling();
  for (const name of order) {
    const t0 = Date.now();
    log(`${name} ...`);
    try {
      results.push(...(await RUNNERS[name]()));
    } catch (e) {
      failed = true;
      log(`${name} failed: ${e.message}`);
      results.push({ name, ours: NaN, reference: NaN, unit: '', ratio: 0, error: e.message });
    }
    log(`${name} done in ${((Date.now() - t0) / 1000).toFixed(0)} s`);
  }
} finally {
  if (!args.keep) rmSync(work, { recursive: true, force: true });
  else log(`kept ${work}`);
}
m.loadAverageAtEnd = loadavg().map((x) => Math.round(x * 100) / 100);
m.benchSeconds = Math.round((Date.now() - started) / 1000);
m.ceilingGflops = ceiling;
m.quick = quick;
const output = { machine: m, cases: results };
writeFileSync(args.out, `${JSON.stringify(output, null, 2)}\n`);
console.log(
  `\nLathe bench: ${m.cpu}, ${m.cores} cores, ${m.memoryGb} GB; node ${m.node}, tfjs ${m.tfjs}, torch ${m.torch}; load ${m.loadAverageAtStart.join('/')} -> ${m.loadAverageAtEnd.join('/')}; ${m.benchSeconds} s`,
);
console.log(table(results));
console.log(`\nwrote ${args.out}`);
process.exit(failed ? 1 : 0);
