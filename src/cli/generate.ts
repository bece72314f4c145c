import type { Command } from 'commander';
import { generate } from '../runs/index.js';
import { finiteNumber, positiveInt } from './options.js';

export function register(program: Command): void {
  program
    .command('generate')
    .description("Sample a completion from a run's latest checkpoint; the completion is printed last.")
    .argument('<run-dir>', 'run directory')
    .requiredOption('--prompt <text>', 'prompt text (may be empty: "")')
    .option('--max-tokens <n>', 'tokens to generate at most', positiveInt('--max-tokens'), 64)
    .option('--temperature <t>', 'sampling temperature; 0 is greedy', finiteNumber('--temperature'), 0.8)
    .option('--top-k <k>', 'keep the k most likely tokens (0: off)', finiteNumber('--top-k'), 0)
    .option('--top-p <p>', 'nucleus sampling mass (1: off)', finiteNumber('--top-p'), 1)
    .option('--seed <n>', 'sampling seed', finiteNumber('--seed'), 0)
    .action(
      async (
        dir: string,
        o: { prompt: string; maxTokens: number; temperature: number; topK: number; topP: number; seed: number },
      ) => {
        const text = await generate(dir, o.prompt, {
          maxTokens: o.maxTokens,
          temperature: o.temperature,
          topK: o.topK,
          topP: o.topP,
          seed: o.seed,
          onCheckpoint: (path, skipped) => {
            for (const k of skipped) console.error(`checkpoint ${k.step} is corrupt, skipped: ${k.reason}`);
            console.error(`checkpoint: ${path}`);
          },
        });
        process.stdout.write(text + '\n');
      },
    );
}
