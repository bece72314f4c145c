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
  /** join: whether this node holds the rendezvous store (the trainer's does; `lathe engine-node`s do not). */
  rdzvHost?: boolean;
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
    // Said outright: torchrun's own guess compares the endpoint with the host name, which a pod's
    // DNS name (job-0.service) does not match.
    const host = `--rdzv-conf=is_host=${l.rdzvHost === false ? 0 : 1}`;
    return [...torchrun, ...rdzv, `--rdzv-endpoint=${env.LATHE_RDZV_ENDPOINT}`, host, ...mod];
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
 * What went wrong, from the ranks' stderr: the first failure of torchrun's summary (its root cause
 * first) that torchrun did not cause itself by stopping the survivors (SIGTERM), with that rank's
 * own words when it said something (`lathe_torch: rank R (host): ...`); else the first rank that
 * said something.
 */
export function rankFailure(stderr: string): string | undefined {
  const root = stderr.indexOf('Root Cause');
  const sections = root >= 0 ? [stderr.slice(root), stderr.slice(0, root)] : [stderr];
  const failures = sections.flatMap((text) =>
    [...text.matchAll(/^\s*host\s*:\s*(\S+)\s*\n\s*rank\s*:\s*(\d+)[^\n]*\n\s*exitcode\s*:\s*(-?\d+)/gm)].map((m) => ({
      host: m[1]!,
      rank: m[2]!,
      code: Number(m[3]),
    })),
  );
  const first = failures.find((f) => f.code !== -15) ?? failures[0];
  const said = (rank: string) => new RegExp(`lathe_torch: rank ${rank} \\(([^)]*)\\): ([^\\n]*)`).exec(stderr);
  if (first) {
    const own = said(first.rank);
    if (own) return `rank ${first.rank} on ${own[1]} failed: ${own[2]}`;
    const how = first.code < 0 ? `killed by signal ${-first.code}` : `exit code ${first.code}`;
    return `rank ${first.rank} on ${first.host} ${how}`;
  }
  const own = /lathe_torch: rank (\d+) \(([^)]*)\): ([^\n]*)/.exec(stderr);
  return own ? `rank ${own[1]} on ${own[2]} failed: ${own[3]}` : undefined;
}
