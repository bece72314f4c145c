import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { LatheError } from '../errors.js';
import { sha256File } from '../hash.js';
import { importHf } from '../model/hf-import.js';
import { modelSpec, type ModelSpec } from '../model/spec.js';
import type { Weights } from '../model/weights.js';
import type { BaseModelRef } from '../recipe/base.js';
import { loadCheckpoint } from '../runs/checkpoint.js';
import { Tokenizer } from '../tokenizer/index.js';

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
