import type { Command } from 'commander';
import { existsSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { dirname, extname, relative, resolve } from 'node:path';
import YAML from 'yaml';
import { LatheError } from '../errors.js';
import { Recipe } from '../recipe/recipe.js';
import type { RecipeInput } from '../recipe/schema.js';

const STAGES = ['pretrain', 'sft', 'dpo', 'online-dpo', 'grpo'] as const;

/** A recipe that trains on a CPU in a few minutes: a small model, a short schedule. */
export function starterRecipe(stage: string, data: string[], baseDir: string, field?: string): RecipeInput {
  if (stage !== 'pretrain') throw new LatheError(`init: stage "${stage}" comes with post-training; this version supports "pretrain"`);
  return {
    name: 'starter',
    stage: 'pretrain',
    seed: 1337,
    backend: 'auto',
    data: {
      sources: data.map((p) => ({ path: relative(baseDir, resolve(p)) || '.', ...(field ? { field } : {}) })),
      clean: { dedupe: 'exact' },
      onError: 'skip',
      valFraction: 0.05,
    },
    tokenizer: { vocabSize: 1024 },
    model: { arch: 'dense', dim: 128, layers: 2, heads: 4, context: 128 },
    train: { steps: 300, batchSize: 16, lr: 3e-3, minLr: 3e-4, warmupSteps: 30, checkpointEvery: 100 },
    eval: { every: 50, batches: 4 },
  };
}

export function register(program: Command): void {
  program
    .command('init')
    .description('Write a runnable starter recipe for your data, sized to train on a CPU in a few minutes.')
    .argument('<stage>', `one of ${STAGES.join(', ')}`)
    .requiredOption('--data <paths...>', 'data files, folders or globs')
    .option('--field <name>', 'JSONL field or CSV column with the text')
    .option('--out <file>', 'recipe file to write (.json or .yaml)', 'recipe.json')
    .option('--force', 'overwrite --out if it exists')
    .action(async (stage: string, o: { data: string[]; field?: string; out: string; force?: boolean }) => {
      if (!(STAGES as readonly string[]).includes(stage)) throw new LatheError(`init: stage must be one of ${STAGES.join(', ')}; got "${stage}"`);
      const out = resolve(o.out);
      if (existsSync(out) && !o.force) throw new LatheError(`--out ${o.out}: exists; pass --force to overwrite`);
      for (const p of o.data) if (!/[*?[{]/.test(p) && !existsSync(p)) throw new LatheError(`--data ${p}: does not exist`);
      const input = starterRecipe(stage, o.data, dirname(out), o.field);
      new Recipe(input, { baseDir: dirname(out) }); // validate before writing
      const text = /\.ya?ml$/i.test(extname(out)) ? YAML.stringify(input) : JSON.stringify(input, null, 2) + '\n';
      await writeFile(out, text);
      console.log(`wrote ${o.out}: lathe validate ${o.out} && lathe train ${o.out}`);
    });
}
