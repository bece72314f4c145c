import { releaseHalfCopies } from './webgpu-half.js';
import { tf } from './tf.js';
import { initWeights, type Weights } from '../../model/weights.js';
import { denseFfn } from './dense.js';
import {
  attention,
  attentionRows,
  embed,
  linear,
  param,
  releaseTransposedWeights,
  rmsNorm,
  ropeTables,
  type AttentionWeights,
  type LayerCache,
  type Params,
} from './layers.js';
import { moeFfn, type RouterStats } from './moe.js';
import { isMoeLayer, paramSpecsOf, windowed, type ModelSpec, type ParamSpec } from '../../model/spec.js';

/** Output of a forward pass. */
export interface ForwardResult {
  /** Next-token logits [B*T, V]. */
  logits: tf.Tensor2D;
  /** MoE router statistics per layer (empty for dense). */
  router: RouterStats[];
}

/** A decoder-only language model (Llama-style dense, or Mixtral-style MoE) with HF parameter names. */
export class LanguageModel {
  readonly spec: ModelSpec;
  readonly params: Params;
  readonly paramSpecs: ParamSpec[];
  private rope: { cos: tf.Tensor2D; sin: tf.Tensor2D };

  private constructor(spec: ModelSpec, params: Params) {
    this.spec = spec;
    this.params = params;
    this.paramSpecs = paramSpecsOf(spec);
    this.rope = tf.tidy(() => {
      const r = ropeTables(spec.context, spec.headDim, spec.ropeTheta, spec.ropeScaling);
      return { cos: tf.keep(r.cos), sin: tf.keep(r.sin) };
    });
  }

  /** A freshly initialised model; the same spec and seed give the same weights on every backend. */
  static init(spec: ModelSpec, seed: number): LanguageModel {
    return LanguageModel.fromWeights(spec, initWeights(spec, seed));
  }

  /** A model from named weights (a checkpoint or an HF import); every expected name must be present. */
  static fromWeights(spec: ModelSpec, weights: Weights): LanguageModel {
    const params: Params = new Map();
    for (const ps of paramSpecsOf(spec)) {
      const w = weights.get(ps.name);
      if (!w) throw new Error(`weights lack ${ps.name}`);
      if (w.shape.join(',') !== ps.shape.join(','))
        throw new Error(`${ps.name}: shape [${w.shape}] does not match the model's [${ps.shape}]`);
      params.set(
        ps.name,
        tf.tidy(() => tf.variable(tf.tensor(w.data, ps.shape), true)),
      );
    }
    return new LanguageModel(spec, params);
  }

  /** Number of parameters. */
  get numParams(): number {
    return this.paramSpecs.reduce((a, p) => a + p.shape.reduce((x, y) => x * y, 1), 0);
  }

  /** Forward pass over ids [B, T] starting at absolute position pos0 (non-zero only with a cache). */
  forward(ids: tf.Tensor2D, opts: { cache?: LayerCache[]; pos0?: number } = {}): ForwardResult {
    const s = this.spec;
    const [batch, seq] = ids.shape;
    const pos0 = opts.pos0 ?? 0;
    const p = this.params;
    let h = embed(param(p, 'model.embed_tokens.weight'), tf.reshape(ids, [-1]) as tf.Tensor1D);
    const router: RouterStats[] = [];
    for (let i = 0; i < s.layers; i++) {
      const l = `model.layers.${i}`;
      const a = attention(
        rmsNorm(h, param(p, `${l}.input_layernorm.weight`), s.normEps),
        batch,
        seq,
        this.attentionWeights(i),
        s,
        this.rope,
        pos0,
        opts.cache?.[i],
        windowed(s, i) ? s.slidingWindow : undefined,
      );
      h = tf.add(h, a);
      const x = rmsNorm(h, param(p, `${l}.post_attention_layernorm.weight`), s.normEps);
      if (isMoeLayer(s, i)) {
        const { y, stats } = moeFfn(p, s, i, x);
        router.push(stats);
        h = tf.add(h, y);
      } else {
        h = tf.add(h, denseFfn(p, i, x));
      }
    }
    h = rmsNorm(h, param(p, 'model.norm.weight'), s.normEps);
    const head = s.tieEmbeddings ? param(p, 'model.embed_tokens.weight') : param(p, 'lm_head.weight');
    return { logits: linear(h, head), router };
  }

