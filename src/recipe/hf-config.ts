/**
 * Hugging Face `config.json` for Llama (dense) and Mixtral (MoE) models: read into a {@link ModelSpec}
 * (a resolved model section) on import; model/hf-config.ts writes them on export.
 *
 * Import follows transformers' own defaults (LlamaConfig, MixtralConfig) for fields a config
 * leaves out, reads both the transformers 4 (`rope_theta`, `rope_scaling`) and 5
 * (`rope_parameters`) spellings, and refuses, naming the field, anything Lathe's decoder would
 * compute differently (biases, RoPE scaling, another activation, a sliding window shorter than the
 * context, quantized checkpoints).
 */
import { LatheError } from '../errors.js';
import type { ModelSpec } from './model-spec.js';
import { ModelSchema, type ModelConfig } from './schema.js';

/** The HF architectures Lathe writes and reads. */
export const HF_ARCHITECTURES = { dense: 'LlamaForCausalLM', moe: 'MixtralForCausalLM' } as const;

/** Options for {@link specFromHfConfig}. */
export interface SpecFromHfOptions {
  /** Context length to use (at most max_position_embeddings); default max_position_embeddings. */
  context?: number;
}

/** Per-architecture defaults of transformers' LlamaConfig / MixtralConfig for fields a config.json may omit. */
const HF_DEFAULTS = {
  dense: {
    vocab_size: 32000,
    hidden_size: 4096,
    intermediate_size: 11008,
    num_hidden_layers: 32,
    num_attention_heads: 32,
    num_key_value_heads: null as number | null,
    max_position_embeddings: 2048,
    initializer_range: 0.02,
    rms_norm_eps: 1e-6,
    rope_theta: 10000,
    tie_word_embeddings: false,
    bos_token_id: 1,
    eos_token_id: 2,
  },
  moe: {
    vocab_size: 32000,
    hidden_size: 4096,
    intermediate_size: 14336,
    num_hidden_layers: 32,
    num_attention_heads: 32,
    num_key_value_heads: 8 as number | null,
    max_position_embeddings: 4096 * 32,
    initializer_range: 0.02,
    rms_norm_eps: 1e-5,
    rope_theta: 1e6,
    tie_word_embeddings: false,
    bos_token_id: 1,
    eos_token_id: 2,
    num_local_experts: 8,
    num_experts_per_tok: 2,
    router_aux_loss_coef: 0.001,
  },
};

