// Slurm for tests and development: install it if absent (Debian's slurm-wlm and munge), and start or
// stop a one-node cluster (munged, slurmctld, slurmd) on this machine with its configuration in a
// temp folder. Node builtins only, so scripts/setup.mjs can import it before anything is installed.
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { chmod, mkdir, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { cpus, hostname } from 'node:os';
import { join } from 'node:path';

const DAEMONS = ['munged', 'slurmctld', 'slurmd'];
const CLIENTS = ['sbatch', 'squeue', 'sacct', 'scancel', 'sinfo'];

function which(cmd) {
  const r = spawnSync('sh', ['-c', `command -v ${cmd}`], { encoding: 'utf8' });
  return r.status === 0 ? r.stdout.trim() : undefined;
}

/**
 * Makes sure Slurm's daemons and commands exist: when some are missing and this is a Debian-like
 * system where we are root, installs slurm-wlm and munge with apt-get. Returns { ok, installed,
 * version } or { ok: false, reason } saying exactly what is missing and why it was not installed.
 */
export async function ensureSlurm({ log = (m) => console.error(m) } = {}) {
  const missing = () => [...DAEMONS, ...CLIENTS].filter((c) => !which(c));
  let installed = false;
  if (missing().length) {
    if (process.platform !== 'linux' || !which('apt-get'))
      return {
        ok: false,
        reason: `missing ${missing().join(', ')}, and this system has no apt-get to install slurm-wlm and munge`,
      };
    if (process.getuid?.() !== 0)
      return {
        ok: false,
        reason: `missing ${missing().join(', ')}; install them as root: apt-get install -y slurm-wlm munge`,
      };
    log('slurm: installing slurm-wlm and munge with apt-get (one time)');
    const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
    for (const args of [['update'], ['install', '-y', '--no-install-recommends', 'slurm-wlm', 'munge']]) {
      const r = spawnSync('apt-get', args, { env, encoding: 'utf8' });
      if (r.status !== 0)
        return {
          ok: false,
          reason: `apt-get ${args.join(' ')} failed (exit ${r.status}): ${(r.stderr || r.stdout).trim().split('\n').slice(-3).join(' ')}`,
        };
    }
    installed = true;
    if (missing().length)
      return {
        ok: false,
        reason: `apt-get installed slurm-wlm and munge, but ${missing().join(', ')} are still missing`,
      };
  }
  const version = execFileSync('slurmctld', ['-V'], { encoding: 'utf8' }).trim();
  return { ok: true, installed, version };
}

async function freePort() {
  const s = createServer();
  await new Promise((r) => s.listen(0, '127.0.0.1', r));
  const { port } = s.address();
  await new Promise((r) => s.close(r));
  return port;
}

async function waitFor(what, ok, ms, logs) {
  const deadline = Date.now() + ms;
  while (!(await ok())) {
    if (Date.now() > deadline) throw new Error(`slurm: timed out waiting for ${what}; see ${logs}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/**
 * Starts a one-node Slurm cluster with its state, logs and sockets under `dir` (munge with its own key
 * and socket; slurmctld and slurmd on free ports; jobcomp/filetxt so `sacct -c` reports finished jobs
 * without a database). Returns { env, conf, node, stop() }: pass `env` (SLURM_CONF) to sbatch and friends.
 */
export async function startSlurm(dir) {
  const node = hostname().split('.')[0];
  const d = (...p) => join(dir, ...p);
  for (const sub of ['munge', 'state', 'spool', 'log']) await mkdir(d(sub), { recursive: true });
  await chmod(d('munge'), 0o700);
  await writeFile(d('munge', 'munge.key'), randomBytes(1024), { mode: 0o400 });
  const procs = [];
  const start = (cmd, args, name) => {
    const p = spawn(cmd, args, { stdio: ['ignore', 'ignore', 'ignore'] });
    p.name = name;
    procs.push(p);
    return p;
  };
  const socket = d('munge', 'munge.sock');
  // --force: munged refuses to run as root, or with a key in a world-traversable /tmp path, unless told.
  start(
    'munged',
    [
      '-F',
      '--force',
      `--key-file=${d('munge', 'munge.key')}`,
      `--socket=${socket}`,
      `--pid-file=${d('munge', 'munged.pid')}`,
      `--log-file=${d('log', 'munged.log')}`,
      `--seed-file=${d('munge', 'seed')}`,
    ],
    'munged',
  );
  await waitFor('munged', () => existsSync(socket), 15_000, d('log', 'munged.log'));
  const [ctld, slurmd] = [await freePort(), await freePort()];
  const conf = d('slurm.conf');
  await writeFile(
    conf,
    [
      'ClusterName=lathe',
      `SlurmctldHost=${node}`,
      `SlurmctldPort=${ctld}`,
      `SlurmdPort=${slurmd}`,
      'SlurmUser=root',
      'SlurmdUser=root',
      'AuthType=auth/munge',
      `AuthInfo=socket=${socket}`,
      'CredType=cred/munge',
      `StateSaveLocation=${d('state')}`,
      `SlurmdSpoolDir=${d('spool')}`,
      `SlurmctldPidFile=${d('slurmctld.pid')}`,
      `SlurmdPidFile=${d('slurmd.pid')}`,
      `SlurmctldLogFile=${d('log', 'slurmctld.log')}`,
      `SlurmdLogFile=${d('log', 'slurmd.log')}`,
      // No cgroups in a container: track processes by parent pid, no task binding.
      'ProctrackType=proctrack/linuxproc',
      'TaskPlugin=task/none',
      'JobAcctGatherType=jobacct_gather/none',
      'AccountingStorageType=accounting_storage/none',
      'JobCompType=jobcomp/filetxt',
      `JobCompLoc=${d('jobcomp.txt')}`,
      'SchedulerType=sched/builtin',
      'SelectType=select/cons_tres',
      'SelectTypeParameters=CR_CPU',
      'MpiDefault=none',
      'ReturnToService=2',
      'MinJobAge=600',
      'KillWait=10',
      `NodeName=${node} CPUs=${cpus().length} State=UNKNOWN`,
      'PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP',
      '',
    ].join('\n'),
  );
  const env = { ...process.env, SLURM_CONF: conf };
  start('slurmctld', ['-D', '-c', '-f', conf], 'slurmctld');
  start('slurmd', ['-D', '-f', conf], 'slurmd');
  const stop = async () => {
    // Jobs first: a job step (slurmstepd and its task) outlives slurmd, so cancel every job and wait.
    if (procs.every((p) => p.exitCode === null)) {
      const ids =
        spawnSync('squeue', ['-h', '-o', '%i'], { env, encoding: 'utf8' }).stdout?.trim().split('\n').filter(Boolean) ??
        [];
      if (ids.length) {
        spawnSync('scancel', ids, { env });
        await waitFor(
          'cancelled jobs to end',
          () => !spawnSync('squeue', ['-h', '-o', '%i'], { env, encoding: 'utf8' }).stdout?.trim(),
          20_000,
          d('log'),
        ).catch(() => {});
      }
    }
    for (const p of procs.reverse()) {
      if (p.exitCode !== null || p.signalCode) continue;
      const gone = new Promise((r) => p.once('exit', r));
      p.kill('SIGTERM');
      const t = setTimeout(() => p.kill('SIGKILL'), 5000);
      await gone;
      clearTimeout(t);
    }
  };
  try {
    await waitFor(
      'the node to be idle',
      () => {
        for (const p of procs)
          if (p.exitCode !== null) throw new Error(`slurm: ${p.name} exited ${p.exitCode}; see ${d('log')}`);
        const r = spawnSync('sinfo', ['-h', '-o', '%T'], { env, encoding: 'utf8' });
        return r.status === 0 && /^idle/m.test(r.stdout);
      },
      30_000,
      d('log'),
    );
  } catch (e) {
    await stop();
    throw e;
  }
  return { env, conf, node, dir, stop };
}
