import type { Command } from 'commander';
import { useBackend, type BackendRequest } from '../engine/tfjs/backend.js';
import { resume } from '../runs/index.js';
import { backendOption, positiveInt, withResourceOptions, type ResourceFlags } from './options.js';
import { watchToEnd } from './train.js';

export function register(program: Command): void {
  withResourceOptions(program.command('resume'))
    .description('Continue a run from its last checkpoint.')
    .argument('<run-dir>', 'run directory')
    .option('--stop-after <n>', 'stop after step n as if interrupted', positiveInt('--stop-after'))
    .option(
      '--backend <name>',
      "continue a tfjs run on another backend: cpu, wasm, webgpu or auto (default: the run's own)",
      backendOption,
    )
    .option('--json', 'print metrics and events as JSON lines')
    .action(
      async (dir: string, o: ResourceFlags & { stopAfter?: number; json?: boolean; backend?: BackendRequest }) => {
        const asked = o.gpus !== undefined || o.nodes !== undefined || o.parallel !== undefined;
        const backend = o.backend && (await useBackend(o.backend));
        const run = await resume(dir, {
          stopAfter: o.stopAfter,
          backend,
          resources: asked ? { gpus: o.gpus, nodes: o.nodes, parallel: o.parallel } : undefined,
        });
        await watchToEnd(run, !!o.json);
      },
    );
}
