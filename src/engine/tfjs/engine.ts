import { mergeAdapters } from '../../model/lora.js';
import type { ModelSpec } from '../../model/spec.js';
import type { Weights } from '../../model/weights.js';
import { writeAdapterFiles, writeTensorFiles } from '../../runs/checkpoint.js';
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
} from '../engine.js';
import { useBackend, type EngineBackend } from './backend.js';
import { TfjsLora } from './lora.js';
import { namedLoss, sequenceLogProbs, tokenLogProbs } from './losses.js';
import type { LayerCache } from './layers.js';
import { disposeCache, LanguageModel } from './model.js';
import { AdamW, restoreOptimizer } from './optimizer.js';
import { tf } from './tf.js';
import { gpuKernels } from './kernels.js';
import { takeWebGpuErrors } from './webgpu.js';
import { gpuClipControl } from './webgpu-kernels.js';
import { halfStorage, setHalfStorage } from './webgpu-half.js';

/** What a tfjs engine starts from. */
export interface TfjsEngineOptions {
  /** The tfjs backend; activated on create. */
  backend: EngineBackend;
  spec: ModelSpec;
  weights: Weights;
  /** Training: AdamW's settings, and its state when resuming. Absent: inference only. */
  optimizer?: OptimizerConfig & { state?: OptimizerState };
  /** LoRA: `weights` are the frozen base, these adapters train (the optimizer state is theirs). */
  lora?: EngineLora;
  /** webgpu: f16 weight storage where the adapter has shader-f16 (default); false keeps fp32 (recipe `dtype: fp32`). */
  halfStorage?: boolean;
}

/**
 * The tfjs engine: Lathe's decoder on tfjs (cpu, wasm, webgpu), in this process. Gradients
 * accumulate per parameter across forwardBackward calls; an MoE expert that no token chose in a
 * micro-batch has no gradient there, and one that none chose all step is left as it is.
 */
export class TfjsEngine implements Engine {
  readonly kind = 'tfjs' as const;
  readonly queuesSteps = true;
  /** f16 weight copies on webgpu (webgpu-half.ts), said in words; absent: fp32 storage. */
  get storage(): string | undefined {
    return halfStorage()
      ? 'f16 weight storage (the adapter has shader-f16); fp32 master weights, gradients, optimizer state and accumulation'
      : undefined;
  }
  readonly device: EngineBackend;
  private readonly model: LanguageModel;
  private readonly lora?: TfjsLora;
  private reference?: LanguageModel | 'base';
  private readonly opt?: AdamW;
  private readonly gradClip: number;
  private readonly vars: tf.Variable[];
  private readonly varNames: Map<string, string>;
  private grads?: Map<string, tf.Tensor>;
  private micro = 0;
  /** MoE on webgpu: routed fractions per layer and expert, summed over the step's micro-batches. */
  private expertUse?: tf.Tensor2D;
  /** A forwardBackward that failed since the last optimStep: that optimStep must not update. */
  private failed?: Error;

  protected constructor(o: TfjsEngineOptions) {
    this.device = o.backend;
    this.model = LanguageModel.fromWeights(o.spec, o.weights);
    if (o.lora) this.lora = new TfjsLora(this.model, o.lora, o.lora.adapters, o.lora.seed);
    // With LoRA only the adapters train (and decay, as PEFT's trainer decays them).
    const trained = this.lora?.params ?? this.model.params;
    this.gradClip = o.optimizer?.gradClip ?? 0;
    if (o.optimizer) {
      const decay = this.lora
        ? new Set(this.lora.params.keys())
        : new Set(this.model.paramSpecs.filter((p) => p.decay).map((p) => p.name));
      this.opt = new AdamW(trained, decay, o.optimizer);
      if (o.optimizer.state) restoreOptimizer(this.opt, o.optimizer.state, o.optimizer.state.step);
    }
    this.vars = [...trained.values()];
    this.varNames = new Map([...trained].map(([name, v]) => [v.name, name]));
  }

  /** Activates the backend and builds the model (and optimizer) from weights. */
  static async create(o: TfjsEngineOptions): Promise<TfjsEngine> {
    await useBackend(o.backend);
    setHalfStorage(o.halfStorage ?? true);
    return new this(o);
  }

  get spec(): ModelSpec {
    return this.model.spec;
  }

  get numParams(): number {
    return this.model.numParams;
  }

  get optimizerSteps(): number {
    return this.opt?.t ?? 0;
  }

  /** @internal The tfjs model (tests and the tfjs benchmark reach into it). */
  get languageModel(): LanguageModel {
    return this.model;
  }

