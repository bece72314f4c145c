/**
 * Hugging Face `config.json` of the decoder families Lathe runs (Llama 2/3.x, Mistral, Qwen2, Qwen3,
 * Mixtral, Qwen3-MoE): read into a {@link ModelSpec} (a resolved model section) on import;
 * model/hf-config.ts writes them on export.
 *
 * Import follows transformers' own defaults (its config classes, as of transformers 5.15) for
 * fields a config leaves out, reads both the transformers 4 (`rope_theta`, `rope_scaling`) and 5
 * (`rope_parameters`) spellings, interprets each family's fields as transformers does (Qwen2's
 * `use_sliding_window`, `max_window_layers` and `layer_types`; Qwen3-MoE's `decoder_sparse_step` and
 * `mlp_only_layers`), and refuses, naming the field, anything Lathe's decoder would compute
 * differently (REFUSED_FIELDS lists them).
 */
import { LatheError } from '../errors.js';
import type { ModelFamily, ModelSpec, RopeScaling } from './model-spec.js';
import { familyOf, OPEN_FIELDS } from './model-spec.js';
import { ModelSchema, type ModelConfig } from './schema.js';

/** The HF architecture class of each family. */
export const HF_ARCHITECTURE_OF: Record<ModelFamily, string> = {
  llama: 'LlamaForCausalLM',
  mistral: 'MistralForCausalLM',
  qwen2: 'Qwen2ForCausalLM',
  qwen3: 'Qwen3ForCausalLM',
  mixtral: 'MixtralForCausalLM',
  qwen3_moe: 'Qwen3MoeForCausalLM',
};

/** The default HF architectures of Lathe's own dense and MoE decoders. */
export const HF_ARCHITECTURES = { dense: 'LlamaForCausalLM', moe: 'MixtralForCausalLM' } as const;

/**
 * Config fields (and values) that import refuses, with why: the list a user gets when a model
 * does not load. Everything else these families define is read, or has no effect on the logits.
 */
export const REFUSED_FIELDS: Record<string, string> = {
  architectures: 'any architecture other than the six above (e.g. Qwen2MoeForCausalLM, Gemma, Phi)',
  quantization_config: 'quantized checkpoints (GPTQ, AWQ, bitsandbytes, fp8...): import the unquantized model',
  hidden_act: 'any activation other than silu',
  mlp_bias: "true (Llama): Lathe's MLP projections have no bias",
  'rope_parameters.rope_type': 'dynamic, yarn, longrope and any type other than default, linear and llama3',
  partial_rotary_factor: 'anything other than 1',
  attention_dropout: 'anything other than 0 (Lathe trains without dropout)',
  layer_types: 'sliding_attention layers with no sliding_window (transformers fails on them too)',
  num_experts: '0 (Qwen3-MoE without experts: import it as Qwen3)',
  decoder_sparse_step: 'less than 1',
};

/** Options for {@link specFromHfConfig}. */
export interface SpecFromHfOptions {
  /** Context length to use (at most max_position_embeddings); default max_position_embeddings. */
  context?: number;
}

