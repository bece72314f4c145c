/**
 * Int8 export: per-output-channel symmetric quantization, the held-out perplexity change it
 * causes on a trained run, and the `lathe export` verb (its output and its bad input).
 */
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Command, CommanderError } from 'commander';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { scratch, tallySlice, tinyRecipe } from '../../test/helpers.js';
import { register } from '../cli/export.js';
import { useBackend } from '../engine/tfjs/backend.js';
import { LatheError } from '../errors.js';
import { Recipe } from '../runs/recipe.js';
import { readSafetensors, toFloat32 } from '../model/safetensors.js';
import { loadHf } from './hf.js';
import { isQuantizedWeight, quantizeInt8, quantizeRows } from './quantize.js';
import { maxAbsDiff, runHf, type HfCheck } from './test/hf-python.js';

/** Perplexity change bound asserted for the trained test run (measured: see the test's log line). */
const MAX_PPL_CHANGE_PCT = 1;

describe('int8 quantization', () => {
  it('is symmetric per output channel: error at most half a step, at most 255 levels per row', () => {
    const rows = 3;
    const cols = 64;
    const data = new Float32Array(rows * cols).map((_, i) => Math.sin(i * 1.7) * (1 + Math.floor(i / cols) * 10));
    data[cols + 5] = 0; // zeros stay zero
    const { q, scales, dequant } = quantizeRows(data, rows, cols);
    for (let r = 0; r < rows; r++) {
      let max = 0;
      for (let c = 0; c < cols; c++) max = Math.max(max, Math.abs(data[r * cols + c]!));
      expect(scales[r]).toBeCloseTo(max / 127, 6);
      const levels = new Set<number>();
      for (let c = 0; c < cols; c++) {
        const i = r * cols + c;
        expect(Math.abs(q[i]!)).toBeLessThanOrEqual(127);
        expect(dequant[i]).toBe(Math.fround(q[i]! * scales[r]!));
        expect(Math.abs(dequant[i]! - data[i]!)).toBeLessThanOrEqual(scales[r]! / 2 + 1e-7);
        levels.add(q[i]!);
      }
      expect(levels.size).toBeLessThanOrEqual(255);
      // The row's largest |w| is exactly representable (+-127 * scale).
      expect(Math.max(...Array.from(q.subarray(r * cols, (r + 1) * cols), Math.abs))).toBe(127);
    }
    expect(dequant[cols + 5]).toBe(0);
    // Symmetric: negating the input negates the codes.
    expect(
      Array.from(
        quantizeRows(
          data.map((x) => -x),
          rows,
          cols,
        ).q,
      ),
    ).toEqual(Array.from(q, (v) => (v === 0 ? 0 : -v)));
  });

  it('quantizes Linear weights (incl. experts and an untied head); keeps embeddings, norms and the router', () => {
    for (const n of [
      'model.layers.3.self_attn.q_proj.weight',
      'model.layers.0.mlp.down_proj.weight',
      'model.layers.1.block_sparse_moe.experts.7.w2.weight',
      'lm_head.weight',
    ])
      expect(isQuantizedWeight(n), n).toBe(true);
    for (const n of [
      'model.embed_tokens.weight',
      'model.norm.weight',
      'model.layers.0.input_layernorm.weight',
      'model.layers.0.block_sparse_moe.gate.weight',
    ])
      expect(isQuantizedWeight(n), n).toBe(false);
    const w = new Map([
      ['model.norm.weight', { shape: [4], data: new Float32Array([1, 2, 3, 4]) }],
      ['lm_head.weight', { shape: [2, 2], data: new Float32Array([0.5, -0.25, 1, 0.3]) }],
    ]);
    const { weights, summary } = quantizeInt8(w);
    expect(weights.get('model.norm.weight')!.data).toBe(w.get('model.norm.weight')!.data);
    expect(summary).toMatchObject({
      quantized: ['lm_head.weight'],
      kept: ['model.norm.weight'],
      quantizedParams: 4,
      totalParams: 8,
    });
  });
});

async function runCli(args: string[]): Promise<string> {
  const program = new Command('lathe').exitOverride();
  let out = '';
  program.configureOutput({ writeOut: (s) => (out += s), writeErr: (s) => (out += s) });
  register(program);
  program.commands.forEach((c) =>
    c.exitOverride().configureOutput({ writeOut: (s) => (out += s), writeErr: (s) => (out += s) }),
  );
  const spy = vi.spyOn(process.stdout, 'write').mockImplementation((s: string | Uint8Array) => {
    out += String(s);
    return true;
  });
  try {
    await program.parseAsync(args, { from: 'user' });
  } catch (e) {
    (e as { output?: string }).output = out;
    throw e;
  } finally {
    spy.mockRestore();
  }
  return out;
}

