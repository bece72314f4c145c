import { describe, expect, it } from 'vitest';

import { launchCommand, pickLauncher, rankFailure } from './launch.js';

const l = { perNode: 2, nodes: 2, parallel: 'ddp' as const, timeoutMs: 60_000 };

// torchrun's failure summary, as torch 2.13 prints it: the survivor it stopped first, the cause after.
const summary = `
============================================================
lathe_torch FAILED
------------------------------------------------------------
Failures:
[1]:
  time      : 2026-12-04_18:00:01
  host      : node-a
  rank      : 0 (local_rank: 0)
  exitcode  : -15 (pid: 101) Signal 15 (SIGTERM) received by PID 101
  error_file: <N/A>
  traceback : Signal 15 (SIGTERM) received by PID 101
------------------------------------------------------------
Root Cause (first observed failure):
[0]:
  time      : 2026-12-04_18:00:01
  host      : node-b
  rank      : 3 (local_rank: 1)
  exitcode  : -9 (pid: 104) Signal 9 (SIGKILL) received by PID 104
  error_file: <N/A>
  traceback : Signal 9 (SIGKILL) received by PID 104
============================================================`;

describe('torch launch', () => {
  it('picks join where an executor set a rendezvous, srun inside Slurm for several nodes, else local', () => {
    expect(pickLauncher(1, {})).toBe('local');
    expect(pickLauncher(2, { SLURM_JOB_ID: '7' })).toBe('srun');
    expect(pickLauncher(1, { SLURM_JOB_ID: '7' })).toBe('local');
    expect(pickLauncher(1, { SLURM_JOB_ID: '7', LATHE_LAUNCHER: 'srun' })).toBe('srun');
    expect(pickLauncher(2, { SLURM_JOB_ID: '7', LATHE_RDZV_ENDPOINT: 'a:1' })).toBe('join');
  });

  it('builds torchrun command lines: standalone, srun with the rendezvous here, join as host or not', () => {
    expect(launchCommand({ ...l, nodes: 1, launcher: 'local' }, 'py', 0, 'id')).toEqual([
      'py',
      '-m',
      'torch.distributed.run',
      '--nproc-per-node=2',
      '--max-restarts=0',
      '--standalone',
      '--nnodes=1',
      '-m',
      'lathe_torch',
    ]);
    const srun = launchCommand({ ...l, launcher: 'srun' }, 'py', 4242, 'run1', { LATHE_HOST: 'n0' });
    expect(srun.slice(0, 4)).toEqual(['srun', '--ntasks=2', '--kill-on-bad-exit=1', '--export=ALL']);
    expect(srun).toContain('--rdzv-endpoint=n0:4242');
    expect(srun).toContain('--rdzv-id=run1');
    const env = { LATHE_RDZV_ENDPOINT: 'job-0.job:29400' };
    expect(launchCommand({ ...l, launcher: 'join' }, 'py', 0, 'r', env)).toContain('--rdzv-conf=is_host=1');
    const node = launchCommand({ ...l, launcher: 'join', rdzvHost: false }, 'py', 0, 'r', env);
    expect(node).toContain('--rdzv-conf=is_host=0');
    expect(node).toContain('--rdzv-endpoint=job-0.job:29400');
    expect(node).toContain('--nnodes=2');
  });

  it('names the rank that failed: the root cause, not the survivors torchrun stopped, in its own words when it said some', () => {
    expect(rankFailure(summary)).toBe('rank 3 on node-b killed by signal 9');
    expect(rankFailure('lathe_torch: rank 3 (node-b): CUDA out of memory\n' + summary)).toBe(
      'rank 3 on node-b failed: CUDA out of memory',
    );
    const exit = summary.replace('-9 (pid: 104)', '1 (pid: 104)');
    expect(rankFailure(exit)).toBe('rank 3 on node-b exit code 1');
    expect(rankFailure('lathe_torch: rank 1 (h): bad frame')).toBe('rank 1 on h failed: bad frame');
    expect(rankFailure('nothing useful')).toBeUndefined();
  });
});
