/**
 * Hugging Face export and import: a run's checkpoint as an HF folder of its architecture (Llama,
 * Mistral, Qwen2, Qwen3, Mixtral or Qwen3-MoE) that `AutoModelForCausalLM` and `AutoTokenizer`
 * load, and such a folder (ours, or saved by transformers) back as a Lathe model.
 *
 * Parameter names are already HF's (see src/model/spec.ts), so export writes them as they are.
 * Import lives in hf-import.ts (re-exported here), which also reads transformers 5's fused
 * Mixtral expert tensors.
 */
import { existsSync, readdirSync, statSync } from 'node:fs';
import { mkdir, readFile, rename, rm, rmdir } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { randomBytes } from 'node:crypto';
import { evalBatches } from '../data/batches.js';
import type { PreparedData, PreparedSource } from '../data/prepare.js';
import { LatheError } from '../errors.js';
import type { Engine } from '../engine/engine.js';
import { createEngine } from '../engine/index.js';
import { activeBackend, type EngineBackend } from '../engine/tfjs/backend.js';
import { familyOf, paramSpecsOf } from '../model/spec.js';
import type { ModelSpec } from '../model/spec.js';
import { loadModel } from '../runs/index.js';
import { RunDir } from '../runs/rundir.js';
import { encodeSafetensors, f32, type StoredTensor } from '../model/safetensors.js';
import { writeFileAtomic } from '../runs/atomic.js';
import type { Tokenizer } from '../tokenizer/index.js';
import { evaluateLoss } from '../eval/loss.js';
import { VERSION } from '../version.js';
import { HF_ARCHITECTURE_OF, hfConfigJson, hfConfigOf } from '../model/hf-config.js';
import { quantizeInt8, type Int8Summary, type NamedWeights } from './quantize.js';
import { importHf, type HfImport, type ImportHfOptions } from '../model/hf-import.js';

export { importHf, type HfImport, type ImportHfOptions } from '../model/hf-import.js';

/** Options for {@link exportHf}. */
export interface ExportHfOptions {
  /** Checkpoint step to export; default the latest. */
  step?: number;
  /** Quantize the Linear weights to int8 (stored dequantized; see quantize.ts). */
  quantize?: 'int8';
  /** Held-out batches for the int8 perplexity measurement; default the recipe's eval.batches (at least 4). */
  evalBatches?: number;
}

/** Held-out loss and perplexity before and after int8 quantization. */
export interface QuantizationReport extends Int8Summary {
  heldOut: {
    batches: number;
    tokens: number;
    loss: number;
    quantizedLoss: number;
    perplexity: number;
    quantizedPerplexity: number;
    /** (quantized - original) / original perplexity, in percent. */
    perplexityChangePct: number;
  } | null;
  /** Why heldOut is null (e.g. the run has no held-out data). */
  heldOutUnavailable?: string;
}

/** What {@link exportHf} wrote. */
export interface ExportHfResult {
  dir: string;
  step: number;
  /** The checkpoint folder exported, and newer ones skipped because they failed their checksums. */
  checkpoint: string;
  skipped: { step: number; reason: string }[];
  architecture: string;
  files: string[];
  quantization?: QuantizationReport;
}

/** Files an HF export holds. */
export const HF_FILES = [
  'config.json',
  'generation_config.json',
  'model.safetensors',
  'special_tokens_map.json',
  'tokenizer.json',
  'tokenizer_config.json',
] as const;

/**
 * Writes a run's checkpoint as an HF model folder at `outDir`: config.json,
 * generation_config.json, model.safetensors (float32, metadata format pt, no lm_head when tied),
 * tokenizer.json, tokenizer_config.json (with the chat template), special_tokens_map.json, and
 * quantization.json with `quantize: 'int8'`. The folder appears whole or not at all (written to a
 * temporary sibling, then renamed). `outDir` must not exist or be empty.
 */