  async forwardBackward(batch: EngineBatch, loss: LossSpec): Promise<LossReport> {
    if (!this.opt) throw new Error('this engine was made for inference: it has no optimizer');
    let kept: Record<string, tf.Tensor> = {};
    // DPO's 'engine' reference: computed here, before the tape, and never read back.
    const ref = loss.name === 'dpo' && loss.reference === 'engine' ? this.referenceTensor(batch, true) : undefined;
    const lossOf = () =>
      this.lora
        ? this.lora.training(this.opt!.t, this.micro, () => namedLoss(this.model, batch, loss, ref))
        : namedLoss(this.model, batch, loss, ref);
    let use: tf.Tensor2D | undefined;
    try {
      const { value, grads } = tf.variableGrads(() => {
        const l = lossOf();
        // Clones: the reported loss may be the minimised value itself, which is disposed below.
        kept = Object.fromEntries(Object.entries(l.report).map(([k, t]) => [k, tf.keep(t.clone())]));
        if (l.expertUse) use = tf.keep(l.expertUse);
        return l.total;
      }, this.vars);
      value.dispose();
      this.accumulate(grads);
    } catch (e) {
      this.failed = e as Error;
      tf.dispose(Object.values(kept));
      throw e;
    } finally {
      ref?.dispose();
    }
    if (use) {
      const prev = this.expertUse;
      this.expertUse = prev ? tf.tidy(() => tf.add(prev, use!) as tf.Tensor2D) : use;
      if (prev) tf.dispose([prev, use]);
    }
    // Everything above is queued before this first await: an optimStep called now runs after it.
    return this.checked(await readReport(kept));
  }

  async forward(batch: EngineBatch, loss: LossSpec): Promise<LossReport> {
    const ref = loss.name === 'dpo' && loss.reference === 'engine' ? this.referenceTensor(batch, true) : undefined;
    const kept = tf.tidy(() => namedLoss(this.model, batch, loss, ref).report);
    ref?.dispose();
    return this.checked(await readReport(kept));
  }

  /**
   * On webgpu, fails a call after which Dawn reported a validation error: the command buffer it
   * was in was dropped whole, so the numbers read are wrong.
   */
  private checked<T>(v: T): T {
    if (this.device !== 'webgpu') return v;
    const errors = takeWebGpuErrors();
    if (errors.length)
      throw new LatheError(
        `webgpu: ${errors.join('\n')}\n(the kernels of that submit were dropped: these numbers are wrong)`,
        1,
      );
    return v;
  }

  /** Adds one micro-batch's gradients (keyed by variable name) to the accumulated ones. */
  protected accumulate(grads: tf.NamedTensorMap): void {
    this.micro++;
    if (!this.grads) {
      this.grads = new Map(Object.entries(grads).map(([k, g]) => [this.varNames.get(k)!, g]));
      return;
    }
    for (const [k, g] of Object.entries(grads)) {
      const name = this.varNames.get(k)!;
      const prev = this.grads.get(name);
      if (!prev) {
        this.grads.set(name, g);
        continue;
      }
      this.grads.set(name, tf.add(prev, g));
      prev.dispose();
      g.dispose();
    }
  }

  async optimStep(lr: number): Promise<OptimResult> {
    if (!this.opt) throw new Error('this engine was made for inference: it has no optimizer');
    if (this.failed) {
      // Queued behind a forwardBackward that failed (queuesSteps): drop the step, update nothing.
      const cause = this.failed;
      this.failed = undefined;
      if (this.grads) tf.dispose([...this.grads.values()]);
      this.expertUse?.dispose();
      [this.grads, this.expertUse, this.micro] = [undefined, undefined, 0];
      throw new Error(`optimStep after a failed forwardBackward (${cause.message}): no update`);
    }
    if (!this.grads) throw new Error('optimStep without gradients: call forwardBackward first');
    if (this.device === 'webgpu' && gpuKernels()) return this.optimStepOnDevice(lr);
    let grads = this.grads;
    if (this.micro > 1) {
      const scale = 1 / this.micro;
      const scaled = new Map([...grads].map(([k, g]) => [k, tf.mul(g, scale)]));
      tf.dispose([...grads.values()]);
      grads = scaled;
    }
    this.grads = undefined;
    this.micro = 0;
    const norm = tf.tidy(() => tf.sqrt(tf.addN([...grads.values()].map((g) => tf.sum(tf.square(g))))));
    const gradNorm = (await norm.data())[0]!;
    norm.dispose();
    if (this.gradClip > 0 && gradNorm > this.gradClip) {
      const c = this.gradClip / gradNorm;
      for (const [k, g] of grads) {
        grads.set(k, tf.mul(g, c));
        g.dispose();
      }
    }
    const skipped = !Number.isFinite(gradNorm);
    if (!skipped) this.opt.step(grads, lr);
    tf.dispose([...grads.values()]);
    return { gradNorm, skipped };
  }

