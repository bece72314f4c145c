import { closeSync, openSync, readSync, statSync } from 'node:fs';
import { LatheError } from '../errors.js';
import { Rng } from '../random.js';
import type { PreparedSource } from './prepare.js';

/** A batch of token windows: inputs and next-token targets [B, T]; weights mask the loss (1 = counted). */
export interface TokenBatch {
  inputs: Int32Array;
  targets: Int32Array;
  weights?: Float32Array;
  batch: number;
  seq: number;
}

// Mixing and packing. Each source's token file (documents joined as bos…eos) is cut into windows of
// seq+1 tokens at stride seq; each epoch visits a source's windows in a seeded permutation. Which
// source fills a row comes from an RNG derived from (seed, step, micro-batch, row), so the only
// state to checkpoint is each source's (epoch, position).

/** Where each source's reader stands: the checkpointed data position. */
export interface SamplerState {
  sources: { epoch: number; index: number }[];
}

/** FIM special tokens. */
export interface FimTokens {
  prefix: number;
  suffix: number;
  middle: number;
}

class WindowFile {
  readonly windows: number;
  private fd: number;
  private perm?: Uint32Array;
  private permEpoch = -1;

  constructor(
    readonly path: string,
    private readonly seq: number,
    private readonly seed: number,
    private readonly sourceIndex: number,
    private readonly width: 2 | 4 = 2,
  ) {
    const tokens = statSync(path).size / width;
    this.windows = tokens > seq ? Math.floor((tokens - 1) / seq) : 0;
    this.fd = openSync(path, 'r');
  }

  /** Window w of this file: tokens [w*seq, w*seq+seq+1). */
  read(w: number, into: Uint16Array | Uint32Array): void {
    const bytes = readSync(this.fd, into, 0, into.byteLength, w * this.seq * this.width);
    if (bytes !== into.byteLength) throw new Error(`${this.path}: short read at window ${w}`);
  }

  /** The window shown at position `index` of epoch `epoch`. */
  permuted(epoch: number, index: number): number {
    if (this.permEpoch !== epoch) {
      const n = this.windows;
      const perm = this.perm && this.perm.length === n ? this.perm : new Uint32Array(n);
      for (let i = 0; i < n; i++) perm[i] = i;
      const rng = Rng.derive(this.seed, 0x5eed, this.sourceIndex, epoch);
      for (let i = n - 1; i > 0; i--) {
        const j = rng.int(i + 1);
        const t = perm[i]!;
        perm[i] = perm[j]!;
        perm[j] = t;
      }
      this.perm = perm;
      this.permEpoch = epoch;
    }
    return this.perm![index]!;
  }

  close(): void {
    closeSync(this.fd);
  }
}

/** Draws training batches from prepared sources by weight, deterministically, and restorably. */
export class BatchSampler {
  private files: WindowFile[];
  private cum: number[];
  private state: SamplerState;
  private scratch: Uint16Array | Uint32Array;

  constructor(
    sources: PreparedSource[],
    private readonly o: { seq: number; batch: number; seed: number; fimRate?: number; fim?: FimTokens },
    state?: SamplerState,
  ) {
    this.files = sources.map((s, i) => new WindowFile(s.train, o.seq, o.seed, i, s.tokenBytes));
    const usable = sources.map((s, i) => (this.files[i]!.windows > 0 ? s.weight : 0));
    const total = usable.reduce((a, b) => a + b, 0);
    if (total <= 0) {
      const need = o.seq + 1;
      throw new LatheError(
        `data: no source has enough tokens for one training sequence of ${need} tokens; add data or lower model.context`,
      );
    }
    let acc = 0;
    this.cum = usable.map((w) => (acc += w / total));
    this.state = state ? structuredClone(state) : { sources: sources.map(() => ({ epoch: 0, index: 0 })) };
    this.scratch = sources.some((s) => s.tokenBytes === 4) ? new Uint32Array(o.seq + 1) : new Uint16Array(o.seq + 1);
  }

