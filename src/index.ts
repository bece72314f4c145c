/**
 * Lathe: train your own language models on your own data, from a notebook or the CLI.
 * Each namespace is one part of the cycle; see DESIGN.md for the contracts.
 */
export * as recipe from './runs/recipe.js';
export * as data from './data/index.js';
export * as tokenizer from './tokenizer/index.js';
export * as model from './api/model.js';
export * as train from './train/index.js';
export * as evaluate from './eval/index.js';
export * as runs from './api/runs.js';
export * as workers from './dispatch/index.js';
export * as backend from './engine/tfjs/index.js';
export * as exporter from './export/index.js';
export * as rooms from './rooms/index.js';
export { Recipe } from './runs/recipe.js';
export { Run } from './runs/run.js';
export { LatheError, RecipeError, DataError } from './errors.js';
export { VERSION } from './version.js';
