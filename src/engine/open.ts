import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { LatheError } from '../errors.js';
import { sha256File } from '../hash.js';
import { importHf } from '../model/hf-import.js';
import { modelSpec, type ModelSpec } from '../model/spec.js';
import { mergeAdapters } from '../model/lora.js';
import { initWeights, type Weights } from '../model/weights.js';
import { checkpointWeightsFile, hfFolderSha256, resolveBase, type BaseModelRef } from '../recipe/base.js';
import type { EngineLock, RecipeLock } from '../recipe/lock.js';
import { loadCheckpoint } from '../runs/checkpoint.js';
import { RunDir } from '../runs/rundir.js';
import { Tokenizer } from '../tokenizer/index.js';
import type { Engine } from './engine.js';
import { createEngine } from './index.js';
import { activeBackend, type EngineBackend } from './tfjs/backend.js';

// Models for inference and as bases: a Lathe run directory (its latest checkpoint) or a Hugging Face
// folder, pinned by hash (recipe/base.ts), then loaded into an engine.

/**
 * Loads a pinned base (a run's checkpoint or an HF folder): its spec, weights and tokenizer.
 * Checks the files are still the pinned ones. A LoRA run's checkpoint stands for its own base with
 * the adapters merged in.
 */
export async function loadBase(
  base: BaseModelRef,
  where = 'from',
): Promise<{ spec: ModelSpec; weights: Weights; tokenizer: Tokenizer }> {
  if (base.kind === 'run') {
    const ck = base.checkpoint!;
    const file = checkpointWeightsFile(ck);
    if (!file) throw new LatheError(`${where}: the pinned checkpoint ${ck} is gone`);
    const now = await sha256File(file);
    if (now.sha256 !== base.sha256)
      throw new LatheError(
        `${where}: ${ck} changed since the recipe was locked (sha256 ${now.sha256.slice(0, 12)}… ≠ ${base.sha256.slice(0, 12)}…)`,
      );
    const tokenizer = await Tokenizer.load(base.tokenizer);
    const spec = modelSpec(base.model, tokenizer.vocabSize);
    const loaded = await loadCheckpoint(ck);
    if (loaded.weights) return { spec, weights: loaded.weights, tokenizer };
    const lock = RunDir.open(base.path).readLock();
    const lora = lock.recipe.train.lora;
    if (!lora) throw new LatheError(`${where}: ${ck} holds LoRA adapters, but ${base.path} has no train.lora`);
    const under = await loraBaseWeights(lock, spec, `${where} (${base.path}'s base)`);
    return { spec, weights: mergeAdapters(spec, under, loaded.adapters, lora), tokenizer };
  }
  const now = await hfFolderSha256(base.path);
  if (now !== base.sha256)
    throw new LatheError(
      `${where}: the Hugging Face folder ${base.path} changed since the recipe was locked (sha256 ${now.slice(0, 12)}… ≠ ${base.sha256.slice(0, 12)}…)`,
    );
  const imported = await importHf(base.path);
  return { spec: imported.spec, weights: imported.weights, tokenizer: imported.tokenizer };
}

/** The frozen base a LoRA stage adapts: its pinned `from`, or the stage's fresh model under its seed. */
export async function loraBaseWeights(lock: RecipeLock, spec: ModelSpec, where = 'from'): Promise<Weights> {
  if (lock.base) return (await loadBase(lock.base, where)).weights;
  return initWeights(spec, lock.recipe.seed);
}

/** A model opened for inference: its engine, tokenizer, and what it was loaded from (pinned by hash). */
export interface OpenedModel {
  model: Engine;
  tokenizer: Tokenizer;
  ref: BaseModelRef;
}

/**
 * Opens a run directory (its latest checkpoint; a pipeline: its last stage) or an HF folder for
 * inference. The engine is `engine` when given, else the run's own (its lock's engine and backend),
 * else tfjs on the active backend. `where` names the option or field in errors.
 */
export async function openModel(
  from: string,
  opts: { baseDir?: string; where?: string; engine?: { backend: EngineBackend; engine?: EngineLock } } = {},
): Promise<OpenedModel> {
  const ref = await resolveBase(from, opts.baseDir ?? process.cwd(), opts.where ?? 'model');
  const { spec, weights, tokenizer } = await loadBase(ref, opts.where);
  const engine = opts.engine ?? (ref.kind === 'run' ? runEngine(ref.path) : undefined) ?? { backend: activeBackend() };
  const model = await createEngine({ ...engine, spec, weights });
  return { model, tokenizer, ref };
}

/** The engine a run trained on, from its lock. */
function runEngine(dir: string): { backend: EngineBackend; engine?: EngineLock } | undefined {
  try {
    const lock = JSON.parse(readFileSync(join(dir, 'recipe.lock.json'), 'utf8')) as {
      backend?: EngineBackend;
      engine?: EngineLock;
    };
    return lock.backend ? { backend: lock.backend, engine: lock.engine } : undefined;
  } catch {
    return undefined;
  }
}
