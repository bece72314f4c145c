import { loraScale, loraSites, type LoraConfig, type LoraSite } from '../../model/lora.js';
import { isLinearProjection, quantizeRows } from '../../model/quantize.js';
import type { Weights } from '../../model/weights.js';
import { Rng } from '../../random.js';
import { frozenLinear, hookLinear, linear } from './layers.js';
import type { LanguageModel } from './model.js';
import { tf } from './tf.js';

// LoRA on the tfjs engine (the formula: src/model/lora.ts). The model code is untouched: every
// matrix of the frozen base gets a linear() hook (layers.ts). A targeted projection computes
// frozen(x W^T) + scale · dropout(x) A^T B^T; every other matrix (the rest of the projections, the
// head, the MoE router) computes x W^T with no weight gradient, which is where LoRA saves its time.
// With `quantize: 'int8'` (QLoRA) the projections' weights are held as int8 rows with a float32
// scale each: the model keeps a one-value placeholder, and each product dequantizes W for itself
// (and again in the backward pass), so no float copy of the base lives between products.

/** A projection held as int8: values per row, one float32 scale per row. */
interface Int8Weight {
  q: Int8Array;
  scales: Float32Array;
  rows: number;
  cols: number;
}

function dequantize(w: Int8Weight, transposed: boolean): tf.Tensor2D {
  const { q, scales, rows, cols } = w;
  const out = new Float32Array(rows * cols);
  if (!transposed) {
    for (let r = 0; r < rows; r++) {
      const s = scales[r]!;
      for (let c = 0, i = r * cols; c < cols; c++, i++) out[i] = q[i]! * s;
    }
    return tf.tensor2d(out, [rows, cols]);
  }
  for (let r = 0; r < rows; r++) {
    const s = scales[r]!;
    for (let c = 0, i = r * cols; c < cols; c++, i++) out[c * rows + r] = q[i]! * s;
  }
  return tf.tensor2d(out, [cols, rows]);
}

/** Bytes the engine holds, by part (the figures QLoRA and the bench report). */
export interface HeldBytes {
  /** The frozen base: float32 tensors, plus int8 values and their scales. */
  base: number;
  adapters: number;
}

/** The adapters of one tfjs model, and the hooks that apply them. */
export class TfjsLora {
  /** The adapter variables by name (`<module>.lora_A.weight`, `<module>.lora_B.weight`). */
  readonly params = new Map<string, tf.Variable>();
  readonly cfg: LoraConfig;
  private readonly sites: LoraSite[];
  private readonly int8 = new Map<string, Int8Weight>();
  private readonly hooked: tf.Tensor[] = [];
  private enabled = true;
  /** Set while a training forward pass runs: dropout masks come from this seed. */
  private dropoutSeed?: number;

  constructor(
    private readonly model: LanguageModel,
    cfg: LoraConfig,
    adapters: Weights,
    private readonly seed: number,
  ) {
    this.cfg = cfg;
    this.sites = loraSites(model.spec, cfg.targets);
    if (cfg.quantize === 'nf4')
      throw new Error('train.lora.quantize nf4 runs on the torch engine on CUDA (bitsandbytes); use int8 on tfjs');
    const p = model.params;
    if (cfg.quantize === 'int8') {
      for (const [name, v] of [...p]) {
        if (!isLinearProjection(name) || v.rank !== 2) continue;
        const [rows, cols] = v.shape as [number, number];
        const { q, scales } = quantizeRows(v.dataSync() as Float32Array, rows, cols);
        this.int8.set(name, { q, scales, rows, cols });
        p.set(name, tf.variable(tf.zeros([1]), false, `${name}.int8`));
        v.dispose();
      }
    }
    for (const s of this.sites) {
      for (const n of [s.a, s.b]) {
        const w = adapters.get(n);
        if (!w) throw new Error(`LoRA adapter ${n} is missing`);
        this.params.set(
          n,
          tf.tidy(() => tf.variable(tf.tensor(w.data, w.shape), true)),
        );
      }
    }
    const siteOf = new Map(this.sites.map((s, i) => [s.weight, { s, i }]));
    const scale = loraScale(cfg);
    for (const [name, v] of p) {
      if (v.rank !== 2 && !this.int8.has(name)) continue;
      const q = this.int8.get(name);
      const base = q ? (t: boolean) => dequantize(q, t) : (v as tf.Variable as tf.Tensor2D);
      const site = siteOf.get(name);
      if (!site) {
        hookLinear(v, (x) => frozenLinear(x, base));
      } else {
        const a = this.params.get(site.s.a)!;
        const b = this.params.get(site.s.b)!;
        hookLinear(v, (x) => {
          const y = frozenLinear(x, base);
          if (!this.enabled) return y;
          const xd =
            this.dropoutSeed !== undefined && cfg.dropout > 0
              ? (tf.dropout(x, cfg.dropout, undefined, Rng.derive(this.dropoutSeed, site.i).nextU32()) as tf.Tensor2D)
              : x;
          // The scale goes on the rank-r product, the smallest tensor on the path.
          return tf.add(y, linear(tf.mul(linear(xd, a), scale) as tf.Tensor2D, b)) as tf.Tensor2D;
        });
      }
      this.hooked.push(v);
    }
  }

  /** Runs f with the adapters switched off: the frozen base alone (the reference of DPO and GRPO). */
  withoutAdapters<T>(f: () => T): T {
    this.enabled = false;
    try {
      return f();
    } finally {
      this.enabled = true;
    }
  }

  /** Runs a training forward pass: dropout on, its masks seeded by (seed, optimizer step, micro-batch). */
  training<T>(step: number, micro: number, f: () => T): T {
    this.dropoutSeed = Rng.derive(this.seed, 0xd20, step, micro).nextU32();
    try {
      return f();
    } finally {
      this.dropoutSeed = undefined;
    }
  }

  /** The adapters as plain arrays, by name. */
  async adapters(): Promise<Weights> {
    const out: Weights = new Map();
    for (const [name, v] of this.params)
      out.set(name, { shape: v.shape.slice(), data: (await v.data()) as Float32Array });
    return out;
  }

  /** The base's weights by HF name, as float32 (int8 projections dequantized). */
  async baseWeights(): Promise<Weights> {
    const out: Weights = new Map();
    for (const [name, v] of this.model.params) {
      const q = this.int8.get(name);
      if (q) {
        const t = dequantize(q, false);
        out.set(name, { shape: [q.rows, q.cols], data: (await t.data()) as Float32Array });
        t.dispose();
      } else out.set(name, { shape: v.shape.slice(), data: (await v.data()) as Float32Array });
    }
    return out;
  }

  /** Bytes held by the base (float32 tensors, int8 values and scales) and by the adapters. */
  heldBytes(): HeldBytes {
    let base = 0;
    for (const [name, v] of this.model.params) if (!this.int8.has(name)) base += v.size * 4;
    for (const q of this.int8.values()) base += q.q.byteLength + q.scales.byteLength;
    let adapters = 0;
    for (const v of this.params.values()) adapters += v.size * 4;
    return { base, adapters };
  }

  /** Removes the hooks and frees the adapters (the model is the caller's). */
  dispose(): void {
    for (const w of this.hooked) hookLinear(w, undefined);
    for (const v of this.params.values()) v.dispose();
  }
}
