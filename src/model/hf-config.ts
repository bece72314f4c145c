/**
 * Hugging Face `config.json` for Llama (dense) and Mixtral (MoE) models, written from a
 * {@link ModelSpec} on export. Reading one back is recipe/hf-config.ts (it makes a model section).
 */
import { HF_ARCHITECTURES } from '../recipe/hf-config.js';
import type { ModelSpec } from './spec.js';
import { VERSION } from '../version.js';

export { HF_ARCHITECTURES };

/** Token ids that go into config.json and generation_config.json. */
export interface HfTokenIds {
  bos: number;
  eos: number;
  pad: number;
}

/** The `config.json` object for a model of this spec. */
export function hfConfigOf(spec: ModelSpec, ids: HfTokenIds): Record<string, unknown> {
  const moe = spec.arch === 'moe';
  const config: Record<string, unknown> = {
    architectures: [HF_ARCHITECTURES[spec.arch]],
    model_type: moe ? 'mixtral' : 'llama',
    vocab_size: spec.vocabSize,
    hidden_size: spec.dim,
    intermediate_size: spec.ffnDim,
    num_hidden_layers: spec.layers,
    num_attention_heads: spec.heads,
    num_key_value_heads: spec.kvHeads,
    head_dim: spec.headDim,
    hidden_act: 'silu',
    max_position_embeddings: spec.context,
    initializer_range: spec.initStd,
    rms_norm_eps: spec.normEps,
    // transformers 4 reads rope_theta/rope_scaling, transformers 5 rope_parameters.
    rope_theta: spec.ropeTheta,
    rope_scaling: null,
    rope_parameters: { rope_type: 'default', rope_theta: spec.ropeTheta },
    attention_bias: false,
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
  if (moe) {
    Object.assign(config, {
      num_local_experts: spec.experts,
      num_experts_per_tok: spec.topK,
      router_aux_loss_coef: spec.auxLossCoef,
      router_jitter_noise: 0.0,
      output_router_logits: false,
      sliding_window: null,
    });
  } else {
    config.pretraining_tp = 1;
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
];

/** Serialises an HF config (pretty, newline-terminated), writing float fields with a decimal point. */
export function hfConfigJson(config: Record<string, unknown>): string {
  const text = JSON.stringify(config, null, 2) + '\n';
  return text.replace(new RegExp(`("(?:${FLOAT_FIELDS.join('|')})": )(-?\\d+)(?=[,\\n])`, 'g'), '$1$2.0');
}
