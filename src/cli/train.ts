import type { Command } from 'commander';
import { loadRecipe } from '../runs/recipe.js';
import type { Run } from '../runs/run.js';
import type { RunSummary } from '../runs/rundir.js';
import { engineLabel } from '../engine/index.js';
import { backendOption, engineOptions, positiveInt, withResourceOptions, type ResourceFlags } from './options.js';
import { followRun, type ProgressMode } from './progress.js';

/** First Ctrl-C stops at the next step with a checkpoint; a second one exits at once. */
export function interruptOnSigint(run: Run): () => void {
  let count = 0;
  const handler = () => {
    count++;
    if (count === 1) {
      process.stderr.write(
        '\ninterrupt: stopping at the next step and writing a checkpoint (Ctrl-C again to abort now)\n',
      );
      run.interrupt();
    } else process.exit(130);
  };
  process.on('SIGINT', handler);
  process.on('SIGTERM', handler);
  return () => {
    process.off('SIGINT', handler);
    process.off('SIGTERM', handler);
  };
}

/** Prints how a run ended and returns the exit code. */
export function reportEnd(s: RunSummary, dir: string, json: boolean): number {
  if (json) process.stdout.write(JSON.stringify({ summary: s }) + '\n');
  else {
    const bits = [`${s.status} at step ${s.step}/${s.steps}`];
    if (s.loss !== undefined) bits.push(`loss ${s.loss.toFixed(4)}`);
    if (s.eval_loss !== undefined) bits.push(`eval_loss ${s.eval_loss.toFixed(4)}`);
    if (s.tokens_per_s) bits.push(`${s.tokens_per_s} tok/s`);
    console.log(`run ${dir}: ${bits.join(', ')}`);
    if (s.error) console.error(`error: ${s.error}`);
  }
  return s.status === 'failed' ? 1 : 0;
}

export function progressMode(json: boolean | undefined): ProgressMode {
  return json ? 'json' : process.stdout.isTTY ? 'bar' : 'plain';
}

export function register(program: Command): void {
  withResourceOptions(program.command('train'))
    .description('Train a recipe in this process, writing a run directory.')
    .argument('<recipe>', 'recipe file (.json, .yaml)')
    .option('--out <dir>', 'run directory to create (default: runs/<name>-<lock id>)')
    .option('--steps <n>', 'override train.steps', positiveInt('--steps'))
    .option('--backend <name>', 'cpu, wasm, webgpu or auto (overrides the recipe and LATHE_BACKEND)', backendOption)
    .option(engineOptions[0]!.flags, engineOptions[0]!.about, engineOptions[0]!.parse)
    .option(engineOptions[1]!.flags, engineOptions[1]!.about, engineOptions[1]!.parse)
    .option(engineOptions[2]!.flags, engineOptions[2]!.about, engineOptions[2]!.parse)
    .option(
      '--stop-after <n>',
      'stop after step n as if interrupted (a checkpoint is written; resume continues)',
      positiveInt('--stop-after'),
    )
    .option('--private', "make the run directory its owner's alone (0700): it holds tokenized data")
    .option('--json', 'print metrics and events as JSON lines')
    .action(
      async (
        file: string,
        o: ResourceFlags & {
          out?: string;
          steps?: number;
          backend?: 'cpu' | 'wasm' | 'webgpu' | 'auto';
          engine?: 'tfjs' | 'torch' | 'auto';
          device?: 'cpu' | 'cuda';
          dtype?: 'fp32' | 'bf16';
          stopAfter?: number;
          private?: boolean;
          json?: boolean;
        },
      ) => {
        const r = await loadRecipe(file);
        const run = await r.start({
          out: o.out,
          steps: o.steps,
          backend: o.backend,
          engine: o.engine,
          device: o.device,
          dtype: o.dtype,
          stopAfter: o.stopAfter,
          private: o.private,
          gpus: o.gpus,
          nodes: o.nodes,
          parallel: o.parallel,
        });
        if (!o.json)
          console.log(
            `run ${run.dir.path} (lock ${run.lock.id}, ${run.lock.engine ? `engine ${engineLabel(run.lock)}` : `backend ${run.lock.backend}`})`,
          );
        await watchToEnd(run, !!o.json);
      },
    );
}

/** Shows a run's progress until it ends (Ctrl-C interrupts it) and sets the exit code. */
export async function watchToEnd(run: Run, json: boolean): Promise<void> {
  const off = interruptOnSigint(run);
  try {
    await followRun(run, progressMode(json), run.lock.recipe.train.steps);
    process.exitCode = reportEnd(await run.done, run.dir.path, json);
  } finally {
    off();
  }
}