  /** The data position, to store in a checkpoint. */
  get position(): SamplerState {
    return structuredClone(this.state);
  }

  /** Epochs started per source so far (fractional). */
  epochs(): number[] {
    return this.state.sources.map((s, i) => (this.files[i]!.windows ? s.epoch + s.index / this.files[i]!.windows : 0));
  }

  /** The micro-batch for a (1-based) step and micro-batch index. */
  next(step: number, micro: number): TokenBatch {
    const { seq, batch, seed } = this.o;
    const inputs = new Int32Array(batch * seq);
    const targets = new Int32Array(batch * seq);
    const rng = Rng.derive(seed, step, micro);
    for (let row = 0; row < batch; row++) {
      const u = rng.next();
      let s = this.cum.findIndex((c) => u < c);
      if (s < 0) s = this.cum.length - 1;
      const f = this.files[s]!;
      const st = this.state.sources[s]!;
      f.read(f.permuted(st.epoch, st.index), this.scratch);
      if (++st.index >= f.windows) {
        st.index = 0;
        st.epoch++;
      }
      let w: ArrayLike<number> = this.scratch;
      if (this.o.fimRate && this.o.fim && rng.next() < this.o.fimRate) w = toFim(this.scratch, this.o.fim, rng);
      for (let t = 0; t < seq; t++) {
        inputs[row * seq + t] = w[t]!;
        targets[row * seq + t] = w[t + 1]!;
      }
    }
    return { inputs, targets, batch, seq };
  }

  close(): void {
    for (const f of this.files) f.close();
  }
}

/**
 * Fill-in-the-middle (PSM order): the window's content is cut at two random points into
 * prefix, middle and suffix, and laid out as <fim_prefix> p <fim_suffix> s <fim_middle> m,
 * so the model learns to fill a gap from both sides. Same length as the input window.
 */
export function toFim(window: ArrayLike<number>, fim: FimTokens, rng: Rng): Int32Array {
  const n = window.length;
  const content = Array.from({ length: n - 3 }, (_, i) => window[i]!);
  let a = rng.int(content.length + 1);
  let b = rng.int(content.length + 1);
  if (a > b) [a, b] = [b, a];
  return Int32Array.from([
    fim.prefix,
    ...content.slice(0, a),
    fim.suffix,
    ...content.slice(b),
    fim.middle,
    ...content.slice(a, b),
  ]);
}

/** Fixed held-out batches: the first windows of every source's validation tokens, in order. */
export function evalBatches(sources: PreparedSource[], o: { seq: number; batch: number; count: number }): TokenBatch[] {
  const width = sources.some((s) => s.tokenBytes === 4) ? 4 : 2;
  const files = sources
    .map((s) => ({ path: s.val, windows: Math.max(0, Math.floor((statSync(s.val).size / width - 1) / o.seq)) }))
    .filter((f) => f.windows > 0);
  const out: TokenBatch[] = [];
  if (!files.length) return out;
  const fds = files.map((f) => openSync(f.path, 'r'));
  const buf = width === 4 ? new Uint32Array(o.seq + 1) : new Uint16Array(o.seq + 1);
  const next = files.map(() => 0);
  try {
    let turn = 0;
    for (let b = 0; b < o.count; b++) {
      const inputs = new Int32Array(o.batch * o.seq);
      const targets = new Int32Array(o.batch * o.seq);
      for (let row = 0; row < o.batch; row++) {
        // Round-robin over sources, wrapping when a source's held-out data runs out.
        const f = turn++ % files.length;
        const w = next[f]! % files[f]!.windows;
        next[f]!++;
        readSync(fds[f]!, buf, 0, buf.byteLength, w * o.seq * width);
        for (let t = 0; t < o.seq; t++) {
          inputs[row * o.seq + t] = buf[t]!;
          targets[row * o.seq + t] = buf[t + 1]!;
        }
      }
      out.push({ inputs, targets, batch: o.batch, seq: o.seq });
    }
  } finally {
    for (const fd of fds) closeSync(fd);
  }
  return out;
}
