import { loraSites } from '../../model/lora.js';
import { numParamsOf, type ModelSpec } from '../../model/spec.js';
import type { Weights } from '../../model/weights.js';
import { LatheError } from '../../errors.js';
import type {
  BatchDecoder,
  DecodeSession,
  Engine,
  EngineBatch,
  EngineLora,
  EngineMemory,
  LossReport,
  LossSpec,
  OptimizerConfig,
  OptimizerState,
  OptimResult,
  RankWork,
} from '../engine.js';
import { HelloSchema, ReportSchema, TORCH_PROTOCOL_VERSION, type WireTensor } from './protocol.js';
import type { TorchLaunch } from './launch.js';
import { TORCH_FIX, torchInfo, TorchProcess, type RankInfo } from './process.js';

/** Where the torch engine runs and at what precision. */
export type TorchDevice = 'cpu' | 'cuda';
export type TorchDtype = 'fp32' | 'bf16';

/** What a torch engine starts from. */
export interface TorchEngineOptions {
  device: TorchDevice;
  /** fp32, or bf16 autocast with fp32 master weights. */
  dtype: TorchDtype;
  spec: ModelSpec;
  weights: Weights;
  /** Training: AdamW's settings, and its state when resuming. Absent: inference only. */
  optimizer?: OptimizerConfig & { state?: OptimizerState };
  /** Recompute each block's activations in the backward pass (less memory, more compute). */
  checkpointActivations?: boolean;
  /** torch.compile the model (its compile time is reported apart). */
  compile?: boolean;
  /** CPU threads of the engine process (default: torch's, one per core). */
  threads?: number;
  /** Several ranks (DDP or FSDP over torch.distributed); absent: one process. */
  launch?: TorchLaunch;
  /** LoRA: `weights` are the frozen base (quantized with `quantize`), these adapters train. */
  lora?: EngineLora;
}

const weightTensors = (w: Weights, prefix: string): Record<string, WireTensor> =>
  Object.fromEntries([...w].map(([k, t]) => [`${prefix}${k}`, { data: t.data, shape: t.shape }]));

function batchTensors(b: EngineBatch): Record<string, WireTensor> {
  const n = b.batch * b.seq;
  const out: Record<string, WireTensor> = {
    'batch.inputs': { data: b.inputs, shape: [n] },
    'batch.targets': { data: b.targets, shape: [n] },
  };
  if (b.weights) out['batch.weights'] = { data: b.weights, shape: [n] };
  return out;
}

/** The loss's scalars as JSON args, its arrays as binary buffers. */
function lossWire(loss: LossSpec): { args: Record<string, unknown>; tensors: Record<string, WireTensor> } {
  const args: Record<string, unknown> = {};
  const tensors: Record<string, WireTensor> = {};
  for (const [k, v] of Object.entries(loss)) {
    if (v instanceof Float32Array) tensors[`loss.${k}`] = { data: v, shape: [v.length] };
    else if (v !== undefined) args[k] = v;
  }
  return { args, tensors };
}

function toWeights(tensors: Record<string, WireTensor>, prefix: string): Weights {
  const out: Weights = new Map();
  for (const [k, t] of Object.entries(tensors))
    if (k.startsWith(prefix)) out.set(k.slice(prefix.length), { shape: t.shape, data: t.data as Float32Array });
  return out;
}

/**
 * The torch engine: Lathe's decoder in PyTorch (src/engine/torch/lathe_torch), in a Python child
 * process per engine, on the CPU or a CUDA device, fp32 or bf16 autocast. The TS core keeps the
 * run; this process keeps the tensors.
 */
export class TorchEngine implements Engine {
  readonly kind = 'torch' as const;
  readonly device: TorchDevice;
  readonly spec: ModelSpec;
  readonly numParams: number;
  /** The engine process's torch version. */
  readonly torchVersion: string;
  /** Seconds torch.compile took (0 without compile). */
  readonly compileSeconds: number;
  private steps: number;
  private readonly proc: TorchProcess;
  private nextDecoder = 1;

  private constructor(proc: TorchProcess, o: TorchEngineOptions, info: { torch: string; compileSeconds: number }) {
    this.proc = proc;
    this.device = o.device;
    this.spec = o.spec;
    this.numParams = numParamsOf(o.spec);
    this.torchVersion = info.torch;
    this.compileSeconds = info.compileSeconds;
    this.steps = o.optimizer?.state?.step ?? 0;
  }

