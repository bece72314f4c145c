import type { Command } from 'commander';
import { formatInspect, inspectData } from '../data/inspect.js';
import { loadRecipe } from '../recipe/recipe.js';

export function register(program: Command): void {
  const data = program.command('data').description('Data tools.');
  data
    .command('inspect')
    .description('Run a recipe\'s data pipeline and report documents, tokens, duplicates, PII, epochs and rejected lines.')
    .argument('<recipe>', 'recipe file (.json, .yaml)')
    .option('--json', 'print the report as JSON')
    .action(async (file: string, o: { json?: boolean }) => {
      const r = await loadRecipe(file);
      // Tokenizer training is the same on every backend; cpu avoids starting wasm for a report.
      const report = await inspectData(await r.lock({ backend: 'cpu' }));
      console.log(o.json ? JSON.stringify(report, null, 2) : formatInspect(report));
    });
}
