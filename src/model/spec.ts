export { modelSpec, type ModelSpec } from '../recipe/model-spec.js';
import type { ModelSpec } from '../recipe/model-spec.js';

/** A parameter's HF name, shape and how it is initialised and regularised. */
export interface ParamSpec {
  name: string;
  shape: number[];
  init: 'normal' | 'ones' | 'scaled';
  /** AdamW weight decay applies (matrices yes, norm gains no). */
  decay: boolean;
}

/** Parameters of the trunk shared by both architectures (embeddings, attention, norms, head). */
export function trunkParams(s: ModelSpec): ParamSpec[] {
  const out: ParamSpec[] = [
    { name: 'model.embed_tokens.weight', shape: [s.vocabSize, s.dim], init: 'normal', decay: true },
  ];
  for (let i = 0; i < s.layers; i++) {
    const p = `model.layers.${i}`;
    out.push(
      { name: `${p}.input_layernorm.weight`, shape: [s.dim], init: 'ones', decay: false },
      { name: `${p}.self_attn.q_proj.weight`, shape: [s.heads * s.headDim, s.dim], init: 'normal', decay: true },
      { name: `${p}.self_attn.k_proj.weight`, shape: [s.kvHeads * s.headDim, s.dim], init: 'normal', decay: true },
      { name: `${p}.self_attn.v_proj.weight`, shape: [s.kvHeads * s.headDim, s.dim], init: 'normal', decay: true },
      { name: `${p}.self_attn.o_proj.weight`, shape: [s.dim, s.heads * s.headDim], init: 'scaled', decay: true },
      { name: `${p}.post_attention_layernorm.weight`, shape: [s.dim], init: 'ones', decay: false },
    );
  }
  out.push({ name: 'model.norm.weight', shape: [s.dim], init: 'ones', decay: false });
  if (!s.tieEmbeddings) out.push({ name: 'lm_head.weight', shape: [s.vocabSize, s.dim], init: 'normal', decay: true });
  return out;
}

// Llama: each block's feed-forward is one SwiGLU MLP.

/** The dense MLP parameters of every layer, with HF Llama names. */
export function denseFfnParams(s: ModelSpec): ParamSpec[] {
  const out: ParamSpec[] = [];
  for (let i = 0; i < s.layers; i++) {
    const p = `model.layers.${i}.mlp`;
    out.push(
      { name: `${p}.gate_proj.weight`, shape: [s.ffnDim, s.dim], init: 'normal', decay: true },
      { name: `${p}.up_proj.weight`, shape: [s.ffnDim, s.dim], init: 'normal', decay: true },
      { name: `${p}.down_proj.weight`, shape: [s.dim, s.ffnDim], init: 'scaled', decay: true },
    );
  }
  return out;
}

// Mixtral: each block's feed-forward is a top-k routed mixture of SwiGLU experts.

/** Router and expert parameters of every layer, with HF Mixtral names. */
export function moeFfnParams(s: ModelSpec): ParamSpec[] {
  const out: ParamSpec[] = [];
  for (let i = 0; i < s.layers; i++) {
    const p = `model.layers.${i}.block_sparse_moe`;
    out.push({ name: `${p}.gate.weight`, shape: [s.experts, s.dim], init: 'normal', decay: true });
    for (let e = 0; e < s.experts; e++) {
      out.push(
        { name: `${p}.experts.${e}.w1.weight`, shape: [s.ffnDim, s.dim], init: 'normal', decay: true },
        { name: `${p}.experts.${e}.w3.weight`, shape: [s.ffnDim, s.dim], init: 'normal', decay: true },
        { name: `${p}.experts.${e}.w2.weight`, shape: [s.dim, s.ffnDim], init: 'scaled', decay: true },
      );
    }
  }
  return out;
}

/** Every parameter of a model of this spec, in a fixed order. */
export function paramSpecsOf(spec: ModelSpec): ParamSpec[] {
  return [...trunkParams(spec), ...(spec.arch === 'moe' ? moeFfnParams(spec) : denseFfnParams(spec))];
}

/** Number of parameters of a model of this spec. */
export function numParamsOf(spec: ModelSpec): number {
  return paramSpecsOf(spec).reduce((a, p) => a + p.shape.reduce((x, y) => x * y, 1), 0);
}

/** Forward+backward FLOPs per token (6 x active parameters plus attention), for the throughput meter. */
export function flopsPerToken(spec: ModelSpec): number {
  const all = numParamsOf(spec);
  const active =
    spec.arch === 'moe' ? all - spec.layers * (spec.experts - spec.topK) * 3 * spec.dim * spec.ffnDim : all;
  return 6 * active + 12 * spec.layers * spec.dim * spec.context;
}
