import type { SamplerState, TokenBatch } from '../data/batches.js';
import { Rng } from '../random.js';

// Batches of the post-training stages: prompt + completion sequences, and a restorable example order.

/** Sequences of prompt + completion as a batch, with the completion's target positions marked. */
export interface SeqBatch extends TokenBatch {
  /** 1 where the target is a completion token. */
  weights: Float32Array;
}

/** Packs (prompt, completion) pairs into a right-padded batch; T = the longest sequence minus one. */
export function seqBatch(seqs: { prompt: number[]; completion: number[] }[], pad: number): SeqBatch {
  const batch = seqs.length;
  const seq = Math.max(1, ...seqs.map((s) => s.prompt.length + s.completion.length - 1));
  const inputs = new Int32Array(batch * seq).fill(pad);
  const targets = new Int32Array(batch * seq).fill(pad);
  const weights = new Float32Array(batch * seq);
  seqs.forEach((s, b) => {
    const ids = [...s.prompt, ...s.completion];
    for (let t = 0; t + 1 < ids.length; t++) {
      inputs[b * seq + t] = ids[t]!;
      targets[b * seq + t] = ids[t + 1]!;
      if (t + 1 >= s.prompt.length) weights[b * seq + t] = 1;
    }
  });
  return { inputs, targets, weights, batch, seq };
}

/** A seeded, restorable order over n examples: a fresh permutation each epoch; the state is (epoch, index). */
export class ExampleOrder {
  private state: { epoch: number; index: number };
  private perm?: Uint32Array;
  private permEpoch = -1;

  constructor(
    private readonly n: number,
    private readonly seed: number,
    private readonly salt: number,
    state?: SamplerState,
  ) {
    if (n <= 0) throw new Error('ExampleOrder needs at least one example');
    this.state = state?.sources[0] ? { ...state.sources[0] } : { epoch: 0, index: 0 };
  }

  get position(): SamplerState {
    return { sources: [{ ...this.state }] };
  }

  /** Epochs so far (fractional). */
  epochs(): number {
    return this.state.epoch + this.state.index / this.n;
  }

  /** The next k example indices. */
  take(k: number): number[] {
    const out: number[] = [];
    for (let i = 0; i < k; i++) {
      if (this.permEpoch !== this.state.epoch) {
        const perm = this.perm ?? new Uint32Array(this.n);
        for (let j = 0; j < this.n; j++) perm[j] = j;
        const rng = Rng.derive(this.seed, this.salt, this.state.epoch);
        for (let j = this.n - 1; j > 0; j--) {
          const r = rng.int(j + 1);
          const t = perm[j]!;
          perm[j] = perm[r]!;
          perm[r] = t;
        }
        this.perm = perm;
        this.permEpoch = this.state.epoch;
      }
      out.push(this.perm![this.state.index]!);
      if (++this.state.index >= this.n) {
        this.state.index = 0;
        this.state.epoch++;
      }
    }
    return out;
  }
}