  /** Starts the engine process and loads the model (and optimizer state) into it. */
  static async create(o: TorchEngineOptions): Promise<TorchEngine> {
    const probe = torchInfo();
    if (!probe.info) throw new LatheError(`engine torch: ${probe.why}; ${TORCH_FIX}`, 2);
    if (o.device === 'cuda' && !probe.info.cuda)
      throw new LatheError(
        `device cuda: torch ${probe.info.torch} here has no CUDA (a CPU build, or no GPU visible); use --device cpu, or install a CUDA build of torch (${TORCH_FIX})`,
        2,
      );
    if (o.launch && o.device === 'cuda' && o.launch.launcher === 'local' && o.launch.perNode > probe.info.devices)
      throw new LatheError(
        `resources.gpus: ${o.launch.perNode} GPUs asked for, torch ${probe.info.torch} sees ${probe.info.devices} here`,
        2,
      );
    const proc = o.launch
      ? await TorchProcess.launch(o.launch, { device: o.device, threads: o.threads })
      : TorchProcess.spawn({ threads: o.threads });
    try {
      const hello = HelloSchema.parse((await proc.request('hello')).result);
      if (hello.version !== TORCH_PROTOCOL_VERSION)
        throw new LatheError(`torch engine: protocol ${hello.version}, expected ${TORCH_PROTOCOL_VERSION}`);
      const st = o.optimizer?.state;
      const tensors = {
        ...weightTensors(o.weights, 'w.'),
        ...(st ? { ...weightTensors(st.m, 'm.'), ...weightTensors(st.v, 'v.') } : {}),
        ...(o.lora ? weightTensors(o.lora.adapters, 'a.') : {}),
      };
      const lora = o.lora && {
        rank: o.lora.rank,
        alpha: o.lora.alpha,
        dropout: o.lora.dropout,
        quantize: o.lora.quantize,
        seed: o.lora.seed,
        modules: loraSites(o.spec, o.lora.targets).map((s) => s.module),
      };
      const optimizer = o.optimizer && {
        beta1: o.optimizer.beta1,
        beta2: o.optimizer.beta2,
        eps: o.optimizer.eps,
        weightDecay: o.optimizer.weightDecay,
        gradClip: o.optimizer.gradClip,
      };
      const r = await proc.request(
        'init',
        {
          spec: o.spec,
          device: o.device,
          dtype: o.dtype,
          optimizer,
          optimizerStep: st?.step ?? null,
          checkpointActivations: !!o.checkpointActivations,
          compile: !!o.compile,
          threads: o.threads,
          lora,
        },
        tensors,
      );
      return new TorchEngine(proc, o, { torch: hello.torch, compileSeconds: Number(r.result.compileSeconds ?? 0) });
    } catch (e) {
      await proc.close();
      throw e;
    }
  }

  get optimizerSteps(): number {
    return this.steps;
  }

  /** @internal The engine process's pid (tests kill it). */
  get pid(): number | undefined {
    return this.proc.pid;
  }

  /** The ranks: their pids and hosts (one entry for a single process). */
  get ranks(): readonly RankInfo[] {
    return this.proc.ranks;
  }

  private async report(op: 'forward_backward' | 'forward', batch: EngineBatch, loss: LossSpec): Promise<LossReport> {
    if (loss.name === 'dpo' && loss.reference === 'engine')
      loss = { ...loss, reference: await this.logprobs(batch, { reference: true, sum: true }) };
    const wire = lossWire(loss);
    const r = await this.proc.request(
      op,
      { batch: { batch: batch.batch, seq: batch.seq }, loss: wire.args },
      { ...batchTensors(batch), ...wire.tensors },
    );
    const { loss: l, ...values } = ReportSchema.parse(r.result.report);
    return { loss: l as number, values };
  }

  forwardBackward(batch: EngineBatch, loss: LossSpec): Promise<LossReport> {
    return this.report('forward_backward', batch, loss);
  }

  forward(batch: EngineBatch, loss: LossSpec): Promise<LossReport> {
    return this.report('forward', batch, loss);
  }

