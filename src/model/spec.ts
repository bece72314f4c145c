export {
  familyOf,
  isMoeLayer,
  modelSpec,
  windowed,
  type ModelFamily,
  type ModelSpec,
  type RopeScaling,
} from '../recipe/model-spec.js';
import { familyOf, isMoeLayer, type ModelSpec } from '../recipe/model-spec.js';

/** A parameter's HF name, shape and how it is initialised and regularised. */
export interface ParamSpec {
  name: string;
  shape: number[];
  init: 'normal' | 'ones' | 'zeros' | 'scaled';
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
    if (s.attentionBias) {
      out.push(
        { name: `${p}.self_attn.q_proj.bias`, shape: [s.heads * s.headDim], init: 'zeros', decay: false },
        { name: `${p}.self_attn.k_proj.bias`, shape: [s.kvHeads * s.headDim], init: 'zeros', decay: false },
        { name: `${p}.self_attn.v_proj.bias`, shape: [s.kvHeads * s.headDim], init: 'zeros', decay: false },
      );
      if (s.attentionBias === 'all')
        out.push({ name: `${p}.self_attn.o_proj.bias`, shape: [s.dim], init: 'zeros', decay: false });
    }
    if (s.qkNorm)
      out.push(
        { name: `${p}.self_attn.q_norm.weight`, shape: [s.headDim], init: 'ones', decay: false },
        { name: `${p}.self_attn.k_norm.weight`, shape: [s.headDim], init: 'ones', decay: false },
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
  for (let i = 0; i < s.layers; i++) out.push(...mlpParams(`model.layers.${i}.mlp`, s.dim, s.ffnDim));
  return out;
}

function mlpParams(p: string, dim: number, ffn: number): ParamSpec[] {
  return [
    { name: `${p}.gate_proj.weight`, shape: [ffn, dim], init: 'normal', decay: true },
    { name: `${p}.up_proj.weight`, shape: [ffn, dim], init: 'normal', decay: true },
    { name: `${p}.down_proj.weight`, shape: [dim, ffn], init: 'scaled', decay: true },
  ];
}

/** HF names of layer i's router and of expert e's gate, up and down projections. */
export interface MoeNames {
  router: string;
  expert(e: number): { gate: string; up: string; down: string };
}

/** Mixtral's names (block_sparse_moe, w1/w3/w2) or Qwen3-MoE's (mlp, gate_proj/up_proj/down_proj). */
export function moeNames(s: ModelSpec, i: number): MoeNames {
  if (familyOf(s) === 'qwen3_moe') {
    const p = `model.layers.${i}.mlp`;
    return {
      router: `${p}.gate.weight`,
      expert: (e) => ({
        gate: `${p}.experts.${e}.gate_proj.weight`,
        up: `${p}.experts.${e}.up_proj.weight`,
        down: `${p}.experts.${e}.down_proj.weight`,
      }),
    };
  }
  const p = `model.layers.${i}.block_sparse_moe`;
  return {
    router: `${p}.gate.weight`,
    expert: (e) => ({
      gate: `${p}.experts.${e}.w1.weight`,
      up: `${p}.experts.${e}.w3.weight`,
      down: `${p}.experts.${e}.w2.weight`,
    }),
  };
}

// Mixtral: each block's feed-forward is a top-k routed mixture of SwiGLU experts.

/** Router and expert parameters of every layer (a dense MLP in denseLayers), with HF names. */
export function moeFfnParams(s: ModelSpec): ParamSpec[] {
  const out: ParamSpec[] = [];
  for (let i = 0; i < s.layers; i++) {
    if (!isMoeLayer(s, i)) {
      out.push(...mlpParams(`model.layers.${i}.mlp`, s.dim, s.denseFfnDim ?? s.ffnDim));
      continue;
    }
    const n = moeNames(s, i);
    out.push({ name: n.router, shape: [s.experts, s.dim], init: 'normal', decay: true });
    for (let e = 0; e < s.experts; e++) {
      const x = n.expert(e);
      out.push(
        { name: x.gate, shape: [s.ffnDim, s.dim], init: 'normal', decay: true },
        { name: x.up, shape: [s.ffnDim, s.dim], init: 'normal', decay: true },
        { name: x.down, shape: [s.dim, s.ffnDim], init: 'scaled', decay: true },
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
  let moeLayers = 0;
  for (let i = 0; i < spec.layers; i++) if (isMoeLayer(spec, i)) moeLayers++;
  const active = all - moeLayers * (spec.experts - spec.topK) * 3 * spec.dim * spec.ffnDim;
  return 6 * active + 12 * spec.layers * spec.dim * spec.context;
}
