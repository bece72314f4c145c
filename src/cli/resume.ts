import type { Command } from 'commander';
import { resume } from '../runs/index.js';
import { positiveInt, withResourceOptions, type ResourceFlags } from './options.js';
import { watchToEnd } from './train.js';

export function register(program: Command): void {
  withResourceOptions(program.command('resume'))
    .description('Continue a run from its last checkpoint.')
    .argument('<run-dir>', 'run directory')
    .option('--stop-after <n>', 'stop after step n as if interrupted', positiveInt('--stop-after'))
    .option('--json', 'print metrics and events as JSON lines')
    .action(async (dir: string, o: ResourceFlags & { stopAfter?: number; json?: boolean }) => {
      const asked = o.gpus !== undefined || o.nodes !== undefined || o.parallel !== undefined;
      const run = await resume(dir, {
        stopAfter: o.stopAfter,
        resources: asked ? { gpus: o.gpus, nodes: o.nodes, parallel: o.parallel } : undefined,
      });
      await watchToEnd(run, !!o.json);
    });
}
