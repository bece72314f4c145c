import { Pipeline, Recipe, type RunOptions } from './recipe.js';
import type {
  DpoRecipe,
  GrpoRecipe,
  OnlineDpoRecipe,
  PipelineInput,
  PretrainRecipe,
  RecipeInput,
  SftRecipe,
} from './schema.js';

export {
  Recipe,
  Pipeline,
  loadRecipe as load,
  diff,
  validateRecipe as validate,
  parseRecipeText,
  type RunOptions,
} from './recipe.js';
export { recipeJsonSchema as schema, STAGES } from './schema.js';
export type * from './schema.js';
export { formatDiff, type RecipeChange } from './diff.js';
export {
  lockRecipe,
  lockPipeline,
  isPipelineLock,
  verifyLockId,
  canonicalJson,
  sha256File,
  type RecipeLock,
  type PipelineLock,
  type AnyLock,
  type BaseModelRef,
} from './lock.js';
export { checkRecipe, resolveRecipe, resolveAnyRecipe, normalizeKeys } from './validate.js';

type StageInput<S extends RecipeInput['stage']> = Omit<Extract<RecipeInput, { stage: S }>, 'stage'>;

/** A pre-training recipe built in code; relative paths resolve against opts.baseDir or the cwd. */
export function pretrain(input: StageInput<'pretrain'>, opts: { baseDir?: string } = {}): Recipe<PretrainRecipe> {
  return new Recipe<PretrainRecipe>({ ...input, stage: 'pretrain' }, opts);
}

/** A supervised fine-tuning recipe (chat JSONL, loss on assistant tokens); `from` names the starting model. */
export function sft(input: StageInput<'sft'>, opts: { baseDir?: string } = {}): Recipe<SftRecipe> {
  return new Recipe<SftRecipe>({ ...input, stage: 'sft' }, opts);
}

/** A DPO recipe (preference pairs, frozen reference = the starting model). */
export function dpo(input: StageInput<'dpo'>, opts: { baseDir?: string } = {}): Recipe<DpoRecipe> {
  return new Recipe<DpoRecipe>({ ...input, stage: 'dpo' }, opts);
}

/** An online DPO recipe (prompts; the policy samples, a judge ranks, best vs worst is a DPO pair). */
export function onlineDpo(input: StageInput<'online-dpo'>, opts: { baseDir?: string } = {}): Recipe<OnlineDpoRecipe> {
  return new Recipe<OnlineDpoRecipe>({ ...input, stage: 'online-dpo' }, opts);
}

/** A GRPO recipe (prompts and a reward module). */
export function grpo(input: StageInput<'grpo'>, opts: { baseDir?: string } = {}): Recipe<GrpoRecipe> {
  return new Recipe<GrpoRecipe>({ ...input, stage: 'grpo' }, opts);
}

/**
 * Chains stage recipes: `recipe.pipeline([pretrain, sft, dpo, grpo])`. Each stage starts from the
 * previous one's final checkpoint; the run resumes at stage granularity.
 */
export function pipeline(
  stages: (Recipe | RecipeInput)[],
  opts: { baseDir?: string; name?: string; backend?: PipelineInput['backend']; from?: string } = {},
): Pipeline {
  return Pipeline.of(stages, opts);
}

export type { RunOptions as PipelineRunOptions };
