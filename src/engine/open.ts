import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { LatheError } from '../errors.js';
import { sha256File } from '../hash.js';
import { importHf } from '../model/hf-import.js';
import { modelSpec, type ModelSpec } from '../model/spec.js';
import type { Weights } from '../model/weights.js';
import { resolveBase, type BaseModelRef } from '../recipe/base.js';
import type { EngineLock } from '../recipe/lock.js';
import { loadCheckpoint } from '../runs/checkpoint.js';
import { Tokenizer } from '../tokenizer/index.js';
import type { Engine } from './engine.js';
import { createEngine } from './index.js';
import { activeBackend, type EngineBackend } from './tfjs/backend.js';

// Models for inference and as bases: a Lathe run directory (its latest checkpoint) or a Hugging Face
// folder, pinned by hash (recipe/base.ts), then loaded into an engine.

/**
 * Loads a pinned base (a run's checkpoint or an HF folder): its spec, weights and tokenizer.
 * Checks a run checkpoint's weights are still the pinned ones.
 */
export async function loadBase(
  base: BaseModelRef,
  where = 'from',
): Promise<{ spec: ModelSpec; weights: Weights; tokenizer: Tokenizer }> {
  if (base.kind === 'run') {
    const ck = base.checkpoint!;
    if (!existsSync(join(ck, 'model.safetensors')))
      throw new LatheError(`${where}: the pinned checkpoint ${ck} is gone`);
    const now = await sha256File(join(ck, 'model.safetensors'));
    if (now.sha256 !== base.sha256)
      throw new LatheError(
        `${where}: ${ck} changed since the recipe was locked (sha256 ${now.sha256.slice(0, 12)}… ≠ ${base.sha256.slice(0, 12)}…)`,
      );
    const tokenizer = await Tokenizer.load(base.tokenizer);
    const { weights } = await loadCheckpoint(ck);
    return { spec: modelSpec(base.model, tokenizer.vocabSize), weights, tokenizer };
  }
  const imported = await importHf(base.path);
  return { spec: imported.spec, weights: imported.weights, tokenizer: imported.tokenizer };
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
