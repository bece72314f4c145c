import type { Command } from 'commander';
import { LatheError } from '../errors.js';
import { lockPipeline, lockRecipe } from '../recipe/lock.js';
import { loadRecipe } from '../runs/recipe.js';

export function register(program: Command): void {
  program
    .command('validate')
    .description('Check a recipe: exit 0, or exit 2 listing every error with its path and a fix.')
    .argument('<recipe>', 'recipe file (.json, .yaml)')
    .action(async (file: string) => {
      const r = await loadRecipe(file);
      // Data paths, the base model (`from`) and reward modules are part of validity: resolve and hash them as a run would.
      try {
        if (r.config.stage === 'pipeline')
          await lockPipeline({ ...r.config, backend: 'cpu' }, { baseDir: r.baseDir, backend: 'cpu' });
        else await lockRecipe(r.config, { baseDir: r.baseDir, backend: 'cpu' });
      } catch (e) {
        if (e instanceof LatheError) throw new LatheError(`${file}: ${e.message}`);
        throw e;
      }
      console.log(`${file}: valid ${r.stage} recipe`);
    });
}
