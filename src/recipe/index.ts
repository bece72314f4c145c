import { Recipe, type RunOptions } from './recipe.js';
import type { RecipeInput } from './schema.js';

export { Recipe, loadRecipe as load, diff, validateRecipe as validate, parseRecipeText, type RunOptions } from './recipe.js';
export { recipeJsonSchema as schema } from './schema.js';
export type * from './schema.js';
export { formatDiff, type RecipeChange } from './diff.js';
export { lockRecipe, verifyLockId, canonicalJson, sha256File, type RecipeLock } from './lock.js';
export { checkRecipe, resolveRecipe, normalizeKeys } from './validate.js';

type StageInput<S extends RecipeInput['stage']> = Omit<Extract<RecipeInput, { stage: S }>, 'stage'>;

/** A pre-training recipe built in code; relative paths resolve against opts.baseDir or the cwd. */
export function pretrain(input: StageInput<'pretrain'>, opts: { baseDir?: string } = {}): Recipe {
  return new Recipe({ ...input, stage: 'pretrain' }, opts);
}
