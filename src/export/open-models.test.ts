/**
 * Open-model import: one small random checkpoint per architecture Lathe reads (Llama 2 and 3.x,
 * Mistral, Qwen2, Qwen3, Mixtral, Qwen3-MoE), saved by transformers with its own config classes,
 * gives the same logits on the tfjs and the torch engine as transformers (fp32, max abs difference
 * at most 1e-4 on a fixed prompt), the same greedy continuation through the KV cache (sliding
 * windows included), and exports back as the same architecture, which transformers reloads with
 * the same config and logits.
 */
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readFile, rm } from 'node:fs/promises';
import { scratch, TALLY } from '../../test/helpers.js';
import { createEngine, generate, type Engine } from '../engine/index.js';
import { useBackend } from '../engine/tfjs/backend.js';
import { torchInfo } from '../engine/torch/process.js';
import type { ModelSpec } from '../model/spec.js';
import { importHf, saveHf, type HfImport } from './hf.js';
import { maxAbsDiff, runHf, type HfCheck } from './test/hf-python.js';

// 14 positions: longer than every window below, so the windows cut in training-shaped forward
// passes and in cached decoding alike.
const PROMPT = [0, 5, 17, 100, 250, 3, 42, 42, 7, 199, 64, 12, 33, 150];
const NEW_TOKENS = 10;

interface Case {
  name: string;
  job: Record<string, unknown>;
  /** What the imported spec must say. */
  spec: Partial<ModelSpec>;
  /** Fields transformers must read back from the exported config.json. */
  config: Record<string, unknown>;
}

const LLAMA3_ROPE = {
  rope_type: 'llama3',
  rope_theta: 500000.0,
  factor: 8.0,
  low_freq_factor: 1.0,
  high_freq_factor: 4.0,
  original_max_position_embeddings: 16,
};