  /**
   * The step on webgpu with no read before the update: the norm, the clipping factor and the skip
   * are computed on the device, AdamW runs in place, and only then is the norm read back.
   */
  private async optimStepOnDevice(lr: number): Promise<OptimResult> {
    const grads = this.grads!;
    const micro = this.micro;
    const use = this.expertUse;
    this.grads = undefined;
    this.expertUse = undefined;
    this.micro = 0;
    const names = [...grads.keys()];
    const ctl = gpuClipControl(
      names.map((n) => grads.get(n)!),
      this.gradClip,
      1 / micro,
    );
    const experts = this.spec.experts;
    this.opt!.stepOnDevice(grads, ctl, lr, (name) => {
      const m = use && /^model\.layers\.(\d+)\.block_sparse_moe\.experts\.(\d+)\./.exec(name);
      return m ? { use: use!, index: Number(m[1]) * experts + Number(m[2]) } : undefined;
    });
    tf.dispose([...grads.values()]);
    use?.dispose();
    const [gradNorm, , skip] = (await ctl.data()) as Float32Array;
    ctl.dispose();
    const skipped = skip! > 0.5;
    if (skipped) this.opt!.undoStep();
    return this.checked({ gradNorm: gradNorm!, skipped });
  }

  async logprobs(batch: EngineBatch, opts: { reference?: boolean; sum?: boolean } = {}): Promise<Float32Array> {
    const t = opts.reference
      ? this.referenceTensor(batch, !!opts.sum)
      : this.logprobTensor(this.model, batch, !!opts.sum);
    const data = (await t.data()) as Float32Array;
    t.dispose();
    return data;
  }

  private logprobTensor(model: LanguageModel, batch: EngineBatch, sum: boolean): tf.Tensor1D {
    return tf.tidy(() => (sum ? sequenceLogProbs(model, batch) : tf.reshape(tokenLogProbs(model, batch), [-1])));
  }

  /** The reference's log-probabilities of a batch, on the device (summed per sequence, or per token). */
  private referenceTensor(batch: EngineBatch, sum: boolean): tf.Tensor1D {
    const ref = this.referenceModel();
    // The base reference is this model with its adapters switched off: no second copy of the weights.
    if (ref === 'base') return this.lora!.withoutAdapters(() => this.logprobTensor(this.model, batch, sum));
    return this.logprobTensor(ref, batch, sum);
  }

  async logits(ids: number[]): Promise<Float32Array> {
    const t = tf.tidy(() => this.model.forward(tf.tensor2d([ids], [1, ids.length], 'int32')).logits);
    const data = (await t.data()) as Float32Array;
    t.dispose();
    return data;
  }

  async decode(prompt: number[], n: number): Promise<{ logits: Float32Array; session: DecodeSession }> {
    const model = this.model;
    const cache = model.newCache();
    try {
      const first = tf.tidy(() => {
        const { logits } = model.forward(tf.tensor2d([prompt], [1, prompt.length], 'int32'), { cache, pos0: 0 });
        return tf.slice(logits, [prompt.length - 1, 0], [1, -1]);
      });
      const logits = (await first.data()) as Float32Array;
      first.dispose();
      // Prefill once, then repeat the cache along the batch axis.
      if (n > 1) {
        for (const c of cache) {
          const [k, v] = [c.k!, c.v!];
          c.k = tf.keep(tf.tile(k, [n, 1, 1, 1]));
          c.v = tf.keep(tf.tile(v, [n, 1, 1, 1]));
          k.dispose();
          v.dispose();
        }
      }
      let pos = prompt.length;
      const session: DecodeSession = {
        step: async (tokens) => {
          const t = tf.tidy(() => model.forward(tf.tensor2d(tokens, [n, 1], 'int32'), { cache, pos0: pos }).logits);
          pos++;
          const data = (await t.data()) as Float32Array;
          t.dispose();
          return data;
        },
        close: () => disposeCache(cache),
      };
      return { logits, session };
    } catch (e) {
      disposeCache(cache);
      throw e;
    }
  }