  /**
   * One new token per row, each row with its own KV cache and position (continuous batching):
   * tokens [B], caches[r] row r's per-layer cache, positions[r] the absolute position of its token.
   * Returns next-token logits [B, V] and appends to every row's cache.
   */
  forwardRows(tokens: Int32Array, caches: LayerCache[][], positions: readonly number[]): tf.Tensor2D {
    const s = this.spec;
    const p = this.params;
    const pos = tf.tensor1d(Int32Array.from(positions), 'int32');
    let h = embed(param(p, 'model.embed_tokens.weight'), tf.tensor1d(tokens, 'int32'));
    for (let i = 0; i < s.layers; i++) {
      const l = `model.layers.${i}`;
      const a = attentionRows(
        rmsNorm(h, param(p, `${l}.input_layernorm.weight`), s.normEps),
        this.attentionWeights(i),
        s,
        this.rope,
        pos,
        caches.map((c) => c[i]!),
        windowed(s, i) ? s.slidingWindow : undefined,
      );
      h = tf.add(h, a);
      const x = rmsNorm(h, param(p, `${l}.post_attention_layernorm.weight`), s.normEps);
      h = tf.add(h, isMoeLayer(s, i) ? moeFfn(p, s, i, x).y : denseFfn(p, i, x));
    }
    h = rmsNorm(h, param(p, 'model.norm.weight'), s.normEps);
    const head = s.tieEmbeddings ? param(p, 'model.embed_tokens.weight') : param(p, 'lm_head.weight');
    return linear(h, head);
  }

  /** Layer i's attention weights. */
  private attentionWeights(i: number): AttentionWeights {
    const p = this.params;
    const l = `model.layers.${i}`;
    return {
      q: param(p, `${l}.self_attn.q_proj.weight`),
      k: param(p, `${l}.self_attn.k_proj.weight`),
      v: param(p, `${l}.self_attn.v_proj.weight`),
      o: param(p, `${l}.self_attn.o_proj.weight`),
      // Absent for Lathe's own decoder: biases (Qwen2, attention_bias) and q/k norms (Qwen3).
      qBias: p.get(`${l}.self_attn.q_proj.bias`),
      kBias: p.get(`${l}.self_attn.k_proj.bias`),
      vBias: p.get(`${l}.self_attn.v_proj.bias`),
      oBias: p.get(`${l}.self_attn.o_proj.bias`),
      qNorm: p.get(`${l}.self_attn.q_norm.weight`),
      kNorm: p.get(`${l}.self_attn.k_norm.weight`),
    };
  }

  /** A fresh, empty KV cache for generation. */
  newCache(): LayerCache[] {
    return Array.from({ length: this.spec.layers }, () => ({}));
  }

  /** Weights as plain arrays, keyed by HF name. */
  async weights(): Promise<Map<string, { shape: number[]; data: Float32Array }>> {
    const out = new Map<string, { shape: number[]; data: Float32Array }>();
    for (const [name, v] of this.params)
      out.set(name, { shape: v.shape.slice(), data: (await v.data()) as Float32Array });
    return out;
  }

  /** Frees the weights and tables. */
  dispose(): void {
    releaseTransposedWeights(this.params.values());
    releaseHalfCopies(this.params.values());
    for (const v of this.params.values()) v.dispose();
    this.rope.cos.dispose();
    this.rope.sin.dispose();
  }
}

/** Frees a KV cache. */
export function disposeCache(cache: LayerCache[]): void {
  for (const c of cache) {
    c.k?.dispose();
    c.v?.dispose();
  }
}
