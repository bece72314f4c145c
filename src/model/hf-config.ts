/**
 * Hugging Face `config.json` of each family Lathe runs (Llama, Mistral, Qwen2, Qwen3, Mixtral,
 * Qwen3-MoE), written from a {@link ModelSpec} on export: the same architecture class, biases,
 * norms, RoPE scaling and sliding window the model was imported with. Reading one back is
 * recipe/hf-config.ts (it makes a model section).
 */
import { HF_ARCHITECTURES, HF_ARCHITECTURE_OF } from '../recipe/hf-config.js';
import { familyOf, isMoeLayer, windowed, type ModelSpec } from './spec.js';
import { VERSION } from '../version.js';

export { HF_ARCHITECTURES, HF_ARCHITECTURE_OF };

/** Token ids that go into config.json and generation_config.json. */
export interface HfTokenIds {
  bos: number;
  eos: number;
  pad: number;
}

/** transformers' rope_parameters (5) and rope_scaling (4) for the spec. */
function ropeFields(spec: ModelSpec): Record<string, unknown> {
  const r = spec.ropeScaling;
  const scaling =
    r === undefined
      ? null
      : r.type === 'linear'
        ? { rope_type: 'linear', factor: r.factor }
        : {
            rope_type: 'llama3',
            factor: r.factor,
            low_freq_factor: r.lowFreqFactor,
            high_freq_factor: r.highFreqFactor,
            original_max_position_embeddings: r.originalContext,
          };
  return {
    rope_theta: spec.ropeTheta,
    rope_scaling: scaling,
    rope_parameters: { rope_type: 'default', ...scaling, rope_theta: spec.ropeTheta },
  };
}

/** The `config.json` object for a model of this spec. */
export function hfConfigOf(spec: ModelSpec, ids: HfTokenIds): Record<string, unknown> {
  const family = familyOf(spec);
  const qwen = family === 'qwen2' || family === 'qwen3' || family === 'qwen3_moe';
  // Key order as Lathe has always written Llama and Mixtral configs.
  const config: Record<string, unknown> = {
    architectures: [HF_ARCHITECTURE_OF[family]],
    model_type: family,
    vocab_size: spec.vocabSize,
    hidden_size: spec.dim,
    intermediate_size: family === 'qwen3_moe' ? (spec.denseFfnDim ?? spec.ffnDim) : spec.ffnDim,
    num_hidden_layers: spec.layers,
    num_attention_heads: spec.heads,
    num_key_value_heads: spec.kvHeads,
    head_dim: spec.headDim,
    hidden_act: 'silu',
    max_position_embeddings: spec.context,
    initializer_range: spec.initStd,
    rms_norm_eps: spec.normEps,
    // transformers 4 reads rope_theta/rope_scaling, transformers 5 rope_parameters.
    ...ropeFields(spec),
    // Llama, Qwen3 and Qwen3-MoE put attention_bias on q, k, v and o; Qwen2's q/k/v biases are built
    // in; Mistral and Mixtral have none (Mixtral's config has always said false).
    attention_bias: spec.attentionBias === 'all',
    attention_dropout: 0.0,
    mlp_bias: false,
    tie_word_embeddings: spec.tieEmbeddings,
    bos_token_id: ids.bos,
    eos_token_id: ids.eos,
    pad_token_id: ids.pad,
    use_cache: true,
    torch_dtype: 'float32',
    dtype: 'float32',
  };
  if (family === 'mistral' || family === 'qwen2') delete config.attention_bias;
  if (family !== 'llama' && family !== 'mixtral') delete config.mlp_bias;
  if (family === 'llama') config.pretraining_tp = 1;
  if (family === 'mistral') config.sliding_window = spec.slidingWindow ?? null;
  if (qwen) {
    config.use_sliding_window = spec.slidingWindow !== undefined;
    config.sliding_window = spec.slidingWindow ?? null;
    if (family !== 'qwen3_moe') {
      const sliding = Array.from({ length: spec.layers }, (_, i) => windowed(spec, i));
      config.max_window_layers = sliding.indexOf(true) < 0 ? spec.layers : sliding.indexOf(true);
      config.layer_types = sliding.map((w) => (w ? 'sliding_attention' : 'full_attention'));
    }
  }
  if (family === 'mixtral') {
    Object.assign(config, {
      num_local_experts: spec.experts,
      num_experts_per_tok: spec.topK,
      router_aux_loss_coef: spec.auxLossCoef,
      router_jitter_noise: 0.0,
      output_router_logits: false,
      sliding_window: spec.slidingWindow ?? null,
    });
  }
  if (family === 'qwen3_moe') {
    Object.assign(config, {
      num_experts: spec.experts,
      num_experts_per_tok: spec.topK,
      moe_intermediate_size: spec.ffnDim,
      norm_topk_prob: spec.normTopK !== false,
      decoder_sparse_step: 1,
      mlp_only_layers: Array.from({ length: spec.layers }, (_, i) => i).filter((i) => !isMoeLayer(spec, i)),
      router_aux_loss_coef: spec.auxLossCoef,
      output_router_logits: false,
    });
  }
  // Lathe-only settings (kept as plain attributes by transformers) so an import restores them.
  config.lathe = { version: VERSION, z_loss_coef: spec.zLossCoef };
  return config;
}

// transformers 5 validates config types strictly: these must be JSON floats, and JSON.stringify
// writes 0.0 as 0 and 10000.0 as 10000.
const FLOAT_FIELDS = [
  'rope_theta',
  'rms_norm_eps',
  'initializer_range',
  'attention_dropout',
  'router_jitter_noise',
  'router_aux_loss_coef',
  'z_loss_coef',
  'factor',
  'low_freq_factor',
  'high_freq_factor',
];

/** Serialises an HF config (pretty, newline-terminated), writing float fields with a decimal point. */
export function hfConfigJson(config: Record<string, unknown>): string {
  const text = JSON.stringify(config, null, 2) + '\n';
  return text.replace(new RegExp(`("(?:${FLOAT_FIELDS.join('|')})": )(-?\\d+)(?=[,\\n])`, 'g'), '$1$2.0');
}
