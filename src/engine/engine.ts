import type { TokenBatch } from '../data/batches.js';
import { LatheError } from '../errors.js';
import type { LoraConfig } from '../model/lora.js';
import type { ModelSpec } from '../model/spec.js';
import type { Weights } from '../model/weights.js';

// The engine seam. Stages own the algorithm (batches, advantages, pairing, schedules, logging,
// eval, checkpoints); an engine owns tensors: the weights and optimizer state, gradients, a small
// fixed set of named losses, and decoding with a KV cache. The primitives follow Tinker's training
// API: forward_backward with a named loss, optim_step, sample, save/load state.
//
// Calls are queued in call order. An engine starts a call's work when it is called and resolves the
// promise when the values it returns are read, so a stage may issue every micro-batch before it
// awaits the first report.

/**
 * The engine's process (or one of its ranks) is gone: killed, crashed, hung past its timeout. What
 * it held is lost; a run can resume from its last checkpoint (resources.restarts does it at once).
 */
export class EngineLost extends LatheError {}

/** Which engine runs the numerics. */
export type EngineKind = 'tfjs' | 'torch';

/**
 * A batch of B sequences of T tokens: inputs and next-token targets, row-major [B*T]. `weights`
 * weighs each target (1 = counted): the loss mask of cross-entropy, and the completion mask of the
 * sequence losses (DPO, policy gradient).
 */
export type EngineBatch = TokenBatch;

/** Token cross-entropy with per-token weights (pretrain, FIM, SFT), plus the MoE auxiliary losses. */
export interface CrossEntropyLoss {
  name: 'cross_entropy';
  /** Also report the share of counted targets predicted exactly (argmax). */
  accuracy?: boolean;
}

/**
 * DPO's sigmoid loss over a batch of 2n sequences (n chosen, then n rejected), given the frozen
 * reference's summed completion log-probabilities of the same 2n sequences.
 */
export interface DpoLoss {
  name: 'dpo';
  pairs: number;
  /**
   * Reference sequence log-probabilities [2n], or 'engine': the engine computes them from its
   * reference (`setReference`) itself; the tfjs engine does so on its device, with no read back.
   */
  reference: Float32Array | 'engine';
  beta: number;
  /** Conservative DPO's ε (0: plain DPO). */
  labelSmoothing: number;
}

/**
 * GRPO's clipped policy gradient with a KL term (k3 estimator) to the reference, per token, masked
 * by the batch weights, averaged per sequence, then over valid sequences.
 */
export interface PolicyGradientLoss {
  name: 'policy_gradient';
  /** Advantage per sequence [B]. */
  advantages: Float32Array;
  /** 1 for sequences whose reward is valid, 0 to leave one out [B]. */
  valid: Float32Array;
  /** The sampling policy's per-token log-probabilities [B*T]. */
  old: Float32Array;
  /** The reference's per-token log-probabilities [B*T] (absent: no KL term). */
  reference?: Float32Array;
  clipEpsilon: number;
  /** KL weight. */
  beta: number;
}

/** The named losses every engine implements. */
export type LossSpec = CrossEntropyLoss | DpoLoss | PolicyGradientLoss;

/**
 * What a loss reports for one batch. `loss` is the reported loss (cross-entropy without the MoE
 * terms); `values` holds the loss's other scalars and vectors, named as they appear in metrics:
 * - cross_entropy: `aux_loss`, `z_loss`, `expert_util` (MoE), `accuracy` (when asked);
 * - dpo: `rewards/chosen`, `rewards/rejected`, `rewards/margins`, `rewards/accuracies`,
 *   `logps/chosen`, `logps/rejected`;
 * - policy_gradient: `kl`, `clip_ratio`.
 */
export interface LossReport {
  loss: number;
  values: Record<string, number | number[]>;
}

/** What one rank of a multi-rank engine did since the previous optimizer step. */
export interface RankWork {
  rank: number;
  host: string;
  /** Tokens of its shards, and the seconds its forward and backward passes took. */
  tokens: number;
  seconds: number;
}

/** The result of an optimizer step. */
export interface OptimResult {
  /** Global gradient norm before clipping (over the accumulated, averaged gradients). */
  gradNorm: number;
  /** True when the norm was not finite: no weight or moment changed. */
  skipped: boolean;
  /** Several ranks: each one's work in this step (stragglers show here). */
  ranks?: RankWork[];
}

/** AdamW hyper-parameters and clipping; the learning rate comes with each step. */
export interface OptimizerConfig {
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
  /** Clip the global gradient norm to this; 0 disables. */
  gradClip: number;
}

/** Optimizer state as a checkpoint holds it. */
export interface OptimizerState {
  m: Weights;
  v: Weights;
  /** Completed optimizer steps (bias correction uses it). */
  step: number;
}

/**
 * LoRA on an engine: the engine's weights are the frozen base (held quantized with `quantize`), and
 * only these adapters train; the optimizer state, checkpoints and `adapters()` are theirs.
 */
export interface EngineLora extends LoraConfig {
  /** The adapters to start from (initial ones from src/model/lora.ts, or a checkpoint's). */
  adapters: Weights;
  /** Seeds the adapter dropout masks (with the optimizer step and micro-batch). */
  seed: number;
}