/** What {@link specFromHfConfig} read besides the spec. */
export interface HfConfigInfo {
  architecture: (typeof HF_ARCHITECTURES)[keyof typeof HF_ARCHITECTURES];
  /** Declared weight dtype (`torch_dtype` / `dtype`), if any. */
  dtype?: string;
  bosTokenId?: number;
  eosTokenId?: number | number[];
  padTokenId?: number;
  /** max_position_embeddings as written (the spec's context may be shorter). */
  maxPositionEmbeddings: number;
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/**
 * Reads an HF config.json object into a {@link ModelSpec}. `file` names the file in errors, which
 * also name the offending field, e.g. `dir/config.json: rope_scaling: ...`.
 */
export function specFromHfConfig(
  cfg: unknown,
  file: string,
  opts: SpecFromHfOptions = {},
): { spec: ModelSpec; info: HfConfigInfo } {
  const fail = (field: string, why: string): never => {
    throw new LatheError(`${file}: ${field}: ${why}`);
  };
  if (!isObject(cfg)) return fail('(root)', 'must be a JSON object');

  // Architecture: `architectures` when present, else `model_type`.
  const supported = Object.values(HF_ARCHITECTURES).join(' and ');
  let arch: 'dense' | 'moe' | undefined;
  const archs = cfg.architectures;
  if (archs !== undefined && archs !== null) {
    if (!Array.isArray(archs) || archs.length !== 1 || typeof archs[0] !== 'string')
      fail('architectures', `expected one architecture name, got ${JSON.stringify(archs)}`);
    const name = (archs as string[])[0]!;
    if (name === HF_ARCHITECTURES.dense) arch = 'dense';
    else if (name === HF_ARCHITECTURES.moe) arch = 'moe';
    else fail('architectures', `"${name}" is not supported; Lathe imports ${supported}`);
  }
  const modelType = cfg.model_type;
  if (modelType !== undefined) {
    const fromType = modelType === 'llama' ? 'dense' : modelType === 'mixtral' ? 'moe' : undefined;
    if (!fromType)
      fail('model_type', `"${String(modelType)}" is not supported; Lathe imports model_type "llama" and "mixtral"`);
    if (arch && arch !== fromType)
      fail('model_type', `"${String(modelType)}" does not match architectures ${JSON.stringify(archs)}`);
    arch = fromType;
  }
  if (!arch) return fail('architectures', `missing (and no model_type); Lathe imports ${supported}`);
  const defaults: Record<string, unknown> = HF_DEFAULTS[arch];

  const raw = (key: string): unknown => (cfg[key] === undefined ? defaults[key] : cfg[key]);
  const posInt = (key: string): number => {
    const v = raw(key);
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 1)
      fail(key, `must be a positive integer, got ${JSON.stringify(v)}`);
    return v as number;
  };
  const posNum = (key: string, v: unknown = raw(key)): number => {
    if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0)
      fail(key, `must be a positive number, got ${JSON.stringify(v)}`);
    return v as number;
  };
  const optInt = (key: string): number | undefined => {
    const v = raw(key);
    if (v === undefined || v === null) return undefined;
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 0)
      fail(key, `must be a token id (a non-negative integer) or null, got ${JSON.stringify(v)}`);
    return v as number;
  };
  const mustBeFalse = (key: string, what: string) => {
    const v = cfg[key];
    if (v !== undefined && v !== null && v !== false) fail(key, `${JSON.stringify(v)} is not supported: ${what}`);
  };

  if (cfg.quantization_config !== undefined && cfg.quantization_config !== null) {
    const m = isObject(cfg.quantization_config) ? cfg.quantization_config.quant_method : undefined;
    // compressed-tensors (Lathe's int8 export): its weights are read and checked by model/compressed-tensors.ts.
    if (m !== 'compressed-tensors')
      fail(
        'quantization_config',
        `quantized checkpoints${m ? ` (${String(m)})` : ''} are not supported; import the unquantized model`,
      );
  }
  const act = cfg.hidden_act ?? 'silu';
  if (act !== 'silu' && act !== 'swish')
    fail('hidden_act', `"${String(act)}" is not supported; Lathe's SwiGLU uses silu`);
  mustBeFalse('attention_bias', "Lathe's attention projections have no bias");
  mustBeFalse('mlp_bias', "Lathe's MLP projections have no bias");

  // RoPE: plain (default) rotary embeddings only.
  let ropeTheta: number | undefined;
  const scaling = cfg.rope_scaling;
  if (scaling !== undefined && scaling !== null) {
    const type = isObject(scaling) ? (scaling.rope_type ?? scaling.type) : undefined;
    if (type !== 'default')
      fail(
        'rope_scaling',
        `${JSON.stringify(scaling)} is not supported; Lathe implements plain RoPE (rope_scaling must be null)`,
      );
  }
  const params = cfg.rope_parameters;
  if (params !== undefined && params !== null) {
    if (!isObject(params)) return fail('rope_parameters', `must be an object, got ${JSON.stringify(params)}`);
    const type = params.rope_type ?? params.type ?? 'default';
    if (type !== 'default')
      fail('rope_parameters.rope_type', `"${String(type)}" is not supported; Lathe implements plain RoPE ("default")`);
    if (params.partial_rotary_factor !== undefined && params.partial_rotary_factor !== 1)
      fail(
        'rope_parameters.partial_rotary_factor',
        `${JSON.stringify(params.partial_rotary_factor)} is not supported (must be 1)`,
      );
    if (params.rope_theta !== undefined) ropeTheta = posNum('rope_parameters.rope_theta', params.rope_theta);
  }
  if (cfg.partial_rotary_factor !== undefined && cfg.partial_rotary_factor !== 1)
    fail('partial_rotary_factor', `${JSON.stringify(cfg.partial_rotary_factor)} is not supported (must be 1)`);
  if (ropeTheta === undefined) ropeTheta = posNum('rope_theta');
  else if (cfg.rope_theta !== undefined && cfg.rope_theta !== ropeTheta)
    fail('rope_theta', `${JSON.stringify(cfg.rope_theta)} disagrees with rope_parameters.rope_theta ${ropeTheta}`);

  const dim = posInt('hidden_size');
  const heads = posInt('num_attention_heads');
  const kvRaw = raw('num_key_value_heads');
  const kvHeads = kvRaw === null ? heads : posInt('num_key_value_heads');
  if (heads % kvHeads !== 0) fail('num_key_value_heads', `${kvHeads} must divide num_attention_heads ${heads}`);
  let headDim: number;
  if (cfg.head_dim === undefined || cfg.head_dim === null) {
    if (dim % heads !== 0)
      fail('head_dim', `missing, and hidden_size ${dim} is not a multiple of num_attention_heads ${heads}`);
    headDim = dim / heads;
  } else headDim = posInt('head_dim');
  if (headDim % 2 !== 0) fail('head_dim', `${headDim} must be even for RoPE`);

  const maxPos = posInt('max_position_embeddings');
  let context = maxPos;
  if (opts.context !== undefined) {
    if (!Number.isInteger(opts.context) || opts.context < 1 || opts.context > maxPos) {
      throw new LatheError(
        `context: ${opts.context} must be a positive integer at most ${file} max_position_embeddings ${maxPos}`,
      );
    }
    context = opts.context;
  }
  const window = cfg.sliding_window;
  if (window !== undefined && window !== null && cfg.use_sliding_window !== false) {
    if (typeof window !== 'number' || window < context)
      fail(
        'sliding_window',
        `${JSON.stringify(window)} is shorter than the context ${context}; Lathe has no sliding-window attention (import with a context of at most the window)`,
      );
  }

  const tie = raw('tie_word_embeddings');
  if (typeof tie !== 'boolean') fail('tie_word_embeddings', `must be true or false, got ${JSON.stringify(tie)}`);

  // Lathe-only fields come from the recipe defaults, or from the `lathe` block our export writes.
  const lathe = ModelSchema.parse({});
  const ours = isObject(cfg.lathe) ? cfg.lathe : {};
  const zLoss = typeof ours.z_loss_coef === 'number' ? ours.z_loss_coef : lathe.zLossCoef;
  const spec: ModelSpec = {
    arch,
    vocabSize: posInt('vocab_size'),
    dim,
    layers: posInt('num_hidden_layers'),
    heads,
    kvHeads,
    headDim,
    ffnDim: posInt('intermediate_size'),
    context,
    ropeTheta,
    normEps: posNum('rms_norm_eps'),
    tieEmbeddings: tie as boolean,
    initStd: posNum('initializer_range'),
    experts: arch === 'moe' ? posInt('num_local_experts') : lathe.experts,
    topK: arch === 'moe' ? posInt('num_experts_per_tok') : lathe.topK,
    auxLossCoef:
      arch === 'moe' ? nonNegative('router_aux_loss_coef', raw('router_aux_loss_coef'), fail) : lathe.auxLossCoef,
    zLossCoef: zLoss,
  };
  if (spec.topK > spec.experts) fail('num_experts_per_tok', `${spec.topK} exceeds num_local_experts ${spec.experts}`);

  const dtype = cfg.torch_dtype ?? cfg.dtype;
  const eos = raw('eos_token_id');
  const info: HfConfigInfo = {
    architecture: HF_ARCHITECTURES[arch],
    dtype: typeof dtype === 'string' ? dtype : undefined,
    bosTokenId: optInt('bos_token_id'),
    eosTokenId: Array.isArray(eos) ? (eos as number[]) : optInt('eos_token_id'),
    padTokenId: optInt('pad_token_id'),
    maxPositionEmbeddings: maxPos,
  };
  return { spec, info };
}

