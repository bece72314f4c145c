import { hostname } from 'node:os';

// How the torch engine's ranks start: torchrun on this machine, torchrun on every node of a Slurm
// allocation through srun (c10d rendezvous on this, the first, node), or torchrun on this node of
// a multi-node job whose other nodes an executor started (Kubernetes: LATHE_RDZV_ENDPOINT).

/** Data parallelism: DDP replicates the model; FSDP (FSDP2) shards parameters, gradients and optimizer state. */
export type Parallelism = 'ddp' | 'fsdp';

/** One run over several processes. */
export interface TorchLaunch {
  /** Ranks per node: GPUs on CUDA (one each), processes on the CPU. */
  perNode: number;
  nodes: number;
  parallel: Parallelism;
  /**
   * local: torchrun here (one node); srun: torchrun on every node of this Slurm allocation;
   * join: torchrun here as one node of a rendezvous others join too (LATHE_RDZV_ENDPOINT, LATHE_NODE_RANK).
   */
  launcher: 'local' | 'srun' | 'join';
  /** A collective or a reply that waits longer than this fails the run (a hung rank). */
  timeoutMs: number;
}

/** The launcher a multi-rank run takes here: srun inside a Slurm job, join where an executor set a rendezvous, else local. */
export function pickLauncher(nodes: number, env: NodeJS.ProcessEnv = process.env): TorchLaunch['launcher'] {
  if (env.LATHE_RDZV_ENDPOINT) return 'join';
  if (env.SLURM_JOB_ID && (nodes > 1 || env.LATHE_LAUNCHER === 'srun')) return 'srun';
  return 'local';
}

/** The address other nodes reach this one by: LATHE_HOST, else the host name. */
export function advertisedHost(env: NodeJS.ProcessEnv = process.env): string {
  return env.LATHE_HOST || hostname();
}

/** The command that starts every rank (argv), given the Python and a free port for the rendezvous. */
export function launchCommand(
  l: TorchLaunch,
  python: string,
  rdzvPort: number,
  runId: string,
  env: NodeJS.ProcessEnv = process.env,
): string[] {
  const torchrun = [python, '-m', 'torch.distributed.run', `--nproc-per-node=${l.perNode}`, '--max-restarts=0'];
  const mod = ['-m', 'lathe_torch'];
  if (l.launcher === 'local') return [...torchrun, '--standalone', '--nnodes=1', ...mod];
  const rdzv = [`--nnodes=${l.nodes}`, '--rdzv-backend=c10d', `--rdzv-id=${runId}`];
  if (l.launcher === 'join') {
    // This node hosts the rendezvous when it is node 0; the others come to it.
    return [...torchrun, ...rdzv, `--rdzv-endpoint=${env.LATHE_RDZV_ENDPOINT}`, ...mod];
  }
  // One torchrun per node; the rendezvous store lives on this (the batch script's) node.
  return [
    'srun',
    `--ntasks=${l.nodes}`,
    '--kill-on-bad-exit=1',
    '--export=ALL',
    ...torchrun,
    ...rdzv,
    `--rdzv-endpoint=${advertisedHost(env)}:${rdzvPort}`,
    ...mod,
  ];
}

/**
 * What went wrong, from the ranks' stderr: the rank, its host and the error when a rank said so
 * (`lathe_torch: rank R (host): ...`), else the first failure in torchrun's summary (a rank killed
 * by a signal says nothing itself).
 */
export function rankFailure(stderr: string): string | undefined {
  const own = /lathe_torch: rank (\d+) \(([^)]*)\): ([^\n]*)/.exec(stderr);
  if (own) return `rank ${own[1]} on ${own[2]} failed: ${own[3]}`;
  const rank = /^\s*rank\s*:\s*(\d+)[^\n]*$/m.exec(stderr);
  if (!rank) return undefined;
  const from = stderr.slice(Math.max(0, rank.index - 400));
  const host = /^\s*host\s*:\s*(\S+)/m.exec(from)?.[1];
  const code = /^\s*exitcode\s*:\s*(-?\d+)/m.exec(from.slice(400))?.[1];
  const trace = /^\s*traceback\s*:\s*([^\n]+)/m.exec(from.slice(400))?.[1];
  const signal = code && Number(code) < 0 ? `killed by signal ${-Number(code)}` : code ? `exit code ${code}` : 'failed';
  return `rank ${rank[1]}${host ? ` on ${host}` : ''} ${signal}${trace && !/N\/A|Signal/.test(trace) ? `: ${trace}` : ''}`;
}
