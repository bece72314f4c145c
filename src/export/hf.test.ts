/**
 * HF export: transformers (in the project's .venv) loads what we write and computes the same
 * logits and greedy completion; export -> import gives back the same model to the bit.
 */
import { readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { scratch, tallySlice, tinyRecipe } from '../../test/helpers.js';
import { useBackend } from '../engine/tfjs/backend.js';
import { generate } from '../engine/sample.js';
import type { Engine } from '../engine/engine.js';
import { Recipe } from '../runs/recipe.js';
import { loadModel } from '../runs/index.js';
import { readSafetensors } from '../model/safetensors.js';
import type { Tokenizer } from '../tokenizer/index.js';
import { exportHf, HF_FILES, loadHf } from './hf.js';
import { maxAbsDiff, runHf, type HfCheck } from './test/hf-python.js';

const PROMPT = 'let size = 80\nemit';
// A function-calling turn (OpenAI format: content null beside tool_calls) checks the exported template's tool parts.
const CHAT = [
  { role: 'system', content: 'You write Tally.' },
  { role: 'user', content: 'Emit 2.' },
  {
    role: 'assistant',
    content: null,
    tool_calls: [{ id: 'c1', type: 'function', function: { name: 'run', arguments: '{"code": "emit 2"}' } }],
  },
  { role: 'tool', tool_call_id: 'c1', content: '2' },
  { role: 'assistant', content: 'emit 2' },
  { role: 'user', content: 'Now 3.' },
];

interface Case {
  name: string;
  model: Record<string, unknown>;
  arch: 'LlamaForCausalLM' | 'MixtralForCausalLM';
  tied: boolean;
}

const CASES: Case[] = [
  {
    name: 'dense, tied embeddings',
    model: { dim: 32, layers: 1, heads: 2, context: 32 },
    arch: 'LlamaForCausalLM',
    tied: true,
  },
  {
    name: 'dense, untied embeddings, GQA',
    model: { dim: 32, layers: 2, heads: 4, kvHeads: 2, context: 32, tieEmbeddings: false },
    arch: 'LlamaForCausalLM',
    tied: false,
  },
  {
    name: 'MoE (4 experts, top-2), GQA',
    model: { arch: 'moe', experts: 4, topK: 2, dim: 32, layers: 2, heads: 4, kvHeads: 1, context: 32 },
    arch: 'MixtralForCausalLM',
    tied: true,
  },
];

async function allLogits(model: Engine, ids: number[]): Promise<number[][]> {
  const flat = await model.logits(ids);
  const v = model.spec.vocabSize;
  return Array.from({ length: ids.length }, (_, i) => Array.from(flat.subarray(i * v, (i + 1) * v)));
}

function logitsData(model: Engine, ids: number[]): Promise<Float32Array> {
  return model.logits(ids);
}

describe('HF export', () => {
  let dir: string;
  const exported: { c: Case; run: string; out: string; model: Engine; tokenizer: Tokenizer; ids: number[] }[] = [];
  let hf: HfCheck[] = [];
  // A missing venv or transformers fails each transformers test with the setup hint (not a skip).
  let hfError: unknown;

  beforeAll(async () => {
    await useBackend('cpu');
    dir = await scratch('lathe-export-');
    const data = await tallySlice(dir, 150);
    for (const [i, c] of CASES.entries()) {
      const run = join(dir, `run-${i}`);
      const recipe = new Recipe(
        tinyRecipe(data, {
          model: c.model,
          train: { steps: 12, batchSize: 4, warmupSteps: 2, checkpointEvery: 0 },
          eval: { every: 0, batches: 1 },
        }),
        { baseDir: dir },
      );
      await recipe.run({ out: run });
      const out = join(dir, `hf-${i}`);
      const r = await exportHf(run, out);
      expect(r.architecture).toBe(c.arch);
      const { model, tokenizer } = await loadModel(run);
      exported.push({ c, run, out, model, tokenizer, ids: [tokenizer.special.bos, ...tokenizer.encode(PROMPT)] });
    }
    // One Python process for all three (importing torch dominates its time).
    try {
      hf = runHf(
        exported.map((e) => ({
          op: 'check',
          dir: e.out,
          prompt: e.ids,
          max_new_tokens: 10,
          texts: [PROMPT, 'emit pnl * bps(20)\n'],
          chat: CHAT,
        })),
      ) as HfCheck[];
    } catch (e) {
      hfError = e;
    }
  }, 600_000);

  afterAll(async () => {
    for (const e of exported) await e.model.dispose();
    await rm(dir, { recursive: true, force: true });
  });

  for (const [i, c] of CASES.entries()) {
    describe(c.name, () => {
      it('writes the HF files, with the config transformers needs', async () => {
        const { out, model, tokenizer } = exported[i]!;
        const cfg = JSON.parse(await readFile(join(out, 'config.json'), 'utf8'));
        const s = model.spec;
        expect(cfg).toMatchObject({
          architectures: [c.arch],
          hidden_size: s.dim,
          intermediate_size: s.ffnDim,
          num_hidden_layers: s.layers,
          num_attention_heads: s.heads,
          num_key_value_heads: s.kvHeads,
          head_dim: s.headDim,
          rms_norm_eps: s.normEps,
          rope_theta: s.ropeTheta,
          max_position_embeddings: s.context,
          vocab_size: tokenizer.vocabSize,
          tie_word_embeddings: c.tied,
          bos_token_id: tokenizer.special.bos,
          eos_token_id: tokenizer.special.eos,
          pad_token_id: tokenizer.special.pad,
          torch_dtype: 'float32',
          hidden_act: 'silu',
          attention_bias: false,
          mlp_bias: false,
        });
        if (c.arch === 'MixtralForCausalLM')
          expect(cfg).toMatchObject({
            num_local_experts: 4,
            num_experts_per_tok: 2,
            output_router_logits: false,
            router_aux_loss_coef: s.auxLossCoef,
          });
        for (const f of HF_FILES) expect(await readFile(join(out, f))).toBeTruthy();
        const st = await readSafetensors(join(out, 'model.safetensors'));
        expect(st.metadata).toEqual({ format: 'pt' });
        expect(st.tensors.has('lm_head.weight')).toBe(!c.tied);
        expect([...st.tensors.values()].every((t) => t.dtype === 'F32')).toBe(true);
        const tc = JSON.parse(await readFile(join(out, 'tokenizer_config.json'), 'utf8'));
        expect(tc.chat_template).toBe(tokenizer.chatTemplate);
      });

      it('transformers gives the same next-token logits (max abs diff <= 1e-4) and greedy completion', async () => {
        const { model, tokenizer, ids } = exported[i]!;
        expect(ids.length + 10).toBeLessThanOrEqual(model.spec.context);
        if (hfError) throw hfError;
        const r = hf[i]!;
        expect(r.class).toBe(c.arch);
        const ours = await allLogits(model, ids);
        const diff = maxAbsDiff(ours, r.logits);
        console.log(
          `[export] ${c.name}: max |logit diff| vs transformers over ${ids.length} positions x ${ours[0]!.length} = ${diff.toExponential(3)}`,
        );
        expect(diff).toBeLessThanOrEqual(1e-4);
        // Same stop tokens as the exported generation_config (eos, end).
        const greedy = await generate(model, ids, {
          maxTokens: 10,
          temperature: 0,
          stop: [tokenizer.special.eos, tokenizer.special.end],
        });
        const stops = new Set([tokenizer.special.eos, tokenizer.special.end]);
        const hfGreedy = r.greedy.slice(0, (r.greedy.findIndex((t) => stops.has(t)) + 1 || r.greedy.length + 1) - 1);
        console.log(`[export] ${c.name}: greedy ${JSON.stringify(greedy)} ${JSON.stringify(tokenizer.decode(greedy))}`);
        expect(hfGreedy).toEqual(greedy);
        expect(greedy.length).toBeGreaterThan(0);
        // The tokenizer and chat template agree too.
        expect(r.texts).toEqual([tokenizer.encode(PROMPT), tokenizer.encode('emit pnl * bps(20)\n')]);
        const messages = CHAT.map((m) => ({ ...m, content: m.content ?? '' }));
        const rendered = tokenizer.renderChat(messages as never, { addGenerationPrompt: true });
        expect(r.chat).toContain('<tool_call>{"id": "c1", "name": "run", "arguments": {"code": "emit 2"}}</tool_call>');
        expect(r.chat).toBe(tokenizer.decode(rendered.ids));
      });

      it('round trip: export -> importHf gives bitwise-identical weights and logits', async () => {
        const { out, model, tokenizer, ids } = exported[i]!;
        const back = await loadHf(out);
        try {
          expect(back.imported.spec).toEqual(model.spec);
          expect(back.imported.grownVocab).toBeUndefined();
          expect(back.tokenizer.toJSON()).toEqual(tokenizer.toJSON());
          const a = await model.weights();
          const b = await back.model.weights();
          expect([...b.keys()].sort()).toEqual([...a.keys()].sort());
          for (const [name, w] of a)
            expect(Buffer.from(b.get(name)!.data.buffer).equals(Buffer.from(w.data.buffer)), name).toBe(true);
          const la = await logitsData(model, ids);
          const lb = await logitsData(back.model, ids);
          expect(Buffer.from(lb.buffer).equals(Buffer.from(la.buffer))).toBe(true);
        } finally {
          await back.model.dispose();
        }
      });
    });
  }
});
