import { readFileSync } from 'node:fs';
import type { Command } from 'commander';
import { connect } from '../dispatch/worker.js';
import { LatheError } from '../errors.js';
import { loadRecipe } from '../runs/recipe.js';
import type { Run } from '../runs/run.js';
import { readTokenFile } from '../worker/auth.js';
import { backendOption, engineOptions, positiveInt, withResourceOptions, type ResourceFlags } from './options.js';
import { followRun } from './progress.js';
import { progressMode, reportEnd } from './train.js';

/** Reads --ca (a PEM certificate to trust), if given. */
export function readCa(path: string | undefined): Buffer | undefined {
  if (path === undefined) return undefined;
  try {
    return readFileSync(path);
  } catch (e) {
    throw new LatheError(`--ca ${path}: cannot read it (${(e as Error).message})`);
  }
}

interface SubmitOptions extends ResourceFlags {
  worker: string;
  tokenFile: string;
  attach?: string;
  steps?: number;
  backend?: 'cpu' | 'wasm' | 'webgpu' | 'auto';
  engine?: 'tfjs' | 'torch' | 'auto';
  device?: 'cpu' | 'cuda';
  dtype?: 'fp32' | 'bf16';
  out?: string;
  wait?: boolean;
  detach?: boolean;
  json?: boolean;
  ca?: string;
  name?: string;
}

// Flags that shape a new job, which a job that exists already cannot take.
const SUBMIT_ONLY: [keyof SubmitOptions, string][] = [
  ['steps', '--steps'],
  ['backend', '--backend'],
  ['name', '--name'],
  ['detach', '--detach'],
  ['gpus', '--gpus'],
  ['nodes', '--nodes'],
  ['parallel', '--parallel'],
];

export function register(program: Command): void {
  withResourceOptions(program.command('submit'))
    .description(
      'Train a recipe on a worker: uploads the data the worker lacks (by content hash; worker:<path> files stay on the worker), streams progress, ' +
        'and downloads the run directory (metrics, events, summary, final checkpoint) into --out when the job ends. ' +
        'With --attach <job> instead of a recipe, follows a job already on the worker (queued, running or ended) the same way.',
    )
    .argument('[recipe]', 'recipe file (.json, .yaml); omit it with --attach')
    .requiredOption('--worker <url>', 'the worker, e.g. ws://gpu-node:8765 or wss://…')
    .requiredOption('--token-file <file>', "file holding the worker's token")
    .option(
      '--attach <job>',
      'follow this job (see lathe jobs) from its start instead of submitting a recipe; reconnects by itself like --wait',
    )
    .option('--steps <n>', 'override train.steps', positiveInt('--steps'))
    .option(
      '--backend <name>',
      "cpu, wasm, webgpu, or auto (the worker's own; also when the recipe names none)",
      backendOption,
    )
    .option(
      engineOptions[0]!.flags,
      "tfjs, torch or auto; overrides the recipe (default: the worker's)",
      engineOptions[0]!.parse,
    )
    .option(engineOptions[1]!.flags, engineOptions[1]!.about, engineOptions[1]!.parse)
    .option(engineOptions[2]!.flags, engineOptions[2]!.about, engineOptions[2]!.parse)
    .option(
      '--out <dir>',
      'local run directory to mirror into (default: runs/<name>-<lock id>); with --attach it may be the mirror an earlier submit of that job made',
    )
    .option('--wait', 'stay until the job ends, reconnecting by itself if the connection drops')
    .option('--detach', 'print the job id and return once the job is queued')
    .option('--name <name>', 'job name shown by lathe jobs')
    .option('--ca <file>', 'trust this certificate (PEM) for a wss:// worker with a self-signed one')
    .option('--json', 'print metrics and events as JSON lines')
    .action(async (file: string | undefined, o: SubmitOptions) => {
      if (o.attach !== undefined) {
        if (file !== undefined)
          throw new LatheError(`submit: give a recipe or --attach ${o.attach}, not both (${file})`);
        const clash = SUBMIT_ONLY.find(([k]) => o[k] !== undefined);
        if (clash) throw new LatheError(`${clash[1]}: not with --attach; the job on the worker is already set up`);
      } else if (file === undefined)
        throw new LatheError(
          'submit: missing the recipe file (or --attach <job> to follow a job already on the worker)',
        );
      // Worker log lines and upload progress go to stderr, so --json output stays clean on stdout.
      const notice = (m: string) => console.error(m);
      const attaching = o.attach !== undefined;
      const exec = await connect(o.worker, {
        token: readTokenFile(o.tokenFile),
        ca: readCa(o.ca),
        reconnect: attaching || !!o.wait,
        log: notice,
      });
      try {
        let run: Run;
        if (attaching) {
          run = await exec.attach(o.attach!, { out: o.out, onNotice: notice });
          const job = exec.lastJob!;
          if (!o.json)
            console.log(
              `attached to job ${job.id} on ${exec.url} (${job.status}, step ${job.step}/${job.steps}, backend ${job.backend}); mirroring into ${run.dir.path}`,
            );
        } else {
          const r = await loadRecipe(file!);
          const lock = await exec.lockRecipe(r, {
            steps: o.steps,
            backend: o.backend,
            engine: o.engine,
            device: o.device,
            dtype: o.dtype,
            gpus: o.gpus,
            nodes: o.nodes,
            parallel: o.parallel,
          });
          run = await exec.start(lock, { out: o.out, name: o.name, onNotice: notice });
          const job = exec.lastJob!;
          if (!o.json)
            console.log(
              `job ${job.id} on ${exec.url} (lock ${run.lock.id}, backend ${run.lock.backend}); mirroring into ${run.dir.path}`,
            );
          if (o.detach) {
            if (o.json) process.stdout.write(JSON.stringify({ job }) + '\n');
            else
              console.log(
                `detached; follow it with lathe submit --attach ${job.id} --worker ${exec.url}, stop it with lathe cancel ${job.id}`,
              );
            return;
          }
        }
        const job = exec.lastJob!;
        // Ctrl-C leaves the job training on the worker: only this client goes away.
        const detach = () => {
          console.error(
            `\ndetached; job ${job.id} keeps training on the worker (lathe submit --attach ${job.id} follows it again; lathe cancel ${job.id} stops it)`,
          );
          process.exit(130);
        };
        process.on('SIGINT', detach);
        try {
          await followRun(run, progressMode(o.json), run.lock.recipe.train.steps);
          process.exitCode = reportEnd(await run.done, run.dir.path, !!o.json);
        } finally {
          process.off('SIGINT', detach);
        }
      } finally {
        exec.close();
      }
    });
}
