import { existsSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ensureSlurm, startSlurm, type SlurmCluster } from '../scripts/slurm.mjs';
import { slurm, type SlurmExecutor } from '../src/dispatch/slurm.js';
import { Recipe } from '../src/runs/recipe.js';
import { scratch, tallySlice, tinyRecipe } from './helpers.js';

// A real Slurm (Debian's slurm-wlm: munged, slurmctld, slurmd) on this machine, started and stopped here.
// ensureSlurm installs it when it is absent and we are root; otherwise the set-up fails saying why.

let cluster: SlurmCluster;
let dir: string;
let tokenFile: string;

beforeAll(async () => {
  const ok = await ensureSlurm();
  if (!ok.ok) throw new Error(`Slurm is not available: ${ok.reason}`);
  dir = await scratch('lathe-slurm-');
  cluster = await startSlurm(join(dir, 'cluster'));
  tokenFile = join(dir, 'token');
  await writeFile(tokenFile, 'slurm-test-token-0123456789abcdef\n', { mode: 0o600 });
}, 600_000);

afterAll(async () => {
  await cluster?.stop();
});

describe('slurm executor (real Slurm)', () => {
  it('builds sbatch arguments with GPU requests', async () => {
    const ex = slurm({
      sharedDir: join(dir, 'shared'),
      tokenFile,
      gpus: 2,
      partition: 'gpu',
      time: '01:00:00',
      cpus: 8,
      mem: '32G',
      sbatchArgs: ['--exclusive'],
    });
    expect(ex.sbatchArgs('/shared/x', 'my run')).toEqual([
      '--parsable',
      '--job-name=lathe-my-run',
      '--output=/shared/x/slurm-%j.out',
      '--chdir=/shared/x',
      '--partition=gpu',
      '--gres=gpu:2',
      '--cpus-per-task=8',
      '--mem=32G',
      '--time=01:00:00',
      '--exclusive',
    ]);
    expect(ex.backendFor(undefined)).toBe('webgpu');
    expect(ex.script('/shared/x', 'webgpu')).toMatch(
      /^exec '.+' '.+bin\/lathe\.js' 'worker' '--listen' '0\.0\.0\.0:0' '--token-file' '.+' '--state-dir' '\/shared\/x\/worker' '--announce' '\/shared\/x\/worker\.url' '--backend' 'webgpu' '--once'$/m,
    );
    // Vulkan in a GPU container needs the driver's graphics capability; a cpu worker is left alone.
    expect(ex.script('/shared/x', 'webgpu')).toMatch(/^export NVIDIA_DRIVER_CAPABILITIES=compute,utility,graphics$/m);
    expect(ex.script('/shared/x', 'cpu')).not.toMatch(/NVIDIA_DRIVER_CAPABILITIES/);
  });

  it('sbatch-es a worker for the run, streams it, downloads it; squeue tracks it and sacct reports it COMPLETED', async () => {
    const data = await tallySlice(dir, 200);
    const ex: SlurmExecutor = slurm({
      sharedDir: join(dir, 'shared'),
      tokenFile,
      env: cluster.env,
      pollMs: 200,
      backend: 'cpu',
    });
    const r = new Recipe(tinyRecipe(data, { train: { steps: 4, batchSize: 4, warmupSteps: 1, checkpointEvery: 2 } }), {
      baseDir: dir,
    });
    const run = await r.start({ on: ex, out: join(dir, 'run') });
    const seen: number[] = [];
    run.onMetric((m) => seen.push(m.step));
    const s = await run.done;
    expect(s.status).toBe('completed');
    expect(seen).toEqual([1, 2, 3, 4]);
    const rec = JSON.parse(await readFile(join(dir, 'run', 'slurm.json'), 'utf8'));
    expect(rec).toMatchObject({ job: expect.stringMatching(/^\d+$/), job_state: 'COMPLETED', state_from: 'sacct' });
    expect(await ex.state(rec.job)).toEqual({ job: rec.job, state: 'COMPLETED', source: 'sacct' });
    expect(existsSync(join(dir, 'run', 'checkpoints', '4', 'model.safetensors'))).toBe(true);
    expect(await readFile(join(rec.dir, `slurm-${rec.job}.out`), 'utf8')).toMatch(
      /once: the job has ended and its clients have left; stopping/,
    );
  });

  it('cancel stops the run with a checkpoint and scancel-s its Slurm job (CANCELLED)', async () => {
    const data = await tallySlice(dir, 200);
    const ex = slurm({ sharedDir: join(dir, 'shared'), tokenFile, env: cluster.env, pollMs: 200, backend: 'cpu' });
    const r = new Recipe(
      tinyRecipe(data, { train: { steps: 400, batchSize: 4, warmupSteps: 1, checkpointEvery: 0 } }),
      { baseDir: dir },
    );
    const run = await r.start({ on: ex, out: join(dir, 'cancelled') });
    await new Promise<void>((resolve) => {
      const off = run.onMetric((m) => {
        if (m.step >= 2) {
          off();
          resolve();
        }
      });
    });
    expect((await ex.state(JSON.parse(await readFile(join(dir, 'cancelled', 'slurm.json'), 'utf8')).job)).state).toBe(
      'RUNNING',
    );
    run.cancel();
    const s = await run.done;
    expect(s.status).toBe('cancelled');
    expect(s.step).toBeLessThan(400);
    expect(existsSync(join(dir, 'cancelled', 'checkpoints', String(s.step), 'model.safetensors'))).toBe(true);
    const after = JSON.parse(await readFile(join(dir, 'cancelled', 'slurm.json'), 'utf8'));
    expect(after).toMatchObject({ job_state: 'CANCELLED', state_from: 'sacct' });
  });

  it('a torch run over 2 nodes: one batch job of 2 tasks, torchrun on each through srun (c10d rendezvous on the first); sacct says COMPLETED', async () => {
    const data = await tallySlice(dir, 200);
    // This cluster has one node: the two tasks (two torchrun "nodes" of one rank each) share it.
    const ex = slurm({ sharedDir: join(dir, 'shared'), tokenFile, env: cluster.env, pollMs: 200, packTasks: true });
    const r = new Recipe(
      tinyRecipe(data, {
        engine: 'torch',
        resources: { gpus: 1, nodes: 2, timeoutSeconds: 120 },
        train: { steps: 4, batchSize: 4, warmupSteps: 1, checkpointEvery: 2 },
      }),
      { baseDir: dir },
    );
    const lock = await ex.lockRecipe(r, {});
    expect(lock.engine).toMatchObject({ kind: 'torch', device: 'cpu' });
    expect(ex.sbatchArgs('/shared/y', 'multi', lock)).toContain('--ntasks=2');
    expect(slurm({ sharedDir: '/s', tokenFile }).sbatchArgs('/shared/y', 'multi', lock)).toEqual(
      expect.arrayContaining(['--nodes=2', '--ntasks-per-node=1']),
    );
    const run = await ex.start(lock, { out: join(dir, 'multi') });
    const s = await run.done;
    expect(s.status, s.error).toBe('completed');
    const ms = await run.dir.readMetrics();
    expect(ms.at(-1)).toMatchObject({ step: 4 });
    expect(ms.find((m) => m.step === 2)?.rank_tokens_per_s).toHaveLength(2);
    const events = await readFile(join(dir, 'multi', 'events.jsonl'), 'utf8');
    expect(events).toMatch(/torch\.distributed: 2 ranks \(ddp, 2 nodes × 1\)/);
    const rec = JSON.parse(await readFile(join(dir, 'multi', 'slurm.json'), 'utf8'));
    expect(rec).toMatchObject({ job_state: 'COMPLETED', state_from: 'sacct' });
  }, 600_000);
});
