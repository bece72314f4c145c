/**
 * HF import: folders saved by transformers itself (single file and sharded, fp32 and bf16,
 * tied and untied, Llama and Mixtral) load here with the same logits; bad folders fail with
 * errors that name the file and the field.
 */
import { existsSync } from 'node:fs';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { scratch, TALLY } from '../../test/helpers.js';
import { useBackend } from '../engine/tfjs/backend.js';
import { LatheError } from '../errors.js';
import { generate } from '../engine/sample.js';
import { LanguageModel } from '../engine/tfjs/model.js';
import type { ModelSpec } from '../model/spec.js';
import { encodeSafetensors, f32 } from '../model/safetensors.js';
import { Tokenizer } from '../tokenizer/index.js';
import { hfConfigJson, hfConfigOf } from '../model/hf-config.js';
import { modelConfigOf, specFromHfConfig } from '../recipe/hf-config.js';
import { importHf, loadHf } from './hf.js';
import { maxAbsDiff, runHf, type HfCheck } from './test/hf-python.js';

const PROMPT = [0, 5, 17, 100, 250, 3, 42, 42, 7, 199, 64, 12];

interface Saved {
  name: string;
  job: Record<string, unknown>;
  expect: { arch: 'dense' | 'moe'; tied: boolean; headDim: number; grown: boolean };
}

const SAVED: Saved[] = [
  {
    name: 'Llama fp32, one file, untied, GQA',
    job: { arch: 'llama', dtype: 'float32', tied: false, seed: 1 },
    expect: { arch: 'dense', tied: false, headDim: 8, grown: false },
  },
  {
    name: 'Llama bf16, sharded, tied, head_dim 16, vocab_size = tokenizer size',
    job: {
      arch: 'llama',
      dtype: 'bfloat16',
      shard: '20KB',
      tied: true,
      seed: 2,
      head_dim: 16,
      vocab_size: 'tokenizer',
    },
    expect: { arch: 'dense', tied: true, headDim: 16, grown: true },
  },
  {
    name: 'Mixtral fp16, sharded',
    job: { arch: 'mixtral', dtype: 'float16', shard: '40KB', tied: false, seed: 3 },
    expect: { arch: 'moe', tied: false, headDim: 8, grown: false },
  },
];

describe('HF import of folders saved by transformers', () => {
  let dir: string;
  let results: HfCheck[] = [];
  // A missing venv or transformers fails each test with the setup hint (not a skip).
  let hfError: unknown;

  beforeAll(async () => {
    await useBackend('cpu');
    dir = await scratch('lathe-import-');
    const texts = (await readFile(TALLY, 'utf8'))
      .split('\n')
      .filter(Boolean)
      .slice(0, 300)
      .map((l) => (JSON.parse(l) as { text: string }).text);
    const jobs = SAVED.flatMap((s, i) => [
      { op: 'make' as const, dir: join(dir, `saved-${i}`), texts, ...s.job },
      { op: 'check' as const, dir: join(dir, `saved-${i}`), prompt: PROMPT, max_new_tokens: 10, tokenizer: false },
    ]);
    try {
      results = runHf(jobs).filter((_, k) => k % 2 === 1) as HfCheck[];
    } catch (e) {
      hfError = e;
    }
  }, 300_000);
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  for (const [i, s] of SAVED.entries()) {
    it(`${s.name}: logits match transformers within 1e-4`, async () => {
      if (hfError) throw hfError;
      const { model, tokenizer, imported } = await loadHf(join(dir, `saved-${i}`));
      try {
        expect(imported.spec).toMatchObject({
          arch: s.expect.arch,
          tieEmbeddings: s.expect.tied,
          headDim: s.expect.headDim,
          heads: 4,
          kvHeads: 2,
          layers: 2,
          context: 64,
        });
        expect(imported.files.length > 1).toBe(Boolean(s.job.shard));
        const hf = results[i]!;
        const hfVocab = hf.logits[0]!.length;
        // Lathe adds its special tokens to a tokenizer that lacks them; with no spare rows the vocabulary grows.
        expect(Boolean(imported.grownVocab)).toBe(s.expect.grown);
        expect(model.spec.vocabSize).toBeGreaterThanOrEqual(tokenizer.vocabSize);
        if (s.expect.grown) expect(imported.grownVocab).toEqual([hfVocab, tokenizer.vocabSize]);
        const flat = await model.logits(PROMPT);
        const v = model.spec.vocabSize;
        const ours = Array.from({ length: PROMPT.length }, (_, r) => Array.from(flat.subarray(r * v, (r + 1) * v)));
        const diff = maxAbsDiff(ours, hf.logits, hfVocab);
        console.log(`[import] ${s.name}: max |logit diff| vs transformers = ${diff.toExponential(3)}`);
        expect(diff).toBeLessThanOrEqual(1e-4);
        if (!s.expect.grown) {
          const greedy = await generate(model, PROMPT, { maxTokens: 10, temperature: 0, stop: [1] });
          const end = hf.greedy.indexOf(1);
          expect(greedy).toEqual(end >= 0 ? hf.greedy.slice(0, end) : hf.greedy);
        }
        // The spec seeds a recipe (`from`); a head size other than dim / heads is said as headDim.
        const m = modelConfigOf(imported.spec);
        expect(m).toMatchObject({ dim: 32, kvHeads: 2, context: 64, vocabSize: imported.spec.vocabSize });
        expect(m.headDim).toBe(s.expect.headDim * 4 === 32 ? undefined : s.expect.headDim);
      } finally {
        await model.dispose();
      }
    });
  }
});

