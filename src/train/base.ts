import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { LanguageModel } from '../engine/tfjs/model.js';
import { LatheError } from '../errors.js';
import { sha256File } from '../hash.js';
import { importHf } from '../model/hf-import.js';
import { modelSpec } from '../model/spec.js';
import type { BaseModelRef } from '../recipe/base.js';
import { loadCheckpoint } from '../runs/checkpoint.js';
import { Tokenizer } from '../tokenizer/index.js';

/** Loads a pinned base: the model (on the current backend) and its tokenizer. Checks the weights are still the pinned ones. */
export async function loadBase(
  base: BaseModelRef,
  where = 'from',
): Promise<{ model: LanguageModel; tokenizer: Tokenizer }> {
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
    return { model: LanguageModel.fromWeights(modelSpec(base.model, tokenizer.vocabSize), weights), tokenizer };
  }
  const imported = await importHf(base.path);
  return { model: LanguageModel.fromWeights(imported.spec, imported.weights), tokenizer: imported.tokenizer };
}

/** A frozen copy of a model (the DPO/GRPO reference): same weights, never trained. */
export async function frozenCopy(model: LanguageModel): Promise<LanguageModel> {
  return LanguageModel.fromWeights(model.spec, await model.weights());
}