export const CASES: Case[] = [
  {
    name: 'LlamaForCausalLM (Llama 2: untied, GQA)',
    job: { arch: 'llama', tied: false, seed: 11 },
    spec: { arch: 'dense', tieEmbeddings: false, kvHeads: 2 },
    config: { architectures: ['LlamaForCausalLM'], tie_word_embeddings: false, attention_bias: false },
  },
  {
    name: 'LlamaForCausalLM (Llama 3.x: rope_scaling llama3, tied)',
    job: { arch: 'llama', tied: true, seed: 12, config: { rope_parameters: LLAMA3_ROPE } },
    spec: {
      tieEmbeddings: true,
      ropeTheta: 500000,
      ropeScaling: { type: 'llama3', factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalContext: 16 },
    },
    config: { architectures: ['LlamaForCausalLM'], tie_word_embeddings: true, rope_parameters: LLAMA3_ROPE },
  },
  {
    name: 'LlamaForCausalLM (attention_bias, linear RoPE scaling)',
    job: {
      arch: 'llama',
      seed: 13,
      config: { attention_bias: true, rope_parameters: { rope_type: 'linear', rope_theta: 10000.0, factor: 4.0 } },
    },
    spec: { attentionBias: 'all', ropeScaling: { type: 'linear', factor: 4 } },
    config: { attention_bias: true, rope_parameters: { rope_type: 'linear', rope_theta: 10000.0, factor: 4.0 } },
  },
  {
    name: 'MistralForCausalLM (sliding_window 5)',
    job: { arch: 'mistral', seed: 14, config: { sliding_window: 5 } },
    spec: { family: 'mistral', slidingWindow: 5 },
    config: { architectures: ['MistralForCausalLM'], sliding_window: 5 },
  },
  {
    name: 'Qwen2ForCausalLM (q/k/v biases, sliding window from layer 1)',
    job: { arch: 'qwen2', seed: 15, config: { use_sliding_window: true, sliding_window: 5, max_window_layers: 1 } },
    spec: { family: 'qwen2', attentionBias: 'qkv', slidingWindow: 5, windowLayers: [1] },
    config: {
      architectures: ['Qwen2ForCausalLM'],
      use_sliding_window: true,
      sliding_window: 5,
      layer_types: ['full_attention', 'sliding_attention'],
    },
  },
  {
    name: 'Qwen3ForCausalLM (q/k norms, head_dim 16 = 2 x hidden/heads)',
    job: { arch: 'qwen3', seed: 16, head_dim: 16, tied: true },
    spec: { family: 'qwen3', qkNorm: true, headDim: 16, tieEmbeddings: true },
    config: { architectures: ['Qwen3ForCausalLM'], head_dim: 16, use_sliding_window: false },
  },
  {
    name: 'MixtralForCausalLM (sliding_window 6)',
    job: { arch: 'mixtral', seed: 17, config: { sliding_window: 6 } },
    spec: { arch: 'moe', experts: 4, topK: 2, slidingWindow: 6 },
    config: { architectures: ['MixtralForCausalLM'], sliding_window: 6, num_local_experts: 4 },
  },
  {
    name: 'Qwen3MoeForCausalLM (norm_topk_prob false, mlp_only_layers [1])',
    job: {
      arch: 'qwen3_moe',
      seed: 18,
      config: { num_hidden_layers: 3, mlp_only_layers: [1], norm_topk_prob: false },
    },
    spec: { family: 'qwen3_moe', normTopK: false, denseLayers: [1], ffnDim: 24, denseFfnDim: 64, qkNorm: true },
    config: { architectures: ['Qwen3MoeForCausalLM'], norm_topk_prob: false, moe_intermediate_size: 24 },
  },
  {
    name: 'Qwen3MoeForCausalLM (norm_topk_prob, decoder_sparse_step 2, head_dim 16)',
    job: {
      arch: 'qwen3_moe',
      seed: 19,
      head_dim: 16,
      config: { decoder_sparse_step: 2, norm_topk_prob: true, num_experts_per_tok: 3 },
    },
    spec: { normTopK: true, denseLayers: [0], topK: 3, headDim: 16 },
    // The same layers, said as transformers reads them back: layer 0 dense.
    config: { norm_topk_prob: true, num_experts_per_tok: 3, decoder_sparse_step: 1, mlp_only_layers: [0] },
  },
];

/** Logits of the prompt as rows, and the greedy continuation, on one engine. */
async function run(engine: Engine): Promise<{ logits: number[][]; greedy: number[] }> {
  const flat = await engine.logits(PROMPT);
  const v = engine.spec.vocabSize;
  const logits = Array.from({ length: PROMPT.length }, (_, r) => Array.from(flat.subarray(r * v, (r + 1) * v)));
  const greedy = await generate(engine, PROMPT, { maxTokens: NEW_TOKENS, temperature: 0, stop: [1] });
  return { logits, greedy };
}

/** HF's greedy tokens up to (not including) the eos id 1, as Lathe's generate stops there. */
const untilEos = (ids: number[]) => (ids.indexOf(1) >= 0 ? ids.slice(0, ids.indexOf(1)) : ids);