  async optimStep(lr: number): Promise<OptimResult> {
    const r = (await this.proc.request('optim_step', { lr })).result as {
      gradNorm: number | null;
      gradNormText: string;
      skipped: boolean;
      optimizerSteps: number;
      ranks?: RankWork[];
    };
    this.steps = r.optimizerSteps;
    const gradNorm = r.gradNorm ?? (r.gradNormText === 'nan' ? NaN : Number(r.gradNormText.replace('inf', 'Infinity')));
    return r.ranks ? { gradNorm, skipped: r.skipped, ranks: r.ranks } : { gradNorm, skipped: r.skipped };
  }

  async logprobs(batch: EngineBatch, opts: { reference?: boolean; sum?: boolean } = {}): Promise<Float32Array> {
    const r = await this.proc.request(
      'logprobs',
      { batch: { batch: batch.batch, seq: batch.seq }, reference: !!opts.reference, sum: !!opts.sum },
      batchTensors(batch),
    );
    return r.tensors.out!.data as Float32Array;
  }

  async logits(ids: number[]): Promise<Float32Array> {
    const r = await this.proc.request('logits', {}, { ids: { data: Int32Array.from(ids), shape: [ids.length] } });
    return r.tensors.out!.data as Float32Array;
  }

  async decode(prompt: number[], n: number): Promise<{ logits: Float32Array; session: DecodeSession }> {
    const r = await this.proc.request(
      'decode_start',
      { n },
      { prompt: { data: Int32Array.from(prompt), shape: [prompt.length] } },
    );
    const id = r.result.session as number;
    const session: DecodeSession = {
      step: async (tokens) =>
        (await this.proc.request('decode_step', { session: id }, { tokens: { data: tokens, shape: [tokens.length] } }))
          .tensors.out!.data as Float32Array,
      close: () => void this.proc.request('decode_close', { session: id }).catch(() => {}),
    };
    return { logits: r.tensors.out!.data as Float32Array, session };
  }

  batchDecoder(): BatchDecoder {
    // The id is chosen here, so opening costs no round trip; the engine process makes the decoder on first use.
    const decoder = this.nextDecoder++;
    const live = new Set<number>();
    const proc = this.proc;
    return {
      add: async (prompt, copies = 1) => {
        const r = await proc.request(
          'batch_add',
          { decoder, copies },
          { prompt: { data: Int32Array.from(prompt), shape: [prompt.length] } },
        );
        const rows = r.result.rows as number[];
        for (const id of rows) live.add(id);
        return { rows, logits: r.tensors.out!.data as Float32Array };
      },
      step: async (rows, tokens) =>
        (
          await proc.request(
            'batch_step',
            { decoder, rows: [...rows] },
            { tokens: { data: tokens, shape: [tokens.length] } },
          )
        ).tensors.out!.data as Float32Array,
      drop: (row) => {
        if (!live.delete(row)) return;
        void proc.request('batch_drop', { decoder, row }).catch(() => {});
      },
      get size() {
        return live.size;
      },
      close: () => {
        live.clear();
        void proc.request('batch_close', { decoder }).catch(() => {});
      },
    };
  }

  async setReference(weights?: Weights | 'base'): Promise<void> {
    if (weights === 'base') await this.proc.request('set_reference', { base: true });
    else await this.proc.request('set_reference', {}, weights ? weightTensors(weights, 'w.') : {});
  }

  async weights(): Promise<Weights> {
    return toWeights((await this.proc.request('weights')).tensors, 'w.');
  }

  async adapters(): Promise<Weights | undefined> {
    const r = await this.proc.request('adapters');
    return r.result.lora ? toWeights(r.tensors, 'a.') : undefined;
  }

  async memory(): Promise<EngineMemory> {
    return (await this.proc.request('memory')).result as unknown as EngineMemory;
  }

  async optimizerState(): Promise<OptimizerState | undefined> {
    const r = await this.proc.request('optimizer_state');
    if (r.result.step === null) return undefined;
    return { m: toWeights(r.tensors, 'm.'), v: toWeights(r.tensors, 'v.'), step: r.result.step as number };
  }

  async saveTensors(dir: string): Promise<void> {
    await this.proc.request('save', { dir });
  }

  dispose(): Promise<void> {
    return this.proc.close();
  }
}