const COMMON = { initializer_range: 0.02, tie_word_embeddings: false, rope_theta: 10000 };
/** Per-family defaults of transformers' config classes for fields a config.json may omit. */
const HF_DEFAULTS: Record<ModelFamily, Record<string, unknown>> = {
  llama: {
    ...COMMON,
    vocab_size: 32000,
    hidden_size: 4096,
    intermediate_size: 11008,
    num_hidden_layers: 32,
    num_attention_heads: 32,
    num_key_value_heads: null,
    max_position_embeddings: 2048,
    rms_norm_eps: 1e-6,
    bos_token_id: 1,
    eos_token_id: 2,
  },
  mistral: {
    ...COMMON,
    vocab_size: 32000,
    hidden_size: 4096,
    intermediate_size: 14336,
    num_hidden_layers: 32,
    num_attention_heads: 32,
    num_key_value_heads: 8,
    max_position_embeddings: 4096 * 32,
    rms_norm_eps: 1e-6,
    bos_token_id: 1,
    eos_token_id: 2,
    sliding_window: 4096,
  },
  qwen2: {
    ...COMMON,
    vocab_size: 151936,
    hidden_size: 4096,
    intermediate_size: 22016,
    num_hidden_layers: 32,
    num_attention_heads: 32,
    num_key_value_heads: 32,
    max_position_embeddings: 32768,
    rms_norm_eps: 1e-6,
    use_sliding_window: false,
    sliding_window: 4096,
    max_window_layers: 28,
  },
  qwen3: {
    ...COMMON,
    vocab_size: 151936,
    hidden_size: 4096,
    intermediate_size: 22016,
    num_hidden_layers: 32,
    num_attention_heads: 32,
    num_key_value_heads: 32,
    head_dim: 128,
    max_position_embeddings: 32768,
    rms_norm_eps: 1e-6,
    use_sliding_window: false,
    sliding_window: 4096,
    max_window_layers: 28,
  },
  mixtral: {
    ...COMMON,
    vocab_size: 32000,
    hidden_size: 4096,
    intermediate_size: 14336,
    num_hidden_layers: 32,
    num_attention_heads: 32,
    num_key_value_heads: 8,
    max_position_embeddings: 4096 * 32,
    rms_norm_eps: 1e-5,
    rope_theta: 1e6,
    bos_token_id: 1,
    eos_token_id: 2,
    num_local_experts: 8,
    num_experts_per_tok: 2,
    router_aux_loss_coef: 0.001,
  },
  qwen3_moe: {
    ...COMMON,
    vocab_size: 151936,
    hidden_size: 2048,
    intermediate_size: 6144,
    num_hidden_layers: 24,
    num_attention_heads: 32,
    num_key_value_heads: 4,
    max_position_embeddings: 32768,
    rms_norm_eps: 1e-6,
    use_sliding_window: false,
    sliding_window: 4096,
    decoder_sparse_step: 1,
    moe_intermediate_size: 768,
    num_experts_per_tok: 8,
    num_experts: 128,
    norm_topk_prob: false,
    router_aux_loss_coef: 0.001,
  },
};

/** What {@link specFromHfConfig} read besides the spec. */
export interface HfConfigInfo {
  /** The HF architecture class (e.g. Qwen2ForCausalLM). */
  architecture: string;
  /** Declared weight dtype (`torch_dtype` / `dtype`), if any. */
  dtype?: string;
  bosTokenId?: number;
  eosTokenId?: number | number[];
  padTokenId?: number;
  /** max_position_embeddings as written (the spec's context may be shorter). */
  maxPositionEmbeddings: number;
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

const FAMILY_OF_ARCHITECTURE = new Map(
  Object.entries(HF_ARCHITECTURE_OF).map(([f, a]) => [a, f as ModelFamily] as const),
);

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
  const supported = Object.values(HF_ARCHITECTURE_OF).join(', ');
  let family: ModelFamily | undefined;
  const archs = cfg.architectures;
  if (archs !== undefined && archs !== null) {
    if (!Array.isArray(archs) || archs.length !== 1 || typeof archs[0] !== 'string')
      fail('architectures', `expected one architecture name, got ${JSON.stringify(archs)}`);
    const name = (archs as string[])[0]!;
    family = FAMILY_OF_ARCHITECTURE.get(name);
    if (!family) fail('architectures', `"${name}" is not supported; Lathe imports ${supported}`);
  }
  const modelType = cfg.model_type;
  if (modelType !== undefined) {
    const fromType = typeof modelType === 'string' && modelType in HF_DEFAULTS ? (modelType as ModelFamily) : undefined;
    if (!fromType)
      fail(
        'model_type',
        `"${String(modelType)}" is not supported; Lathe imports model_type ${Object.keys(HF_DEFAULTS).join(', ')}`,
      );
    if (family && family !== fromType)
      fail('model_type', `"${String(modelType)}" does not match architectures ${JSON.stringify(archs)}`);
    family = fromType;
  }
  if (!family) return fail('architectures', `missing (and no model_type); Lathe imports ${supported}`);
  const arch: 'dense' | 'moe' = family === 'mixtral' || family === 'qwen3_moe' ? 'moe' : 'dense';
  const qwen = family === 'qwen2' || family === 'qwen3' || family === 'qwen3_moe';
  const defaults = HF_DEFAULTS[family];