describe('open models: import, parity with transformers on both engines, export back', () => {
  let dir: string;
  let hf: HfCheck[] = [];
  let exported: HfCheck[] = [];
  const imports: HfImport[] = [];
  let setupError: unknown;
  const torch = torchInfo();

  beforeAll(async () => {
    await useBackend('cpu');
    dir = await scratch('lathe-open-models-');
    const texts = (await readFile(TALLY, 'utf8'))
      .split('\n')
      .filter(Boolean)
      .slice(0, 300)
      .map((l) => (JSON.parse(l) as { text: string }).text);
    const check = (d: string) => ({
      op: 'check' as const,
      dir: d,
      prompt: PROMPT,
      max_new_tokens: NEW_TOKENS,
      tokenizer: false,
      config: true,
    });
    try {
      const made = runHf(
        CASES.flatMap((c, i) => [
          { op: 'make' as const, dir: join(dir, `hf-${i}`), texts, ...c.job },
          check(join(dir, `hf-${i}`)),
        ]),
      );
      hf = made.filter((_, k) => k % 2 === 1) as HfCheck[];
      for (const [i] of CASES.entries()) {
        const imported = await importHf(join(dir, `hf-${i}`));
        imports.push(imported);
        await saveHf(join(dir, `out-${i}`), imported);
      }
      exported = runHf(CASES.map((_, i) => check(join(dir, `out-${i}`)))) as HfCheck[];
    } catch (e) {
      setupError = e;
    }
  }, 600_000);
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  for (const [i, c] of CASES.entries()) {
    describe(c.name, () => {
      it('imports with the architecture its config names', () => {
        if (setupError) throw setupError;
        expect(hf[i]!.class).toBe((c.config.architectures as string[] | undefined)?.[0] ?? hf[i]!.class);
        expect(imports[i]!.spec).toMatchObject(c.spec);
        expect(imports[i]!.info.architecture).toBe(hf[i]!.class);
      });

      for (const engine of ['tfjs', 'torch'] as const) {
        it(`${engine}: logits within 1e-4 of transformers, and the same greedy continuation`, async () => {
          if (setupError) throw setupError;
          if (engine === 'torch' && !torch.info) throw new Error(`torch engine unavailable: ${torch.why}`);
          const { spec, weights } = imports[i]!;
          const model = await createEngine({
            backend: 'cpu',
            engine: engine === 'torch' ? { kind: 'torch', device: 'cpu', dtype: 'fp32', torch: '' } : undefined,
            spec,
            weights,
          });
          try {
            const ours = await run(model);
            const diff = maxAbsDiff(ours.logits, hf[i]!.logits, hf[i]!.logits[0]!.length);
            console.log(
              `[open-models] ${c.name} ${engine}: max |logit diff| vs transformers = ${diff.toExponential(3)}`,
            );
            expect(diff).toBeLessThanOrEqual(1e-4);
            expect(ours.greedy).toEqual(untilEos(hf[i]!.greedy));
          } finally {
            await model.dispose();
          }
        }, 120_000);
      }

      it('exports back as the same architecture: transformers reloads it with the same config and logits', () => {
        if (setupError) throw setupError;
        const back = exported[i]!;
        expect(back.class).toBe(hf[i]!.class);
        expect(back.config).toMatchObject(c.config);
        // Everything that shapes the computation reads back the same.
        for (const k of [
          'model_type',
          'hidden_size',
          'num_hidden_layers',
          'num_attention_heads',
          'num_key_value_heads',
          'rope_parameters',
          'sliding_window',
          'use_sliding_window',
          'layer_types',
          'tie_word_embeddings',
          'num_experts',
          'num_local_experts',
          'num_experts_per_tok',
          'norm_topk_prob',
          'moe_intermediate_size',
          'intermediate_size',
        ])
          expect([k, back.config![k]]).toEqual([k, hf[i]!.config![k]]);
        // Mixtral's config class has no attention_bias (Lathe's Mixtral export has always written false).
        expect(back.config!.attention_bias ?? false).toBe(hf[i]!.config!.attention_bias ?? false);
        // head_dim may be left out of a config (hidden_size / num_attention_heads); we always write it.
        const headDim = (cfg: Record<string, unknown>) =>
          cfg.head_dim ?? (cfg.hidden_size as number) / (cfg.num_attention_heads as number);
        expect(headDim(back.config!)).toBe(headDim(hf[i]!.config!));
        const diff = maxAbsDiff(back.logits, hf[i]!.logits, hf[i]!.logits[0]!.length);
        expect(diff).toBeLessThanOrEqual(1e-6);
        expect(back.greedy).toEqual(hf[i]!.greedy);
      });
    });
  }
});
