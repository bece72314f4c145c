// oneMKL's VML picks a function's kernel on its first call; first calls racing on two threads can
// give one thread's chunk a low-accuracy kernel (pytorch/pytorch#188792), which broke bit-exact resume
// across engine processes. The engine settles VML before its first parallel op (lathe_torch/vml.py).
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { enginePython, packageRoot } from './process.js';

const SCRIPT = join(packageRoot(), 'src', 'engine', 'torch', 'test', 'first_sqrt.py');

function firstSqrt(settle: boolean): Promise<{ threads: number; halves: number[] }> {
  return new Promise((resolve, reject) => {
    const child = spawn(enginePython(), [SCRIPT, ...(settle ? ['--settle'] : [])], {
      env: { ...process.env, PYTHONPATH: join(packageRoot(), 'src', 'engine', 'torch'), OMP_NUM_THREADS: '2' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
    child.once('error', reject);
    child.once('close', (code) => (code === 0 ? resolve(JSON.parse(out)) : reject(new Error(`exit ${code}: ${err}`))));
  });
}

/**
 * Fresh processes two at a time beside a busy loop (two threads each on two cores: the oversubscription
 * that widens the race; without the spinner it bit 0 of 12 processes here, with it about 1 in 10).
 */
async function storm(settle: boolean, pairs: number) {
  // Spins for at most two minutes, so a test killed mid-storm leaves no busy process behind.
  const spinner = spawn(process.execPath, ['-e', 'const end = Date.now() + 120_000; while (Date.now() < end);'], {
    stdio: 'ignore',
  });
  try {
    const all = [];
    for (let i = 0; i < pairs; i++) all.push(...(await Promise.all([firstSqrt(settle), firstSqrt(settle)])));
    return all;
  } finally {
    spinner.kill('SIGKILL');
  }
}

describe('VML settling in the torch engine', () => {
  it('a fresh process’s first parallel sqrt is correctly rounded in every thread’s chunk once settled', async () => {
    const settled = await storm(true, 10);
    expect(settled.every((r) => r.threads === 2)).toBe(true);
    // float32 sqrt is correctly rounded: at most half an ulp (6e-8); the racy kernel is ~3e-4 off.
    for (const r of settled) for (const h of r.halves) expect(h).toBeLessThan(1e-7);
    // How often the race bites unsettled on this machine (printed: it is a race, so not asserted).
    const raw = await storm(false, 4);
    const bad = raw.filter((r) => r.halves.some((h) => h >= 1e-7)).length;
    console.log(`unsettled: ${bad} of ${raw.length} fresh processes had a chunk off (settled: 0 of ${settled.length})`);
  }, 240_000);
});
