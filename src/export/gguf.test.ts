/**
 * GGUF export, checked by llama.cpp itself: the `gguf` package's reader sees the metadata, tensor
 * types and the weights (within each encoding's error); llama.cpp (llama-cpp-python, compiled by
 * set-up) tokenizes like Lathe, renders the chat template like Lathe, gives Lathe's greedy text
 * from the f16 file, and a q8_0 perplexity within 2% of Lathe's on held-out Tally programs; for
 * the dense and the MoE architecture. Also the `lathe export --format gguf` verb and its bad input.
 */
import { readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Command, CommanderError } from 'commander';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { scratch, TALLY, tallySlice, tinyRecipe } from '../../test/helpers.js';
import { register } from '../cli/export.js';
import type { Engine } from '../engine/engine.js';
import { generate } from '../engine/sample.js';
import { useBackend } from '../engine/tfjs/backend.js';
import { LatheError } from '../errors.js';
import { Recipe } from '../runs/recipe.js';
import { loadModel } from '../runs/index.js';
import type { Tokenizer } from '../tokenizer/index.js';
import { exportGguf, ropeInterleave, type ExportGgufResult, type GgufQuant } from './gguf.js';
import { decodeTensor, encodeTensor } from './ggml-quant.js';
import { runGguf, type GgufRead, type LlamaRun } from './test/gguf-python.js';

const PROMPTS = ['let px = 10\nemit', 'let qty = 300\nlet fee = ', 'if bid < 91 then'];
const MAX_TOKENS = 16;
const CHAT = [
  { role: 'system', content: 'You write Tally.' },
  { role: 'user', content: 'Emit 2.' },
  { role: 'assistant', content: 'emit 2' },
  { role: 'user', content: 'Now 3.' },
];
// Held-out Tally programs: after the training slice, never seen in training.
const TRAIN_DOCS = 300;
const HELD_OUT_DOCS = 40;
const MAX_PPL_GAP = { q8_0: 0.02, q4_0: 0.2 };

async function runCli(args: string[]): Promise<string> {
  const program = new Command().exitOverride().configureOutput({ writeErr: () => {}, writeOut: () => {} });
  register(program);
  let out = '';
  vi.spyOn(process.stdout, 'write').mockImplementation((s) => ((out += String(s)), true));
  vi.spyOn(console, 'error').mockImplementation(() => {});
  try {
    await program.parseAsync(['node', 'lathe', ...args]);
  } finally {
    vi.restoreAllMocks();
  }
  return out;
}

/** Summed next-token NLL of each window under Lathe's model (float64 log-softmax). */
async function latheNll(model: Engine, windows: number[][]): Promise<{ nll: number; tokens: number }> {
  const v = model.spec.vocabSize;
  let nll = 0;
  let tokens = 0;
  for (const w of windows) {
    const logits = await model.logits(w.slice(0, -1));
    for (let i = 0; i < w.length - 1; i++) {
      const row = logits.subarray(i * v, (i + 1) * v);
      let m = -Infinity;
      for (const x of row) m = Math.max(m, x);
      let s = 0;
      for (const x of row) s += Math.exp(x - m);
      nll += m + Math.log(s) - row[w[i + 1]!]!;
      tokens++;
    }
  }
  return { nll, tokens };
}

const ppl = (r: { nll: number; tokens: number }) => Math.exp(r.nll / r.tokens);

interface Case {
  name: string;
  model: Record<string, unknown>;
  steps: number;
}

const CASES: Case[] = [
  {
    name: 'dense (GQA, untied head)',
    model: { dim: 32, layers: 2, heads: 4, kvHeads: 2, context: 32, tieEmbeddings: false },
    steps: 100,
  },
  {
    name: 'MoE (4 experts, top-2, tied)',
    model: { arch: 'moe', experts: 4, topK: 2, dim: 32, layers: 2, heads: 2, context: 32 },
    steps: 160,
  },
];
const QUANTS: GgufQuant[] = ['f16', 'q8_0', 'q4_0'];