/** A small valid export-shaped folder written without transformers, for the bad-input cases. */
async function validFolder(root: string, name: string, tok: Tokenizer, over: Partial<ModelSpec> = {}): Promise<string> {
  const spec: ModelSpec = {
    arch: 'dense',
    vocabSize: tok.vocabSize,
    dim: 16,
    layers: 1,
    heads: 2,
    kvHeads: 2,
    headDim: 8,
    ffnDim: 32,
    context: 16,
    ropeTheta: 10000,
    normEps: 1e-5,
    tieEmbeddings: true,
    initStd: 0.02,
    experts: 2,
    topK: 1,
    auxLossCoef: 0.01,
    zLossCoef: 0.001,
    ...over,
  };
  const d = join(root, name);
  await mkdir(d, { recursive: true });
  const model = LanguageModel.init(spec, 1);
  const tensors = new Map([...(await model.weights())].map(([k, w]) => [k, f32(w.shape, w.data)]));
  await model.dispose();
  await writeFile(join(d, 'model.safetensors'), encodeSafetensors(tensors, { format: 'pt' }));
  await writeFile(
    join(d, 'config.json'),
    hfConfigJson(hfConfigOf(spec, { bos: tok.special.bos, eos: tok.special.eos, pad: tok.special.pad })),
  );
  await tok.save(join(d, 'tokenizer.json'));
  return d;
}

async function editConfig(d: string, edit: (c: Record<string, unknown>) => void): Promise<void> {
  const c = JSON.parse(await readFile(join(d, 'config.json'), 'utf8'));
  edit(c);
  await writeFile(join(d, 'config.json'), JSON.stringify(c));
}

async function importError(d: string): Promise<LatheError> {
  const e = await importHf(d).then(
    () => undefined,
    (err: unknown) => err,
  );
  expect(e).toBeInstanceOf(LatheError);
  expect((e as LatheError).exitCode).toBe(2);
  return e as LatheError;
}