function nonNegative(key: string, v: unknown, fail: (field: string, why: string) => never): number {
  if (typeof v !== 'number' || !Number.isFinite(v) || v < 0)
    fail(key, `must be a non-negative number, got ${JSON.stringify(v)}`);
  return v as number;
}

/**
 * The recipe `model` section for a spec (to continue training an imported model with
 * `--from`). Throws when the spec has a head size a recipe cannot express (dim / heads).
 */
export function modelConfigOf(spec: ModelSpec): ModelConfig {
  if (spec.headDim * spec.heads !== spec.dim) {
    throw new LatheError(
      `head_dim: ${spec.headDim} is not hidden_size / num_attention_heads (${spec.dim} / ${spec.heads}); a recipe's model section cannot express it`,
    );
  }
  return {
    arch: spec.arch,
    dim: spec.dim,
    layers: spec.layers,
    heads: spec.heads,
    kvHeads: spec.kvHeads,
    ffnDim: spec.ffnDim,
    context: spec.context,
    ropeTheta: spec.ropeTheta,
    normEps: spec.normEps,
    tieEmbeddings: spec.tieEmbeddings,
    initStd: spec.initStd,
    experts: spec.experts,
    topK: spec.topK,
    auxLossCoef: spec.auxLossCoef,
    zLossCoef: spec.zLossCoef,
  };
}
