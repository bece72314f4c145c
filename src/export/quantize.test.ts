/**
 * Int8 export: per-output-channel symmetric quantization, stored as int8 codes in compressed-tensors'
 * layout that transformers loads (dense and MoE), the held-out perplexity change and logit error it
 * causes on a trained run, and the `lathe export` verb (its output and its bad input).
 */
import { mkdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Command, CommanderError } from 'commander';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { scratch, tallySlice, tinyRecipe } from '../../test/helpers.js';
import { register } from '../cli/export.js';
import { useBackend } from '../engine/tfjs/backend.js';
import { LatheError } from '../errors.js';
import { Recipe } from '../runs/recipe.js';
import { readSafetensors } from '../model/safetensors.js';
import { loadModel } from '../runs/index.js';
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
  let moeRun: string;
  // The two int8 exports (dense, MoE), their printed reports, and transformers' view of them (one Python process).
  const int8 = { dense: '', moe: '' };
  const printed = { dense: '', moe: '' };
  let hf: HfCheck[] = [];
  let hfError: unknown;
  const PROMPT = 'let px = 10\nemit';

  /** transformers' logits on an int8 export: equal to Lathe's on the same int8 weights, and their error against float32. */
  async function checkTransformers(out: string, runDir: string, what: string, r: HfCheck | undefined): Promise<void> {
    if (hfError) throw hfError;
    const { model, tokenizer } = await loadHf(out);
    const fp32 = await loadModel(runDir);
    try {
      const ids = [tokenizer.special.bos, ...tokenizer.encode(PROMPT)];
      const v = model.spec.vocabSize;
      const rows = (flat: Float32Array) =>
        Array.from({ length: ids.length }, (_, i) => Array.from(flat.subarray(i * v, (i + 1) * v)));
      const diff = maxAbsDiff(rows(await model.logits(ids)), r!.logits);
      const ref = rows(await fp32.model.logits(ids));
      const err = maxAbsDiff(ref, r!.logits);
      const top = Math.max(...ref.flat().map(Math.abs));
      console.log(
        `[int8] ${what}: transformers (${r!.class}) on the int8 export vs Lathe on the same int8 weights: max |logit diff| ${diff.toExponential(3)}; ` +
          `vs Lathe float32: max |logit diff| ${err.toExponential(3)} (largest |logit| ${top.toFixed(2)})`,
      );
      expect(diff).toBeLessThanOrEqual(1e-4);
      expect(err).toBeGreaterThan(0);
      expect(err).toBeLessThan(0.05 * top);
    } finally {
      await model.dispose();
      await fp32.model.dispose();
    }
  }

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
    moeRun = join(dir, 'moe');
    await new Recipe(
      tinyRecipe(data, {
        model: { arch: 'moe', experts: 4, topK: 2, dim: 32, layers: 2, heads: 4, kvHeads: 2, context: 32 },
        train: { steps: 20, batchSize: 4, lr: 0.01, minLr: 0.001, warmupSteps: 4, checkpointEvery: 0 },
        eval: { every: 0, batches: 2 },
      }),
      { baseDir: dir },
    ).run({ out: moeRun });
    int8.dense = join(dir, 'int8');
    printed.dense = await runCli([
      'export',
      run,
      '--format',
      'hf',
      '--out',
      int8.dense,
      '--quantize',
      'int8',
      '--eval-batches',
      '8',
    ]);
    int8.moe = join(dir, 'moe-int8');
    printed.moe = await runCli(['export', moeRun, '--format', 'hf', '--out', int8.moe, '--quantize', 'int8']);
    const { tokenizer } = await loadHf(int8.dense);
    const ids = [tokenizer.special.bos, ...tokenizer.encode(PROMPT)];
    try {
      hf = runHf(
        [int8.dense, int8.moe].map((d) => ({ op: 'check', dir: d, prompt: ids, max_new_tokens: 5, tokenizer: false })),
      ) as HfCheck[];
    } catch (e) {
      hfError = e;
    }
  }, 600_000);
  afterEach(() => vi.restoreAllMocks());
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('--quantize int8 writes int8 codes (compressed-tensors) that transformers loads; prints size, logit error and perplexity change', async () => {
    const [out, text] = [int8.dense, printed.dense];
    console.log(`[int8] ${text.trim().replace(/\n/g, '\n[int8] ')}`);
    expect(text).toMatch(/int8: held-out perplexity [\d.]+ -> [\d.]+ \([+-][\d.]+%\)/);
    expect(text).toMatch(
      /int8: model\.safetensors [\d.]+ MiB \(float32: [\d.]+ MiB, [\d.]+%\), compressed-tensors pack-quantized/,
    );
    expect(text).toMatch(/int8: logits vs float32 over \d+ held-out positions: max \|diff\| /);
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
    expect(report.logitError.maxAbs).toBeGreaterThan(0);
    expect(report.logitError.maxAbs).toBeLessThan(0.05 * report.logitError.maxAbsLogit);
    // One byte per quantized weight (plus a float32 scale per row); the rest stays float32.
    expect(report.fileBytes).toBeLessThan(0.5 * report.fp32FileBytes);
    expect((await stat(join(out, 'model.safetensors'))).size).toBe(report.fileBytes);
    // The stored codes: int8 in bytes offset by 128, four to an I32 word; per-row F32 scales; I64 shape.
    const st = await readSafetensors(join(out, 'model.safetensors'));
    const o = 'model.layers.1.self_attn.o_proj';
    expect(st.tensors.has(`${o}.weight`)).toBe(false);
    const packed = st.tensors.get(`${o}.weight_packed`)!;
    expect([packed.dtype, packed.shape]).toEqual(['I32', [32, 8]]);
    expect(st.tensors.get(`${o}.weight_scale`)).toMatchObject({ dtype: 'F32', shape: [32, 1] });
    const shape = st.tensors.get(`${o}.weight_shape`)!;
    expect([shape.dtype, Array.from(new BigInt64Array(new Uint8Array(shape.data).buffer), Number)]).toEqual([
      'I64',
      [32, 32],
    ]);
    const codes = Array.from(packed.data.subarray(0, 32), (b) => b - 128);
    const packedBytes = [...st.tensors]
      .filter(([n]) => n.endsWith('_packed'))
      .reduce((a, [, t]) => a + t.data.length, 0);
    expect(packedBytes).toBe(report.quantizedParams);
    expect(Math.max(...codes.map(Math.abs))).toBe(127);
    expect(st.tensors.get('model.embed_tokens.weight')!.dtype).toBe('F32');
    const cfg = JSON.parse(await readFile(join(out, 'config.json'), 'utf8'));
    expect(cfg.quantization_config).toMatchObject({
      quant_method: 'compressed-tensors',
      format: 'pack-quantized',
      config_groups: { group_0: { weights: { num_bits: 8, type: 'int', symmetric: true, strategy: 'channel' } } },
      ignore: [],
    });
    // transformers loads it (compressed-tensors, CPU) and agrees with Lathe on the int8 weights.
    await checkTransformers(out, run, 'dense', hf[0]);
  });

  it('--quantize int8 on a MoE run: the experts are int8 too, and transformers loads them', async () => {
    const [out, text] = [int8.moe, printed.moe];
    console.log(`[int8] MoE: ${text.trim().replace(/\n/g, '\n[int8] MoE: ')}`);
    const st = await readSafetensors(join(out, 'model.safetensors'));
    expect(st.tensors.get('model.layers.0.block_sparse_moe.experts.3.w2.weight_packed')?.dtype).toBe('I32');
    expect(st.tensors.get('model.layers.0.block_sparse_moe.gate.weight')?.dtype).toBe('F32');
    const cfg = JSON.parse(await readFile(join(out, 'config.json'), 'utf8'));
    expect(cfg.quantization_config.ignore).toContain('lm_head');
    await checkTransformers(out, moeRun, 'MoE', hf[1]);
  });

  it('import refuses other quantization configs, naming the field', async () => {
    const src = join(dir, 'int8');
    const bad = join(dir, 'int4-claimed');
    await mkdir(bad);
    for (const f of ['model.safetensors', 'tokenizer.json'])
      await writeFile(join(bad, f), await readFile(join(src, f)));
    const cfg = JSON.parse(await readFile(join(src, 'config.json'), 'utf8'));
    cfg.quantization_config.config_groups.group_0.weights.num_bits = 4;
    await writeFile(join(bad, 'config.json'), JSON.stringify(cfg));
    await expect(loadHf(bad)).rejects.toThrow(
      /config\.json: quantization_config \(compressed-tensors, pack-quantized\) is not supported/,
    );
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
      '--out <path>',
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
      ['export', run, '--format', 'onnx', '--out', join(dir, 'x1')],
      /--format: "onnx" is not supported; use hf, peft, gguf/,
    );
    await fail(
      ['export', run, '--format', 'gguf', '--out', join(dir, 'x1.gguf'), '--quant', 'q5_k'],
      /--quant: "q5_k" is not supported; use f16, q8_0, q4_0/,
    );
    await fail(
      ['export', run, '--format', 'gguf', '--out', join(dir, 'x1.gguf'), '--quantize', 'int8'],
      /--quantize: applies to --format hf; for gguf use --quant/,
    );
    await fail(
      ['export', run, '--format', 'hf', '--out', join(dir, 'x1'), '--quant', 'q8_0'],
      /--quant: applies to --format gguf; for hf use --quantize int8/,
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