describe('HF import: bad input', () => {
  let root: string;
  let tok: Tokenizer;
  beforeAll(async () => {
    await useBackend('cpu');
    root = await scratch('lathe-import-bad-');
    tok = await Tokenizer.train('let a = 1\nemit a * 2\n'.repeat(50), { vocabSize: 300 });
  });
  afterAll(async () => {
    await rm(root, { recursive: true, force: true });
  });

  it('a valid folder imports (the baseline for the cases below)', async () => {
    const d = await validFolder(root, 'ok', tok);
    const r = await importHf(d);
    expect(r.spec).toMatchObject({ dim: 16, layers: 1, tieEmbeddings: true });
  });

  it('a RoPE type Lathe does not implement (transformers 4 spelling)', async () => {
    const d = await validFolder(root, 'rope4', tok);
    await editConfig(d, (c) => (c.rope_scaling = { rope_type: 'yarn', factor: 8 }));
    expect((await importError(d)).message).toMatch(
      /\/rope4\/config\.json: rope_scaling\.rope_type: "yarn" is not supported; Lathe implements RoPE types default, linear and llama3/,
    );
  });

  it('a RoPE type Lathe does not implement (transformers 5 spelling), and a bad llama3 field', async () => {
    const d = await validFolder(root, 'rope5', tok);
    await editConfig(d, (c) => (c.rope_parameters = { rope_type: 'dynamic', rope_theta: 10000, factor: 2 }));
    expect((await importError(d)).message).toMatch(
      /config\.json: rope_parameters\.rope_type: "dynamic" is not supported/,
    );
    await editConfig(
      d,
      (c) => (c.rope_parameters = { rope_type: 'llama3', rope_theta: 10000, factor: 8, low_freq_factor: 1 }),
    );
    expect((await importError(d)).message).toMatch(
      /config\.json: rope_parameters\.high_freq_factor: must be a number above 0, got undefined/,
    );
  });

  it('an unknown architecture', async () => {
    const d = await validFolder(root, 'gpt2', tok);
    await editConfig(d, (c) => {
      c.architectures = ['GPT2LMHeadModel'];
      c.model_type = 'gpt2';
    });
    expect((await importError(d)).message).toMatch(
      /\/gpt2\/config\.json: architectures: "GPT2LMHeadModel" is not supported; Lathe imports LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM, MixtralForCausalLM, Qwen3MoeForCausalLM/,
    );
    await editConfig(d, (c) => delete c.architectures);
    expect((await importError(d)).message).toMatch(/config\.json: model_type: "gpt2" is not supported/);
  });

  it('every refused config field is named (REFUSED_FIELDS)', async () => {
    const d = await validFolder(root, 'fields', tok);
    const qwen3Moe = (c: Record<string, unknown>) =>
      Object.assign(c, {
        architectures: ['Qwen3MoeForCausalLM'],
        model_type: 'qwen3_moe',
        num_experts: 2,
        num_experts_per_tok: 1,
      });
    const cases: [(c: Record<string, unknown>) => void, RegExp][] = [
      [(c) => (c.mlp_bias = true), /config\.json: mlp_bias: true is not supported/],
      [(c) => (c.attention_dropout = 0.1), /config\.json: attention_dropout: 0\.1 is not supported/],
      [(c) => (c.partial_rotary_factor = 0.5), /config\.json: partial_rotary_factor: 0\.5 is not supported/],
      [
        (c) =>
          Object.assign(c, {
            architectures: ['Qwen2ForCausalLM'],
            model_type: 'qwen2',
            use_sliding_window: false,
            layer_types: ['sliding_attention'],
          }),
        /config\.json: layer_types: names sliding_attention layers but the sliding window is off/,
      ],
      [(c) => Object.assign(qwen3Moe(c), { num_experts: 0 }), /config\.json: num_experts: 0 is not supported/],
      [
        (c) => Object.assign(qwen3Moe(c), { decoder_sparse_step: 0 }),
        /config\.json: decoder_sparse_step: must be a positive integer, got 0/,
      ],
      [
        (c) => Object.assign(qwen3Moe(c), { mlp_only_layers: [0] }),
        /config\.json: mlp_only_layers: leaves no layer with experts/,
      ],
      [(c) => (c.hidden_act = 'gelu'), /config\.json: hidden_act: "gelu" is not supported/],
      [(c) => (c.num_key_value_heads = 3), /config\.json: num_key_value_heads: 3 must divide num_attention_heads 2/],
      [(c) => (c.hidden_size = 'big'), /config\.json: hidden_size: must be a positive integer/],
      [
        (c) => (c.quantization_config = { quant_method: 'gptq' }),
        /config\.json: quantization_config: quantized checkpoints \(gptq\)/,
      ],
    ];
    const original = await readFile(join(d, 'config.json'), 'utf8');
    for (const [edit, re] of cases) {
      await writeFile(join(d, 'config.json'), original);
      await editConfig(d, edit);
      expect((await importError(d)).message).toMatch(re);
    }
  });

  it('attention_bias without bias tensors, or bias tensors the config does not name', async () => {
    const d = await validFolder(root, 'bias', tok);
    await editConfig(d, (c) => (c.attention_bias = true));
    expect((await importError(d)).message).toMatch(
      /model\.safetensors: tensor model\.layers\.0\.self_attn\.q_proj\.bias: missing/,
    );
    const withBias = await validFolder(root, 'bias2', tok, { attentionBias: 'all' });
    await editConfig(withBias, (c) => (c.attention_bias = false));
    expect((await importError(withBias)).message).toMatch(
      /tensor model\.layers\.0\.self_attn\.k_proj\.bias: not part of a LlamaForCausalLM model of .*config\.json \(this architecture has no such bias; check attention_bias and mlp_bias\) \(and 3 more\)/,
    );
  });

  it('missing or wrong weights files and tensors', async () => {
    const d = await validFolder(root, 'weights', tok);
    const weights = await readFile(join(d, 'model.safetensors'));
    await rm(join(d, 'model.safetensors'));
    expect((await importError(d)).message).toMatch(
      /\/weights\/model\.safetensors: missing \(and no model\.safetensors\.index\.json\)/,
    );
    await writeFile(join(d, 'pytorch_model.bin'), 'pickle');
    expect((await importError(d)).message).toMatch(
      /pytorch_model\.bin is a pickle checkpoint.*safe_serialization=True/,
    );
    // A shard index naming a file that is not there.
    await writeFile(
      join(d, 'model.safetensors.index.json'),
      JSON.stringify({ metadata: {}, weight_map: { 'model.norm.weight': 'model-00001-of-00002.safetensors' } }),
    );
    expect((await importError(d)).message).toMatch(
      /model-00001-of-00002\.safetensors: missing \(listed in .*model\.safetensors\.index\.json weight_map\)/,
    );
    await writeFile(join(d, 'model.safetensors.index.json'), JSON.stringify({ metadata: {} }));
    expect((await importError(d)).message).toMatch(/model\.safetensors\.index\.json: weight_map: missing/);
    await rm(join(d, 'model.safetensors.index.json'));
    // Untied config, but no lm_head in the file.
    await writeFile(join(d, 'model.safetensors'), weights);
    await editConfig(d, (c) => (c.tie_word_embeddings = false));
    expect((await importError(d)).message).toMatch(
      /model\.safetensors: tensor lm_head\.weight: missing \(.*config\.json tie_word_embeddings is false\)/,
    );
    // A shape that disagrees with the config.
    await editConfig(d, (c) => Object.assign(c, { tie_word_embeddings: true, intermediate_size: 48 }));
    expect((await importError(d)).message).toMatch(
      /model\.safetensors: tensor model\.layers\.0\.mlp\.gate_proj\.weight: shape \[32,16\] does not match \[48,16\] from .*config\.json/,
    );
  });

  it('a missing config.json or tokenizer.json', async () => {
    const d = await validFolder(root, 'files', tok);
    await rm(join(d, 'tokenizer.json'));
    expect((await importError(d)).message).toMatch(
      /\/files\/tokenizer\.json: missing; Lathe needs a fast \(tokenizer\.json\) ByteLevel BPE tokenizer/,
    );
    await rm(join(d, 'config.json'));
    expect((await importError(d)).message).toMatch(/\/files\/config\.json: cannot read \(no such file\)/);
    expect(existsSync(join(d, 'model.safetensors'))).toBe(true);
  });

  it('llama3 RoPE scaling reads the same in the transformers 4 and 5 spellings', () => {
    const base = {
      architectures: ['LlamaForCausalLM'],
      hidden_size: 16,
      intermediate_size: 32,
      num_hidden_layers: 1,
      num_attention_heads: 2,
      vocab_size: 300,
      max_position_embeddings: 1024,
    };
    const scaling = { factor: 8.0, low_freq_factor: 1.0, high_freq_factor: 4.0, original_max_position_embeddings: 64 };
    const v4 = specFromHfConfig(
      { ...base, rope_theta: 500000.0, rope_scaling: { rope_type: 'llama3', ...scaling } },
      'config.json',
    ).spec;
    const v5 = specFromHfConfig(
      { ...base, rope_parameters: { rope_type: 'llama3', rope_theta: 500000.0, ...scaling } },
      'config.json',
    ).spec;
    expect(v4).toEqual(v5);
    expect(v4).toMatchObject({
      ropeTheta: 500000,
      ropeScaling: { type: 'llama3', factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalContext: 64 },
    });
    // Without original_max_position_embeddings, transformers takes max_position_embeddings.
    const { original_max_position_embeddings: _, ...rest } = scaling;
    expect(
      specFromHfConfig({ ...base, rope_parameters: { rope_type: 'llama3', ...rest } }, 'config.json').spec.ropeScaling,
    ).toMatchObject({ originalContext: 1024 });
  });

  it('family defaults follow transformers (MistralConfig, Qwen2Config, Qwen3Config, Qwen3MoeConfig)', () => {
    const minimal = {
      hidden_size: 64,
      intermediate_size: 32,
      num_hidden_layers: 4,
      num_attention_heads: 32,
      vocab_size: 300,
    };
    // Mistral: a 4096 window unless the config says null.
    expect(specFromHfConfig({ ...minimal, model_type: 'mistral' }, 'c').spec).toMatchObject({
      family: 'mistral',
      kvHeads: 8,
      slidingWindow: 4096,
    });
    expect(specFromHfConfig({ ...minimal, model_type: 'mistral', sliding_window: null }, 'c').spec.slidingWindow).toBe(
      undefined,
    );
    // Qwen2: biases; the window only with use_sliding_window, from max_window_layers (28) on.
    const q2 = specFromHfConfig({ ...minimal, model_type: 'qwen2', sliding_window: 16 }, 'c').spec;
    expect(q2).toMatchObject({ attentionBias: 'qkv', context: 32768, normEps: 1e-6 });
    expect(q2.slidingWindow).toBe(undefined);
    expect(
      specFromHfConfig(
        { ...minimal, model_type: 'qwen2', use_sliding_window: true, sliding_window: 16, max_window_layers: 2 },
        'c',
      ).spec,
    ).toMatchObject({ slidingWindow: 16, windowLayers: [2, 3] });
    // Qwen3: head_dim 128 unless given, q/k norms.
    expect(specFromHfConfig({ ...minimal, model_type: 'qwen3' }, 'c').spec).toMatchObject({
      headDim: 128,
      qkNorm: true,
    });
    // Qwen3-MoE: 128 experts, top 8, moe_intermediate_size 768, no renormalisation.
    expect(specFromHfConfig({ ...minimal, model_type: 'qwen3_moe', decoder_sparse_step: 2 }, 'c').spec).toMatchObject({
      arch: 'moe',
      experts: 128,
      topK: 8,
      ffnDim: 768,
      denseFfnDim: 32,
      normTopK: false,
      denseLayers: [0, 2],
    });
  });

  it('config defaults follow transformers (LlamaConfig / MixtralConfig) for omitted fields', () => {
    const minimal = {
      architectures: ['LlamaForCausalLM'],
      hidden_size: 16,
      intermediate_size: 32,
      num_hidden_layers: 1,
      num_attention_heads: 2,
      vocab_size: 300,
    };
    const { spec, info } = specFromHfConfig(minimal, 'config.json');
    expect(spec).toMatchObject({
      kvHeads: 2,
      headDim: 8,
      context: 2048,
      ropeTheta: 10000,
      normEps: 1e-6,
      tieEmbeddings: false,
      initStd: 0.02,
    });
    expect(info).toMatchObject({ bosTokenId: 1, eosTokenId: 2, padTokenId: undefined });
    const mixtral = specFromHfConfig(
      { ...minimal, architectures: ['MixtralForCausalLM'], num_attention_heads: 8, hidden_size: 64 },
      'config.json',
    ).spec;
    expect(mixtral).toMatchObject({
      arch: 'moe',
      kvHeads: 8,
      experts: 8,
      topK: 2,
      ropeTheta: 1e6,
      normEps: 1e-5,
      context: 131072,
      auxLossCoef: 0.001,
    });
    expect(
      specFromHfConfig({ ...minimal, max_position_embeddings: 4096 }, 'config.json', { context: 256 }).spec.context,
    ).toBe(256);
    expect(() =>
      specFromHfConfig({ ...minimal, max_position_embeddings: 64 }, 'config.json', { context: 256 }),
    ).toThrow(/context: 256 must be a positive integer at most config\.json max_position_embeddings 64/);
  });
});