  const raw = (key: string): unknown => (cfg[key] === undefined ? defaults[key] : cfg[key]);
  const posInt = (key: string, v: unknown = raw(key)): number => {
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 1)
      fail(key, `must be a positive integer, got ${JSON.stringify(v)}`);
    return v as number;
  };
  const posNum = (key: string, v: unknown = raw(key)): number => {
    if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0)
      fail(key, `must be a positive number, got ${JSON.stringify(v)}`);
    return v as number;
  };
  const bool = (key: string): boolean => {
    const v = raw(key) ?? false;
    if (typeof v !== 'boolean') fail(key, `must be true or false, got ${JSON.stringify(v)}`);
    return v as boolean;
  };
  const optInt = (key: string): number | undefined => {
    const v = raw(key);
    if (v === undefined || v === null) return undefined;
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 0)
      fail(key, `must be a token id (a non-negative integer) or null, got ${JSON.stringify(v)}`);
    return v as number;
  };
  const layerList = (key: string, layers: number): number[] => {
    const v = raw(key) ?? [];
    if (!Array.isArray(v) || v.some((x) => typeof x !== 'number' || !Number.isInteger(x) || x < 0 || x >= layers))
      fail(key, `must be a list of layer indices below num_hidden_layers ${layers}, got ${JSON.stringify(v)}`);
    return v as number[];
  };

  if (cfg.quantization_config !== undefined && cfg.quantization_config !== null) {
    const m = isObject(cfg.quantization_config) ? cfg.quantization_config.quant_method : undefined;
    fail(
      'quantization_config',
      `quantized checkpoints${m ? ` (${String(m)})` : ''} are not supported; import the unquantized model`,
    );
  }
  const act = cfg.hidden_act ?? 'silu';
  if (act !== 'silu' && act !== 'swish')
    fail('hidden_act', `"${String(act)}" is not supported; Lathe's SwiGLU uses silu`);
  // Biases: Qwen2 always has q/k/v biases; Llama, Qwen3 and Qwen3-MoE put attention_bias on q, k, v
  // and o; Mistral and Mixtral have none whatever the config says (transformers ignores the field).
  let attentionBias: 'qkv' | 'all' | undefined;
  if (family === 'qwen2') attentionBias = 'qkv';
  else if (family === 'llama' || family === 'qwen3' || family === 'qwen3_moe') {
    if (bool('attention_bias')) attentionBias = 'all';
  }
  if (family === 'llama' && bool('mlp_bias'))
    fail('mlp_bias', "true is not supported: Lathe's MLP projections have no bias");
  const dropout = cfg.attention_dropout;
  if (dropout !== undefined && dropout !== null && dropout !== 0)
    fail('attention_dropout', `${JSON.stringify(dropout)} is not supported; Lathe trains without dropout (must be 0)`);

  const maxPos = posInt('max_position_embeddings');
  const { theta: ropeTheta, scaling: ropeScaling } = readRope(cfg, defaults, maxPos, fail);

  const dim = posInt('hidden_size');
  const layers = posInt('num_hidden_layers');
  const heads = posInt('num_attention_heads');
  const kvRaw = raw('num_key_value_heads');
  const kvHeads = kvRaw === null ? heads : posInt('num_key_value_heads');
  if (heads % kvHeads !== 0) fail('num_key_value_heads', `${kvHeads} must divide num_attention_heads ${heads}`);
  let headDim: number;
  const hd = raw('head_dim');
  if (hd === undefined || hd === null) {
    if (dim % heads !== 0)
      fail('head_dim', `missing, and hidden_size ${dim} is not a multiple of num_attention_heads ${heads}`);
    headDim = dim / heads;
  } else headDim = posInt('head_dim');
  if (headDim % 2 !== 0) fail('head_dim', `${headDim} must be even for RoPE`);

  let context = maxPos;
  if (opts.context !== undefined) {
    if (!Number.isInteger(opts.context) || opts.context < 1 || opts.context > maxPos) {
      throw new LatheError(
        `context: ${opts.context} must be a positive integer at most ${file} max_position_embeddings ${maxPos}`,
      );
    }
    context = opts.context;
  }

  // Sliding window, as each family's transformers class reads it.
  let slidingWindow: number | undefined;
  let windowLayers: number[] | undefined;
  const windowField = (): number | undefined => {
    const w = raw('sliding_window');
    return w === null || w === undefined ? undefined : posInt('sliding_window', w);
  };
  if (qwen) {
    // sliding_window counts only with use_sliding_window (Qwen2Config.__post_init__).
    const window = bool('use_sliding_window') ? windowField() : undefined;
    const types = cfg.layer_types;
    if (family === 'qwen3_moe') slidingWindow = window;
    else if (types !== undefined && types !== null) {
      if (
        !Array.isArray(types) ||
        types.length !== layers ||
        types.some((t) => t !== 'full_attention' && t !== 'sliding_attention')
      )
        fail(
          'layer_types',
          `must list "full_attention" or "sliding_attention" for each of the ${layers} layers, got ${JSON.stringify(types)}`,
        );
      const sliding = (types as string[]).flatMap((t, i) => (t === 'sliding_attention' ? [i] : []));
      if (sliding.length && window === undefined)
        fail(
          'layer_types',
          `names sliding_attention layers but the sliding window is off (use_sliding_window ${JSON.stringify(raw('use_sliding_window'))}, sliding_window ${JSON.stringify(cfg.sliding_window)})`,
        );
      if (sliding.length) [slidingWindow, windowLayers] = [window, sliding];
    } else if (window !== undefined) {
      // Qwen2Config: layers from max_window_layers on use the window.
      const from = raw('max_window_layers');
      if (typeof from !== 'number' || !Number.isInteger(from) || from < 0)
        fail('max_window_layers', `must be a non-negative integer, got ${JSON.stringify(from)}`);
      const sliding = Array.from({ length: layers }, (_, i) => i).filter((i) => i >= (from as number));
      if (sliding.length) [slidingWindow, windowLayers] = [window, sliding];
    }
    if (windowLayers && windowLayers.length === layers) windowLayers = undefined;
  } else if (family !== 'llama') slidingWindow = windowField();

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
    layers,
    heads,
    kvHeads,
    headDim,
    ffnDim: posInt(family === 'qwen3_moe' ? 'moe_intermediate_size' : 'intermediate_size'),
    context,
    ropeTheta,
    normEps: posNum('rms_norm_eps'),
    tieEmbeddings: tie as boolean,
    initStd: posNum('initializer_range'),
    experts: lathe.experts,
    topK: lathe.topK,
    auxLossCoef: lathe.auxLossCoef,
    zLossCoef: zLoss,
  };
  if (family !== 'llama' && family !== 'mixtral') spec.family = family;
  if (attentionBias) spec.attentionBias = attentionBias;
  if (family === 'qwen3' || family === 'qwen3_moe') spec.qkNorm = true;
  if (ropeScaling) spec.ropeScaling = ropeScaling;
  if (slidingWindow !== undefined) spec.slidingWindow = slidingWindow;
  if (windowLayers) spec.windowLayers = windowLayers;
  if (arch === 'moe') {
    const expertsKey =
      family === 'mixtral'
        ? 'num_local_experts'
        : cfg.num_experts === undefined && cfg.num_local_experts !== undefined
          ? 'num_local_experts'
          : 'num_experts';
    const experts = raw(expertsKey);
    if (family === 'qwen3_moe' && experts === 0)
      fail('num_experts', '0 is not supported: a Qwen3-MoE without experts is a dense model; import it as Qwen3');
    spec.experts = posInt(expertsKey, experts);
    spec.topK = posInt('num_experts_per_tok');
    spec.auxLossCoef = nonNegative('router_aux_loss_coef', raw('router_aux_loss_coef'), fail);
    if (spec.topK > spec.experts) fail('num_experts_per_tok', `${spec.topK} exceeds ${expertsKey} ${spec.experts}`);
    if (family === 'qwen3_moe') {
      spec.normTopK = bool('norm_topk_prob');
      spec.denseFfnDim = posInt('intermediate_size');
      // Qwen3MoeDecoderLayer: sparse where not in mlp_only_layers and (i + 1) % decoder_sparse_step == 0.
      const step = raw('decoder_sparse_step');
      if (typeof step !== 'number' || !Number.isInteger(step) || step < 1)
        fail('decoder_sparse_step', `must be a positive integer, got ${JSON.stringify(step)}`);
      const only = layerList('mlp_only_layers', layers);
      const dense = Array.from({ length: layers }, (_, i) => i).filter(
        (i) => only.includes(i) || (i + 1) % (step as number) !== 0,
      );
      if (dense.length === layers)
        fail('mlp_only_layers', 'leaves no layer with experts; import the model as Qwen3 (dense) instead');
      if (dense.length) spec.denseLayers = dense;
    }
  }

  const dtype = cfg.torch_dtype ?? cfg.dtype;
  const eos = raw('eos_token_id');
  const info: HfConfigInfo = {
    architecture: HF_ARCHITECTURE_OF[family],
    dtype: typeof dtype === 'string' ? dtype : undefined,
    bosTokenId: optInt('bos_token_id'),
    eosTokenId: Array.isArray(eos) ? (eos as number[]) : optInt('eos_token_id'),
    padTokenId: optInt('pad_token_id'),
    maxPositionEmbeddings: maxPos,
  };
  return { spec, info };
}