export async function exportHf(runDir: string, outDir: string, opts: ExportHfOptions = {}): Promise<ExportHfResult> {
  const rd = RunDir.open(runDir);
  const out = resolve(outDir);
  checkOutDir(outDir, out);
  if (opts.quantize !== undefined && opts.quantize !== 'int8')
    throw new LatheError(`quantize: "${String(opts.quantize)}" is not supported; use int8`);
  const { model, tokenizer, step, checkpoint, skipped } = await loadModel(runDir, { step: opts.step });
  try {
    const spec = model.spec;
    let weights = await model.weights();
    let quantization: QuantizationReport | undefined;
    if (opts.quantize === 'int8') {
      const q = quantizeInt8(weights);
      quantization = { ...q.summary, ...(await measureHeldOut(rd, model, q.weights, opts.evalBatches)) };
      weights = q.weights;
    }
    const files = hfFiles(spec, weights, tokenizer);
    if (quantization) files['quantization.json'] = json({ lathe: VERSION, step, ...quantization });
    await writeFolder(out, files);
    return {
      dir: out,
      step,
      checkpoint,
      skipped,
      architecture: HF_ARCHITECTURE_OF[familyOf(spec)],
      files: Object.keys(files).sort(),
      quantization,
    };
  } finally {
    await model.dispose();
  }
}

/**
 * Writes a model (spec, weights, tokenizer: an {@link importHf} result, or an engine's weights) as an
 * HF folder at `outDir`, as {@link exportHf} does for a run. `outDir` must not exist or be empty.
 */
export async function saveHf(
  outDir: string,
  model: { spec: ModelSpec; weights: NamedWeights; tokenizer: Tokenizer },
): Promise<{ dir: string; architecture: string; files: string[] }> {
  const out = resolve(outDir);
  checkOutDir(outDir, out);
  const files = hfFiles(model.spec, model.weights, model.tokenizer);
  await writeFolder(out, files);
  return { dir: out, architecture: HF_ARCHITECTURE_OF[familyOf(model.spec)], files: Object.keys(files).sort() };
}

/** The files of an HF folder for a model. */
function hfFiles(spec: ModelSpec, weights: NamedWeights, tokenizer: Tokenizer): Record<string, string | Uint8Array> {
  const special = tokenizer.special;
  return {
    'config.json': hfConfigJson(hfConfigOf(spec, { bos: special.bos, eos: special.eos, pad: special.pad })),
    'generation_config.json': json({
      bos_token_id: special.bos,
      // Plain text ends with <|eos|>, a chat turn with <|end|>.
      eos_token_id: [special.eos, special.end],
      pad_token_id: special.pad,
    }),
    'model.safetensors': encodeSafetensors(storedTensors(spec, weights), { format: 'pt' }),
    'tokenizer.json': JSON.stringify(tokenizer.toJSON()),
    'tokenizer_config.json': json(tokenizer.hfTokenizerConfig({ modelMaxLength: spec.context })),
    'special_tokens_map.json': json(specialTokensMap(tokenizer)),
  };
}

/** Writes the files into a temporary sibling of `out`, then renames it into place (whole or not at all). */
async function writeFolder(out: string, files: Record<string, string | Uint8Array>): Promise<void> {
  const tmp = join(dirname(out), `.${basename(out)}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`);
  try {
    await mkdir(dirname(out), { recursive: true });
    await rm(tmp, { recursive: true, force: true });
    await mkdir(tmp);
    for (const [name, data] of Object.entries(files)) await writeFileAtomic(join(tmp, name), data);
    // An empty directory that was already there is replaced; anything else was refused above.
    if (existsSync(out)) await rmdir(out);
    await rename(tmp, out);
  } catch (e) {
    await rm(tmp, { recursive: true, force: true });
    throw e;
  }
}

function checkOutDir(given: string, out: string): void {
  if (!existsSync(out)) return;
  if (!statSync(out).isDirectory()) throw new LatheError(`--out ${given}: exists and is not a directory`);
  const entries = readdirSync(out);
  if (entries.length)
    throw new LatheError(
      `--out ${given}: exists and is not empty (${entries.length} entr${entries.length === 1 ? 'y' : 'ies'}); choose a new directory`,
    );
}