/** Bytes an engine holds, by part. */
export interface EngineMemory {
  /** The model's weights (with LoRA: the frozen base, as held: float32, or int8 values and scales). */
  weights: number;
  /** LoRA adapters (0 without). */
  adapters: number;
  /** Optimizer state: AdamW's two moments of what trains. */
  optimizer: number;
  /** Everything the engine's device holds now (tfjs: tf.memory(); torch: allocated tensor bytes). */
  device: number;
}

/** A KV-cached decode of n rows that share one prompt. */
export interface DecodeSession {
  /** Appends one token to every row and returns the next-token logits [n * V]. */
  step(tokens: Int32Array): Promise<Float32Array>;
  /** Frees the cache. */
  close(): void;
}

/**
 * A KV-cached decode of rows with different prompts, each at its own position: continuous batching.
 * Rows join with their prompt (prefilled on its own), then every step advances the rows it names in
 * one forward pass, and a finished row leaves without disturbing the others.
 */
export interface BatchDecoder {
  /**
   * Prefills `prompt` into `copies` new rows (default 1) that share it; returns their ids and the
   * next-token logits after the prompt [V] (the same for every copy).
   */
  add(prompt: number[], copies?: number): Promise<{ rows: number[]; logits: Float32Array }>;
  /** Appends tokens[i] to rows[i] (distinct live rows), all in one forward; returns their next-token logits [rows.length * V]. */
  step(rows: readonly number[], tokens: Int32Array): Promise<Float32Array>;
  /** Frees a row's cache (an unknown or dropped row is ignored). */
  drop(row: number): void;
  /** Rows holding a cache now. */
  readonly size: number;
  /** Frees every row. */
  close(): void;
}

/** The training and inference primitives under every stage. */
export interface Engine {
  readonly kind: EngineKind;
  /** Where the numerics run: a tfjs backend (cpu, wasm, webgpu) or a torch device (cpu, cuda). */
  readonly device: string;
  readonly spec: ModelSpec;
  readonly numParams: number;
  /** Completed optimizer steps (skipped ones not counted). */
  readonly optimizerSteps: number;
  /** Several ranks: each one's pid and host (absent for one process). */
  readonly ranks?: readonly { rank: number; pid: number; host: string }[];

  /**
   * optimStep may be called before the step's forwardBackward reports are read: the calls run in call
   * order, and an optimStep queued behind a forwardBackward that failed throws without an update. A
   * GPU then runs the whole step without waiting on the host inside it (see train/loop.ts stepOn).
   */
  readonly queuesSteps?: boolean;
  /** Storage narrower than fp32 the engine chose by itself, in words (webgpu's f16 weight copies); absent: fp32. */
  readonly storage?: string;

  /** Forward and backward pass of a named loss; adds the gradients to those accumulated since the last step. */
  forwardBackward(batch: EngineBatch, loss: LossSpec): Promise<LossReport>;
  /** The loss report of a batch without gradients (evaluation). */
  forward(batch: EngineBatch, loss: LossSpec): Promise<LossReport>;
  /**
   * One AdamW step on the gradients accumulated since the last step, averaged over the
   * forwardBackward calls: global-norm clipping, then the update; gradients are zeroed. A non-finite
   * norm skips the update (reported, not thrown).
   */
  optimStep(lr: number): Promise<OptimResult>;
  /**
   * Per-token log-probabilities of the targets [B*T], or with `sum` the weighted sum per sequence
   * [B], without gradients; `reference` asks the frozen reference instead of the trained weights.
   */
  logprobs(batch: EngineBatch, opts?: { reference?: boolean; sum?: boolean }): Promise<Float32Array>;
  /** Next-token logits at every position of one sequence [T * V], without gradients. */
  logits(ids: number[]): Promise<Float32Array>;
  /** Starts decoding `n` rows from one prompt: returns the logits after the prompt [V] and the session. */
  decode(prompt: number[], n: number): Promise<{ logits: Float32Array; session: DecodeSession }>;
  /** A decoder for rows with different prompts and positions (serving, judging many outputs at once). */
  batchDecoder(): BatchDecoder;
  /**
   * Freezes a reference model for `logprobs({ reference })`: these weights, a copy of the current
   * ones, or `'base'`: with LoRA, the frozen base with the adapters switched off (no second copy).
   */
  setReference(weights?: Weights | 'base'): Promise<void>;
  /** The trained weights, by HF name (with LoRA: the base with the adapters merged in). */
  weights(): Promise<Weights>;
  /** The LoRA adapters by name (`<module>.lora_A.weight`, `<module>.lora_B.weight`); undefined without LoRA. */
  adapters(): Promise<Weights | undefined>;
  /** What the engine holds in memory, by part. */
  memory(): Promise<EngineMemory>;
  /** The optimizer state (undefined for an engine made without an optimizer). */
  optimizerState(): Promise<OptimizerState | undefined>;
  /**
   * Writes model.safetensors (with LoRA: adapter.safetensors instead), and optimizer.safetensors
   * when there is an optimizer, into `dir`.
   */
  saveTensors(dir: string): Promise<void>;
  /** Frees everything the engine holds. */
  dispose(): Promise<void>;
}