describe('GGUF export', () => {
  let dir: string;
  let heldOut: string[] = [];
  const runs: { run: string; model: Engine; tokenizer: Tokenizer; files: Record<GgufQuant, ExportGgufResult> }[] = [];
  let printed = '';
  const read: GgufRead[] = [];
  const llama: LlamaRun[] = [];
  // A missing package fails each llama.cpp test with the set-up hint (not a skip).
  let pyError: unknown;
  const windowsOf = (tok: Tokenizer, ctx: number): number[][] => {
    const ids = heldOut.flatMap((t) => [tok.special.bos, ...tok.encode(t), tok.special.eos]);
    const out: number[][] = [];
    for (let i = 0; i + ctx <= ids.length; i += ctx) out.push(ids.slice(i, i + ctx));
    return out;
  };

  beforeAll(async () => {
    await useBackend('cpu');
    dir = await scratch('lathe-gguf-');
    const data = await tallySlice(dir, TRAIN_DOCS);
    heldOut = (await readFile(TALLY, 'utf8'))
      .split('\n')
      .filter(Boolean)
      .slice(TRAIN_DOCS, TRAIN_DOCS + HELD_OUT_DOCS)
      .map((l) => (JSON.parse(l) as { text: string }).text);
    for (const [i, c] of CASES.entries()) {
      const run = join(dir, `run-${i}`);
      await new Recipe(
        tinyRecipe(data, {
          model: c.model,
          train: { steps: c.steps, batchSize: 8, lr: 0.02, minLr: 0.002, warmupSteps: 5, checkpointEvery: 0 },
          eval: { every: 0, batches: 1 },
        }),
        { baseDir: dir },
      ).run({ out: run });
      const files = {} as Record<GgufQuant, ExportGgufResult>;
      for (const q of QUANTS) {
        if (i === 0 && q === 'q8_0') {
          // Through the CLI once: the verb writes model-<quant>.gguf into a directory and prints its report.
          printed = await runCli([
            'export',
            run,
            '--format',
            'gguf',
            '--quant',
            q,
            '--out',
            join(dir, 'cli'),
            '--json',
          ]);
          files[q] = JSON.parse(printed) as ExportGgufResult;
          printed += await runCli(['export', run, '--format', 'gguf', '--out', join(dir, 'cli', 'plain.gguf')]);
        } else files[q] = await exportGguf(run, join(dir, `run-${i}-${q}.gguf`), { quant: q });
      }
      const { model, tokenizer } = await loadModel(run);
      runs.push({ run, model, tokenizer, files });
    }
    try {
      const jobs: Record<string, unknown>[] = [];
      for (const r of runs) {
        for (const q of QUANTS)
          jobs.push({
            op: 'read',
            path: r.files[q].path,
            tensors: ['blk.0.attn_q.weight', 'blk.1.ffn_norm.weight', 'token_embd.weight'],
          });
        const ctx = r.model.spec.context;
        const windows = windowsOf(r.tokenizer, ctx);
        jobs.push({
          op: 'llama',
          path: r.files.f16.path,
          n_ctx: ctx,
          texts: [PROMPTS[0], 'emit pnl * bps(20)\n<|end|>'],
          prompts: PROMPTS,
          max_tokens: MAX_TOKENS,
          chat: CHAT,
        });
        for (const q of ['q8_0', 'q4_0'] as const)
          jobs.push({ op: 'llama', path: r.files[q].path, n_ctx: ctx, windows });
      }
      const res = runGguf(jobs);
      for (let i = 0; i < runs.length; i++) {
        const at = i * 6;
        read.push(...(res.slice(at, at + 3) as GgufRead[]));
        llama.push(...(res.slice(at + 3, at + 6) as LlamaRun[]));
      }
    } catch (e) {
      pyError = e;
    }
  }, 900_000);

  afterEach(() => vi.restoreAllMocks());
  afterAll(async () => {
    for (const r of runs) await r.model.dispose();
    await rm(dir, { recursive: true, force: true });
  });

  it('lathe export --format gguf writes model-<quant>.gguf into a directory and prints what it wrote', () => {
    const r = runs[0]!.files.q8_0;
    expect(r.path).toBe(join(dir, 'cli', 'model-q8_0.gguf'));
    expect(r).toMatchObject({ quant: 'q8_0', architecture: 'llama', arch: 'dense', step: 100 });
    expect(printed).toMatch(/gguf f16: \d+ F16, \d+ F32 tensors, [\d.]+ MiB, weight relative RMS error /);
    expect(printed).toMatch(/exported step 100 \(Llama-style dense, llama\.cpp architecture llama\) to .*plain\.gguf/);
  });

  for (const [i, c] of CASES.entries()) {
    describe(c.name, () => {
      it('the gguf reader sees llama metadata, the tokenizer, each encoding, and the weights within its error', async () => {
        if (pyError) throw pyError;
        const { model, tokenizer, files } = runs[i]!;
        const s = model.spec;
        const weights = await model.weights();
        for (const [k, q] of QUANTS.entries()) {
          const g = read[3 * i + k]!;
          expect(g.alignment).toBe(32);
          expect(g.meta).toMatchObject({
            'general.architecture': 'llama',
            'general.file_type': { f16: 1, q8_0: 7, q4_0: 2 }[q],
            'llama.block_count': s.layers,
            'llama.embedding_length': s.dim,
            'llama.feed_forward_length': s.ffnDim,
            'llama.attention.head_count': s.heads,
            'llama.attention.head_count_kv': s.kvHeads,
            'llama.context_length': s.context,
            'tokenizer.ggml.model': 'gpt2',
            'tokenizer.ggml.tokens': { array: s.vocabSize },
            'tokenizer.ggml.bos_token_id': tokenizer.special.bos,
            'tokenizer.ggml.eos_token_id': tokenizer.special.eos,
            'tokenizer.chat_template': tokenizer.chatTemplate,
          });
          if (s.arch === 'moe') expect(g.meta).toMatchObject({ 'llama.expert_count': 4, 'llama.expert_used_count': 2 });
          const byName = new Map(g.tensors.map((t) => [t.name, t]));
          expect(byName.has('output.weight')).toBe(!s.tieEmbeddings);
          expect(byName.get('blk.1.ffn_norm.weight')?.type).toBe('F32');
          const ffn = s.arch === 'moe' ? 'blk.0.ffn_down_exps.weight' : 'blk.0.ffn_down.weight';
          expect(byName.get(ffn)).toEqual({
            name: ffn,
            type: { f16: 'F16', q8_0: 'Q8_0', q4_0: 'Q4_0' }[q],
            ne: s.arch === 'moe' ? [s.ffnDim, s.dim, s.experts] : [s.ffnDim, s.dim],
          });
          if (s.arch === 'moe') expect(byName.get('blk.0.ffn_gate_inp.weight')?.type).toBe('F32');
          expect(Object.values(files[q].tensorTypes).reduce((a, b) => a + b!, 0)).toBe(g.tensors.length);
          // The reader's dequantized q projection is ours, encoded then decoded (so the file layout is
          // ggml's), and within the encoding's error of Lathe's weight after the RoPE row permutation.
          const qw = ropeInterleave(
            weights.get('model.layers.0.self_attn.q_proj.weight')!.data,
            s.heads,
            s.headDim,
            s.dim,
          );
          const type = ({ f16: 'F16', q8_0: 'Q8_0', q4_0: 'Q4_0' } as const)[q];
          const ours = decodeTensor(type, encodeTensor(type, qw, s.dim), qw.length);
          const theirs = g.values['blk.0.attn_q.weight']!;
          expect(theirs.length).toBe(qw.length);
          let same = 0;
          let err = 0;
          let ref = 0;
          for (let j = 0; j < qw.length; j++) {
            if (theirs[j] === ours[j]) same++;
            err += (theirs[j]! - qw[j]!) ** 2;
            ref += qw[j]! ** 2;
          }
          expect(same).toBe(qw.length);
          expect(Math.sqrt(err / ref)).toBeLessThan({ f16: 1e-3, q8_0: 0.01, q4_0: 0.15 }[q]);
          expect(g.values['blk.1.ffn_norm.weight']).toEqual(
            Array.from(weights.get('model.layers.1.post_attention_layernorm.weight')!.data),
          );
        }
      });

      it('llama.cpp tokenizes and renders the chat template like Lathe', () => {
        if (pyError) throw pyError;
        const { tokenizer, model } = runs[i]!;
        const l = llama[3 * i]!;
        expect(l.n_vocab).toBe(model.spec.vocabSize);
        expect([l.bos, l.eos]).toEqual([tokenizer.special.bos, tokenizer.special.eos]);
        expect(l.texts).toEqual([tokenizer.encode(PROMPTS[0]!), tokenizer.encode('emit pnl * bps(20)\n<|end|>')]);
        expect(l.texts[1]!.at(-1)).toBe(tokenizer.special.end);
        const rendered = tokenizer.renderChat(CHAT as never, { addGenerationPrompt: true });
        expect(l.chat).toBe(tokenizer.decode(rendered.ids));
      });

      it('greedy text from the f16 file equals Lathe on 3 prompts', async () => {
        if (pyError) throw pyError;
        const { tokenizer, model } = runs[i]!;
        const l = llama[3 * i]!;
        const stop = [tokenizer.special.eos, tokenizer.special.end];
        for (const [k, p] of PROMPTS.entries()) {
          const ids = [tokenizer.special.bos, ...tokenizer.encode(p)];
          const out = await generate(model, ids, { maxTokens: MAX_TOKENS, temperature: 0, stop });
          const text = tokenizer.decode(out.filter((t) => !stop.includes(t)));
          console.log(
            `[gguf] ${c.name}: prompt ${JSON.stringify(p)} -> Lathe ${JSON.stringify(text)}, llama.cpp f16 ${JSON.stringify(l.completions[k])}`,
          );
          expect(text.length).toBeGreaterThan(0);
          expect(l.completions[k]).toBe(text);
        }
      });

      it("q8_0's held-out perplexity is within 2% of Lathe's (q4_0 reported, within 20%)", async () => {
        if (pyError) throw pyError;
        const { tokenizer, model } = runs[i]!;
        const windows = windowsOf(tokenizer, model.spec.context);
        const ours = await latheNll(model, windows);
        const base = ppl(ours);
        expect(base).toBeLessThan(20); // the run learned Tally (vocab 320)
        for (const [k, q] of (['q8_0', 'q4_0'] as const).entries()) {
          const r = llama[3 * i + 1 + k]!.windows;
          const theirs = { nll: r.reduce((a, w) => a + w.nll, 0), tokens: r.reduce((a, w) => a + w.tokens, 0) };
          expect(theirs.tokens).toBe(ours.tokens);
          const gap = ppl(theirs) / base - 1;
          console.log(
            `[gguf] ${c.name}: held-out perplexity over ${ours.tokens} tokens: Lathe ${base.toFixed(4)}, llama.cpp ${q} ${ppl(theirs).toFixed(4)} (${(100 * gap).toFixed(3)}%), file ${(runs[i]!.files[q].bytes / 1024).toFixed(1)} KiB vs f16 ${(runs[i]!.files.f16.bytes / 1024).toFixed(1)} KiB`,
          );
          expect(Math.abs(gap)).toBeLessThan(MAX_PPL_GAP[q]);
        }
      });
    });
  }

  it('bad input: an existing file, an unknown quant, a missing checkpoint, a family it does not map', async () => {
    const fail = async (args: string[], re: RegExp) => {
      const e = await runCli(args).catch((x: unknown) => x);
      expect(e instanceof LatheError || e instanceof CommanderError, String(e)).toBe(true);
      expect((e as Error).message).toMatch(re);
    };
    const run = runs[0]!.run;
    await fail(['export', run, '--format', 'gguf', '--out', runs[0]!.files.f16.path], /exists; choose a new file name/);
    await fail(['export', run, '--format', 'gguf', '--out', join(dir, 'x.gguf'), '--quant', 'q2_k'], /--quant: "q2_k"/);
    const notDir = join(dir, 'a-file');
    await writeFile(notDir, 'x');
    await fail(['export', run, '--format', 'gguf', '--out', notDir], /exists and is neither a directory nor a \.gguf/);
    await expect(exportGguf(run, join(dir, 'y.gguf'), { step: 7 })).rejects.toThrow(/no checkpoint at step 7/);
    // An open-model family it does not map (Qwen2's q/k/v biases) is refused, not written wrong.
    const qwen = join(dir, 'qwen2');
    await new Recipe(
      tinyRecipe(await tallySlice(dir, 40), {
        model: { family: 'qwen2', attentionBias: 'qkv', dim: 32, layers: 1, heads: 2, context: 32 },
        train: { steps: 2, batchSize: 2, warmupSteps: 1, checkpointEvery: 0 },
        eval: { every: 0, batches: 1 },
      }),
      { baseDir: dir },
    ).run({ out: qwen });
    await fail(
      ['export', qwen, '--format', 'gguf', '--out', join(dir, 'q.gguf')],
      /gguf export: model family qwen2 is not supported; .*Use --format hf/,
    );
  });
});