  batchDecoder(): BatchDecoder {
    const model = this.model;
    const ctx = model.spec.context;
    const rows = new Map<number, { cache: LayerCache[]; pos: number }>();
    let next = 0;
    return {
      add: async (prompt, copies = 1) => {
        if (!prompt.length) throw new Error('batchDecoder.add: the prompt is empty (start it with bos)');
        if (prompt.length > ctx)
          throw new Error(`batchDecoder.add: ${prompt.length} prompt tokens exceed the context ${ctx}`);
        const cache = model.newCache();
        try {
          const t = tf.tidy(() => {
            const { logits } = model.forward(tf.tensor2d([prompt], [1, prompt.length], 'int32'), { cache, pos0: 0 });
            return tf.slice(logits, [prompt.length - 1, 0], [1, -1]);
          });
          const logits = (await t.data()) as Float32Array;
          t.dispose();
          const ids: number[] = [];
          for (let c = 0; c < copies; c++) {
            // Cache tensors are never written in place, so copies share the prefill's data.
            const own =
              c === 0 ? cache : cache.map((l) => ({ k: tf.keep(tf.clone(l.k!)), v: tf.keep(tf.clone(l.v!)) }));
            rows.set(next, { cache: own, pos: prompt.length });
            ids.push(next++);
          }
          return { rows: ids, logits };
        } catch (e) {
          disposeCache(cache);
          throw e;
        }
      },
      step: async (ids, tokens) => {
        if (ids.length !== tokens.length)
          throw new Error(`batchDecoder.step: ${ids.length} rows but ${tokens.length} tokens`);
        const live = ids.map((id) => {
          const r = rows.get(id);
          if (!r) throw new Error(`batchDecoder.step: row ${id} is not live`);
          if (r.pos >= ctx) throw new Error(`batchDecoder.step: row ${id} is at the end of the context (${ctx})`);
          return r;
        });
        if (new Set(ids).size !== ids.length) throw new Error('batchDecoder.step: a row is named twice');
        const t = tf.tidy(() =>
          model.forwardRows(
            tokens,
            live.map((r) => r.cache),
            live.map((r) => r.pos),
          ),
        );
        for (const r of live) r.pos++;
        const data = (await t.data()) as Float32Array;
        t.dispose();
        return data;
      },
      drop: (id) => {
        const r = rows.get(id);
        if (!r) return;
        disposeCache(r.cache);
        rows.delete(id);
      },
      get size() {
        return rows.size;
      },
      close: () => {
        for (const r of rows.values()) disposeCache(r.cache);
        rows.clear();
      },
    };
  }

  private referenceModel(): LanguageModel | 'base' {
    if (!this.reference) throw new Error('no reference model: call setReference first');
    return this.reference;
  }

  async setReference(weights?: Weights | 'base'): Promise<void> {
    if (weights === 'base' && !this.lora)
      throw new Error("setReference('base') needs LoRA adapters to switch off; this engine has none");
    const w = weights === 'base' ? 'base' : (weights ?? (await this.weights()));
    if (this.reference !== 'base') this.reference?.dispose();
    this.reference = w === 'base' ? 'base' : LanguageModel.fromWeights(this.model.spec, w);
  }

  async weights(): Promise<Weights> {
    if (!this.lora) return this.model.weights();
    return mergeAdapters(this.model.spec, await this.lora.baseWeights(), await this.lora.adapters(), this.lora.cfg);
  }

  async adapters(): Promise<Weights | undefined> {
    return this.lora?.adapters();
  }

  async memory(): Promise<EngineMemory> {
    const held = this.lora?.heldBytes() ?? { base: this.model.numParams * 4, adapters: 0 };
    const optimizer = this.opt ? 2 * this.vars.reduce((a, v) => a + v.size * 4, 0) : 0;
    return { weights: held.base, adapters: held.adapters, optimizer, device: tf.memory().numBytes };
  }

  async optimizerState(): Promise<OptimizerState | undefined> {
    if (!this.opt) return undefined;
    return { ...(await this.opt.moments()), step: this.opt.t };
  }

  async saveTensors(dir: string): Promise<void> {
    const state = await this.optimizerState();
    const moments = state && { m: state.m, v: state.v };
    if (this.lora) await writeAdapterFiles(dir, await this.lora.adapters(), moments);
    else await writeTensorFiles(dir, await this.weights(), moments);
  }

  async dispose(): Promise<void> {
    if (this.grads) tf.dispose([...this.grads.values()]);
    this.expertUse?.dispose();
    this.expertUse = undefined;
    this.grads = undefined;
    this.opt?.dispose();
    if (this.reference !== 'base') this.reference?.dispose();
    this.lora?.dispose();
    this.model.dispose();
  }
}

/** Reads reported tensors (scalars as numbers, vectors as arrays) and frees them. */
async function readReport(kept: Record<string, tf.Tensor>): Promise<LossReport> {
  const values: Record<string, number | number[]> = {};
  try {
    const entries = Object.entries(kept);
    if (tf.getBackend() === 'webgpu' && entries.length > 1) {
      // One read back from the GPU rather than one per value.
      const packed = tf.tidy(() => tf.concat(entries.map(([, t]) => tf.reshape(t, [-1]))));
      const d = await packed.data();
      packed.dispose();
      let o = 0;
      for (const [k, t] of entries) {
        values[k] = t.rank === 0 ? d[o]! : Array.from(d.subarray(o, o + t.size));
        o += t.size;
      }
    } else {
      for (const [k, t] of entries) {
        const d = await t.data();
        values[k] = t.rank === 0 ? d[0]! : Array.from(d);
      }
    }
  } finally {
    tf.dispose(Object.values(kept));
  }
  const { loss, ...rest } = values;
  return { loss: loss as number, values: rest };
}