/**
 * RoPE base and scaling, as transformers 5 reads them: `rope_scaling` (transformers 4) takes the
 * place of `rope_parameters`; rope_theta comes from there, else the top-level field, else the
 * family's default.
 */
function readRope(
  cfg: Record<string, unknown>,
  defaults: Record<string, unknown>,
  maxPos: number,
  fail: (field: string, why: string) => never,
): { theta: number; scaling?: RopeScaling } {
  const legacy = cfg.rope_scaling !== undefined && cfg.rope_scaling !== null;
  const field = legacy ? 'rope_scaling' : 'rope_parameters';
  const given = legacy ? cfg.rope_scaling : cfg.rope_parameters;
  if (given !== undefined && given !== null && !isObject(given))
    fail(field, `must be an object, got ${JSON.stringify(given)}`);
  const p: Record<string, unknown> = isObject(given) ? given : {};
  const num = (key: string, v: unknown, min = 0): number => {
    if (typeof v !== 'number' || !Number.isFinite(v) || v <= min)
      fail(key, `must be a number above ${min}, got ${JSON.stringify(v)}`);
    return v as number;
  };
  const thetaRaw = p.rope_theta ?? cfg.rope_theta ?? defaults.rope_theta;
  const theta = num(p.rope_theta !== undefined ? `${field}.rope_theta` : 'rope_theta', thetaRaw);
  if (!legacy && p.rope_theta !== undefined && cfg.rope_theta !== undefined && cfg.rope_theta !== p.rope_theta)
    fail('rope_theta', `${JSON.stringify(cfg.rope_theta)} disagrees with rope_parameters.rope_theta ${theta}`);
  const partial = p.partial_rotary_factor ?? cfg.partial_rotary_factor;
  if (partial !== undefined && partial !== null && partial !== 1)
    fail(
      p.partial_rotary_factor !== undefined ? `${field}.partial_rotary_factor` : 'partial_rotary_factor',
      `${JSON.stringify(partial)} is not supported (must be 1)`,
    );
  const type = p.rope_type ?? p.type ?? 'default';
  const at = (k: string) => `${field}.${k}`;
  if (type === 'default') return { theta };
  if (type === 'linear') return { theta, scaling: { type: 'linear', factor: num(at('factor'), p.factor) } };
  if (type === 'llama3') {
    const low = num(at('low_freq_factor'), p.low_freq_factor);
    const high = num(at('high_freq_factor'), p.high_freq_factor);
    if (high <= low) fail(at('high_freq_factor'), `${high} must exceed low_freq_factor ${low}`);
    const original = p.original_max_position_embeddings ?? cfg.original_max_position_embeddings ?? maxPos;
    if (typeof original !== 'number' || !Number.isInteger(original) || original < 1)
      fail(at('original_max_position_embeddings'), `must be a positive integer, got ${JSON.stringify(original)}`);
    return {
      theta,
      scaling: {
        type: 'llama3',
        factor: num(at('factor'), p.factor),
        lowFreqFactor: low,
        highFreqFactor: high,
        originalContext: original as number,
      },
    };
  }
  return fail(
    `${field}.rope_type`,
    `"${String(type)}" is not supported; Lathe implements RoPE types default, linear and llama3`,
  );
}

function nonNegative(key: string, v: unknown, fail: (field: string, why: string) => never): number {
  if (typeof v !== 'number' || !Number.isFinite(v) || v < 0)
    fail(key, `must be a non-negative number, got ${JSON.stringify(v)}`);
  return v as number;
}

/** The recipe `model` section for a spec (to continue training an imported model with `from`). */
export function modelConfigOf(spec: ModelSpec): ModelConfig {
  const m: ModelConfig = {
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
    // The embedding rows, which may exceed the tokenizer's ids (a padded vocabulary).
    vocabSize: spec.vocabSize,
  };
  if (spec.headDim * spec.heads !== spec.dim) m.headDim = spec.headDim;
  if (spec.family !== undefined && spec.family !== familyOf({ arch: spec.arch })) m.family = spec.family;
  for (const k of OPEN_FIELDS) if (k !== 'family' && spec[k] !== undefined) (m as Record<string, unknown>)[k] = spec[k];
  return m;
}
