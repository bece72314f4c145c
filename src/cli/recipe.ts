import type { Command } from 'commander';
import { recipeJsonSchema } from '../recipe/schema.js';

export function register(program: Command): void {
  const recipe = program.command('recipe').description('Recipe tools.');
  recipe
    .command('schema')
    .description('Print the JSON Schema of recipe files.')
    .action(() => {
      process.stdout.write(JSON.stringify(recipeJsonSchema(), null, 2) + '\n');
    });
}