const json = (v: unknown) => JSON.stringify(v, null, 2) + '\n';

/** Every expected tensor, float32, in the spec's order (lm_head only when untied). */
function storedTensors(spec: ModelSpec, weights: NamedWeights): Map<string, StoredTensor> {
  const out = new Map<string, StoredTensor>();
  for (const ps of paramSpecsOf(spec)) {
    const w = weights.get(ps.name);
    if (!w) throw new Error(`export: weight ${ps.name} is missing`);
    out.set(ps.name, f32(ps.shape, w.data));
  }
  return out;
}

function specialTokensMap(tokenizer: Tokenizer): Record<string, unknown> {
  const cfg = tokenizer.hfTokenizerConfig();
  return {
    bos_token: cfg.bos_token,
    eos_token: cfg.eos_token,
    pad_token: cfg.pad_token,
    additional_special_tokens: cfg.additional_special_tokens,
  };
}

/** A run's own held-out loss with its weights, and with the quantized ones. */
async function measureHeldOut(
  rd: RunDir,
  model: Engine,
  quantized: NamedWeights,
  count?: number,
): Promise<Pick<QuantizationReport, 'heldOut' | 'heldOutUnavailable'>> {
  const lock = rd.readLock();
  const preparedPath = join(rd.dataDir, 'prepared.json');
  let prepared: PreparedData;
  try {
    prepared = JSON.parse(await readFile(preparedPath, 'utf8')) as PreparedData;
    if (!Array.isArray(prepared.sources)) throw new Error('no sources');
  } catch {
    return { heldOut: null, heldOutUnavailable: `${preparedPath} is missing or unreadable` };
  }
  // Token files are named absolutely; a run directory that moved still has them in data/.
  const sources: PreparedSource[] = prepared.sources.map((s) => ({
    ...s,
    val: existsSync(s.val) ? s.val : join(rd.dataDir, basename(s.val)),
  }));
  // Any stage's lock (or a pipeline's) may be here: read the sizes defensively.
  const r = lock.recipe as { train?: { batchSize?: number }; eval?: { batches?: number } };
  const batch = r.train?.batchSize ?? 8;
  let batches: ReturnType<typeof evalBatches>;
  try {
    batches = evalBatches(sources, {
      seq: model.spec.context,
      batch,
      count: count ?? Math.max(4, r.eval?.batches ?? 0),
    });
  } catch (e) {
    return { heldOut: null, heldOutUnavailable: `cannot read the held-out tokens (${(e as Error).message})` };
  }
  if (!batches.length)
    return {
      heldOut: null,
      heldOutUnavailable: 'the run has no held-out tokens (data.valFraction 0, or too little data)',
    };
  const loss = (await evaluateLoss(model, batches))!;
  const qModel = await createEngine({
    backend: lock.backend,
    engine: lock.engine,
    spec: model.spec,
    weights: quantized,
  });
  let quantizedLoss: number;
  try {
    quantizedLoss = (await evaluateLoss(qModel, batches))!;
  } finally {
    await qModel.dispose();
  }
  const perplexity = Math.exp(loss);
  const quantizedPerplexity = Math.exp(quantizedLoss);
  return {
    heldOut: {
      batches: batches.length,
      tokens: batches.reduce((a, b) => a + b.batch * b.seq, 0),
      loss,
      quantizedLoss,
      perplexity,
      quantizedPerplexity,
      perplexityChangePct: ((quantizedPerplexity - perplexity) / perplexity) * 100,
    },
  };
}

/** {@link importHf}, then an inference engine on its weights (the tfjs engine on `backend`, default the active one). */
export async function loadHf(
  dir: string,
  opts: ImportHfOptions & { backend?: EngineBackend } = {},
): Promise<{ model: Engine; tokenizer: Tokenizer; imported: HfImport }> {
  const imported = await importHf(dir, opts);
  const model = await createEngine({
    backend: opts.backend ?? activeBackend(),
    spec: imported.spec,
    weights: imported.weights,
  });
  return { model, tokenizer: imported.tokenizer, imported };
}
