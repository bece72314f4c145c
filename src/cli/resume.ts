import type { Command } from 'commander';
import { resume } from '../runs/index.js';
import { positiveInt } from './options.js';
import { watchToEnd } from './train.js';

export function register(program: Command): void {
  program
    .command('resume')
    .description('Continue a run from its last checkpoint.')
    .argument('<run-dir>', 'run directory')
    .option('--stop-after <n>', 'stop after step n as if interrupted', positiveInt('--stop-after'))
    .option('--json', 'print metrics and events as JSON lines')
    .action(async (dir: string, o: { stopAfter?: number; json?: boolean }) => {
      const run = await resume(dir, { stopAfter: o.stopAfter });
      await watchToEnd(run, !!o.json);
    });
}
