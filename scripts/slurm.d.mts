// Types for scripts/slurm.mjs (plain JavaScript so scripts/setup.mjs can use it before any build).

/** Installs slurm-wlm and munge when absent (root, apt-get); says why not otherwise. */
export function ensureSlurm(opts?: { log?: (m: string) => void }): Promise<{ ok: true; installed: boolean; version: string } | { ok: false; reason: string }>;

/** A one-node Slurm cluster started by {@link startSlurm}. */
export interface SlurmCluster {
  /** This process's environment plus SLURM_CONF: pass it to sbatch, squeue, sacct and scancel. */
  env: NodeJS.ProcessEnv;
  conf: string;
  node: string;
  dir: string;
  stop(): Promise<void>;
}

/** Starts munged, slurmctld and slurmd with their configuration, state and logs under `dir`. */
export function startSlurm(dir: string): Promise<SlurmCluster>;
