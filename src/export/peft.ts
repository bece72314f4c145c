/**
 * PEFT export of a LoRA run: `adapter_config.json` and `adapter_model.safetensors`, named as PEFT
 * saves a LoRA adapter of a CausalLM (`base_model.model.<module>.lora_A.weight`, no adapter name),
 * so `PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), dir)` loads it on the
 * base: the HF folder the run started from, or the HF export of its base run. With `merge`, an HF
 * folder of the base with the adapters merged in (see exportHf).
 */
import { existsSync, readdirSync, statSync } from 'node:fs';
import { mkdir, rename, rm, rmdir } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { basename, dirname, join, resolve } from 'node:path';
import { LatheError } from '../errors.js';
import { loraSites, PEFT_PREFIX } from '../model/lora.js';
import { encodeSafetensors, f32, type StoredTensor } from '../model/safetensors.js';
import { modelSpec } from '../model/spec.js';
import { modelRunDir } from '../recipe/base.js';
import type { RecipeLock } from '../recipe/lock.js';
import { writeFileAtomic } from '../runs/atomic.js';
import { latestGoodCheckpoint, loadCheckpoint } from '../runs/checkpoint.js';
import { RunDir } from '../runs/rundir.js';
import { Tokenizer } from '../tokenizer/index.js';
import { VERSION } from '../version.js';
import { exportHf, type ExportHfResult } from './hf.js';

/** Options for {@link exportPeft}. */
export interface ExportPeftOptions {
  /** Checkpoint step; default the latest that verifies. */
  step?: number;
  /** Write the merged model as an HF folder instead of the adapter. */
  merge?: boolean;
}

/** What {@link exportPeft} wrote. */
export interface ExportPeftResult {
  dir: string;
  step: number;
  checkpoint: string;
  skipped: { step: number; reason: string }[];
  files: string[];
  /** true: an HF folder with the adapters merged in; false: a PEFT adapter folder. */
  merged: boolean;
  /** The base the adapter belongs to (adapter_config.json's base_model_name_or_path), and how to get it as an HF folder. */
  base: { path: string | null; hint: string };
  /** The merged export's result (merge only). */
  hf?: ExportHfResult;
}

/** The files a PEFT adapter export holds. */
export const PEFT_FILES = ['adapter_config.json', 'adapter_model.safetensors'] as const;

/** Where the adapter's base is, for adapter_config.json and the user. */
function baseOf(lock: RecipeLock): ExportPeftResult['base'] {
  const b = lock.base;
  if (b?.kind === 'hf')
    return { path: b.path, hint: `load it on the Hugging Face folder it was trained from: ${b.path}` };
  if (b?.kind === 'run')
    return {
      path: b.path,
      hint: `its base is the run ${b.path}: export that with \`lathe export ${b.path} --format hf --out <base>\` and load the adapter on <base>`,
    };
  return {
    path: null,
    hint: `its base is the fresh model of seed ${lock.recipe.seed} (the recipe has no \`from\`); use --merge for a loadable model`,
  };
}

/** Writes a LoRA run's adapters as a PEFT adapter folder (or, with `merge`, the merged HF model) at `outDir`. */
export async function exportPeft(
  runDir: string,
  outDir: string,
  opts: ExportPeftOptions = {},
): Promise<ExportPeftResult> {
  RunDir.open(runDir);
  const dir = opts.step === undefined ? modelRunDir(runDir) : runDir;
  const rd = RunDir.open(dir);
  const lock = rd.readLock();
  const lora = lock.recipe.train.lora;
  if (!lora)
    throw new LatheError(
      `--format peft: ${runDir} was trained without train.lora (its checkpoints hold the whole model); use --format hf`,
    );
  const base = baseOf(lock);
  if (opts.merge) {
    const hf = await exportHf(runDir, outDir, { step: opts.step });
    return {
      dir: hf.dir,
      step: hf.step,
      checkpoint: hf.checkpoint,
      skipped: hf.skipped,
      files: hf.files,
      merged: true,
      base,
      hf,
    };
  }
  const experts = lora.targets.filter((t) => /^w[123]$/.test(t));
  if (experts.length)
    throw new LatheError(
      `--format peft: the adapters on ${experts.join(', ')} (MoE experts) have no PEFT module to load into: transformers fuses Mixtral's experts into single tensors; use --merge for an HF folder with them merged in`,
    );
  const out = resolve(outDir);
  if (existsSync(out)) {
    if (!statSync(out).isDirectory()) throw new LatheError(`--out ${outDir}: exists and is not a directory`);
    if (readdirSync(out).length)
      throw new LatheError(`--out ${outDir}: exists and is not empty; choose a new directory`);
  }
  let step = opts.step;
  let skipped: ExportPeftResult['skipped'] = [];
  if (step === undefined) ({ step, skipped } = await latestGoodCheckpoint(rd));
  else if (!(await rd.checkpointSteps()).includes(step)) step = undefined;
  if (step === undefined)
    throw new LatheError(`${dir}: no checkpoint${opts.step !== undefined ? ` at step ${opts.step}` : ' yet'}`);
  const checkpoint = rd.checkpointPath(step);
  const ck = await loadCheckpoint(checkpoint);
  if (!ck.adapters) throw new LatheError(`${checkpoint}: holds a whole model, not LoRA adapters`);
  const tokenizer = await Tokenizer.load(join(rd.dataDir, 'tokenizer.json'));
  const spec = modelSpec(lock.recipe.model, tokenizer.vocabSize);
  const tensors = new Map<string, StoredTensor>();
  for (const s of loraSites(spec, lora.targets))
    for (const n of [s.a, s.b]) {
      const t = ck.adapters.get(n);
      if (!t) throw new LatheError(`${checkpoint}: adapter ${n} is missing`);
      tensors.set(PEFT_PREFIX + n, f32(t.shape, t.data));
    }
  const config = {
    peft_type: 'LORA',
    task_type: 'CAUSAL_LM',
    base_model_name_or_path: base.path,
    revision: null,
    r: lora.rank,
    lora_alpha: lora.alpha,
    lora_dropout: lora.dropout,
    target_modules: [...lora.targets].sort(),
    bias: 'none',
    fan_in_fan_out: false,
    use_rslora: false,
    use_dora: false,
    init_lora_weights: true,
    inference_mode: true,
    modules_to_save: null,
    layers_to_transform: null,
    layers_pattern: null,
    rank_pattern: {},
    alpha_pattern: {},
  };
  const files: Record<string, string | Uint8Array> = {
    'adapter_config.json': JSON.stringify(config, null, 2) + '\n',
    'adapter_model.safetensors': encodeSafetensors(tensors, { format: 'pt', lathe: VERSION }),
  };
  const tmp = join(dirname(out), `.${basename(out)}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`);
  try {
    await mkdir(tmp, { recursive: true });
    for (const [name, data] of Object.entries(files)) await writeFileAtomic(join(tmp, name), data);
    if (existsSync(out)) await rmdir(out);
    await rename(tmp, out);
  } catch (e) {
    await rm(tmp, { recursive: true, force: true });
    throw e;
  }
  return { dir: out, step, checkpoint, skipped, files: Object.keys(files).sort(), merged: false, base };
}