describe('lathe export', () => {
  let dir: string;
  let run: string;
  beforeAll(async () => {
    await useBackend('cpu');
    dir = await scratch('lathe-export-cli-');
    const data = await tallySlice(dir, 400);
    run = join(dir, 'run');
    // Untied, so the head is quantized too.
    await new Recipe(
      tinyRecipe(data, {
        model: { dim: 32, layers: 2, heads: 4, kvHeads: 2, context: 32, tieEmbeddings: false },
        train: { steps: 40, batchSize: 4, lr: 0.01, minLr: 0.001, warmupSteps: 4, checkpointEvery: 20 },
        eval: { every: 0, batches: 2 },
      }),
      { baseDir: dir },
    ).run({ out: run });
  }, 300_000);
  afterEach(() => vi.restoreAllMocks());
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('--quantize int8 prints and writes the held-out perplexity change, and transformers loads the result', async () => {
    const out = join(dir, 'int8');
    const text = await runCli([
      'export',
      run,
      '--format',
      'hf',
      '--out',
      out,
      '--quantize',
      'int8',
      '--eval-batches',
      '8',
    ]);
    console.log(`[int8] ${text.trim().replace(/\n/g, '\n[int8] ')}`);
    expect(text).toMatch(/int8: held-out perplexity [\d.]+ -> [\d.]+ \([+-][\d.]+%\)/);
    expect(text).toMatch(/exported step 40 as LlamaForCausalLM to /);
    const report = JSON.parse(await readFile(join(out, 'quantization.json'), 'utf8'));
    expect(report.step).toBe(40);
    expect(report.quantized).toContain('lm_head.weight');
    expect(report.kept).toContain('model.embed_tokens.weight');
    const h = report.heldOut;
    expect(h.batches).toBe(8);
    expect(h.perplexity).toBeLessThan(40); // the run learned something (vocab 320)
    expect(Math.abs(h.perplexityChangePct)).toBeLessThan(MAX_PPL_CHANGE_PCT);
    expect(h.quantizedLoss).not.toBe(h.loss);
    // Every quantized row holds at most 255 levels of one scale; the rest is untouched float32.
    const st = await readSafetensors(join(out, 'model.safetensors'));
    const q = toFloat32(st.tensors.get('model.layers.1.self_attn.o_proj.weight')!);
    const row = Array.from(q.subarray(0, 32));
    const scale = Math.max(...row.map(Math.abs)) / 127;
    for (const v of row) expect(Math.abs(v / scale - Math.round(v / scale))).toBeLessThan(1e-3);
    // transformers loads it and agrees with Lathe on the quantized weights.
    const { model, tokenizer } = await loadHf(out);
    try {
      const ids = [tokenizer.special.bos, ...tokenizer.encode('let px = 10\nemit')];
      const [r] = runHf([{ op: 'check', dir: out, prompt: ids, max_new_tokens: 5, tokenizer: false }]) as HfCheck[];
      const flat = await model.logits(ids);
      const v = model.spec.vocabSize;
      const rows = Array.from({ length: ids.length }, (_, i) => Array.from(flat.subarray(i * v, (i + 1) * v)));
      const diff = maxAbsDiff(rows, r!.logits);
      console.log(`[int8] max |logit diff| vs transformers on the int8 export = ${diff.toExponential(3)}`);
      expect(diff).toBeLessThanOrEqual(1e-4);
    } finally {
      await model.dispose();
    }
  });

  it('--step exports an earlier checkpoint; --json prints the result', async () => {
    const out = join(dir, 'step20');
    const r = JSON.parse(await runCli(['export', run, '--format', 'hf', '--out', out, '--step', '20', '--json']));
    expect(r).toMatchObject({ step: 20, architecture: 'LlamaForCausalLM' });
    expect(r.files).toContain('model.safetensors');
  });

  it('--help documents the verb', async () => {
    const err = await runCli(['export', '--help']).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(CommanderError);
    expect((err as CommanderError).exitCode).toBe(0);
    const help = (err as { output: string }).output;
    for (const flag of [
      '<run-dir>',
      '--format <format>',
      '--out <dir>',
      '--step <n>',
      '--quantize <scheme>',
      'LlamaForCausalLM',
    ])
      expect(help).toContain(flag);
  });

  it('bad input: unknown format or quantization, missing run, missing step, existing non-empty --out', async () => {
    const fail = async (args: string[], re: RegExp) => {
      const e = await runCli(args).then(
        () => undefined,
        (x: unknown) => x,
      );
      expect(e, args.join(' ')).toBeInstanceOf(LatheError);
      expect((e as LatheError).exitCode).toBe(2);
      expect((e as Error).message).toMatch(re);
    };
    await fail(
      ['export', run, '--format', 'gguf', '--out', join(dir, 'x1')],
      /--format: "gguf" is not supported; use hf/,
    );
    await fail(
      ['export', run, '--format', 'hf', '--out', join(dir, 'x2'), '--quantize', 'int4'],
      /--quantize: "int4" is not supported; use int8/,
    );
    await fail(
      ['export', join(dir, 'nope'), '--format', 'hf', '--out', join(dir, 'x3')],
      /nope: not a run directory \(no recipe\.lock\.json\)/,
    );
    await fail(['export', run, '--format', 'hf', '--out', join(dir, 'x4'), '--step', '7'], /no checkpoint at step 7/);
    const busy = join(dir, 'busy');
    await mkdir(busy);
    await writeFile(join(busy, 'keep.txt'), 'mine');
    await fail(['export', run, '--format', 'hf', '--out', busy], /--out .*busy: exists and is not empty/);
    expect(await readFile(join(busy, 'keep.txt'), 'utf8')).toBe('mine');
    // An empty existing directory is fine.
    const empty = join(dir, 'empty');
    await mkdir(empty);
    expect(await runCli(['export', run, '--format', 'hf', '--out', empty])).toMatch(/exported step 40/);
  });
});
