#!/usr/bin/env node
// Benchmark: execute_request round trip of a trivial cell (p50 and p95 after warm-up), the lathe
// kernel against ipykernel in the same run. `node kernel/bench.mjs [--n 200] [--warmup 20]` prints a
// table, then the cases as JSON on the last line; `benchKernel()` returns them for bench/run.mjs.
import { spawnSync } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const kernelDir = dirname(fileURLToPath(import.meta.url));
const root = join(kernelDir, '..');

/** Measures both kernels; returns bench cases in the `npm run bench` shape ({ name, ours, reference, unit, ratio }). */
export function benchKernel({ n = 200, warmup = 20 } = {}) {
  // Jupyter's and IPython's files go to a scratch folder, not the user's home.
  const scratch = join(tmpdir(), 'lathe-jupyter');
  for (const d of ['runtime', 'data', 'config', 'ipython']) mkdirSync(join(scratch, d), { recursive: true });
  const env = {
    ...process.env,
    JUPYTER_PATH: join(root, '.venv', 'share', 'jupyter'),
    JUPYTER_RUNTIME_DIR: join(scratch, 'runtime'),
    JUPYTER_DATA_DIR: join(scratch, 'data'),
    JUPYTER_CONFIG_DIR: join(scratch, 'config'),
    IPYTHONDIR: join(scratch, 'ipython'),
    JUPYTER_PLATFORM_DIRS: '1',
  };
  const py = join(root, '.venv', 'bin', 'python');
  const r = spawnSync(py, [join(kernelDir, 'bench_latency.py'), String(n), String(warmup), 'lathe=1 + 1', 'python3=1 + 1'], { env, encoding: 'utf8', cwd: root });
  if (r.status !== 0) throw new Error(`kernel benchmark failed (exit ${r.status}): ${r.stderr}`);
  const res = JSON.parse(r.stdout.trim().split('\n').at(-1));
  const ours = res.lathe;
  const ref = res.python3;
  // bench/run.mjs's convention: ratio is higher-is-better, so for a latency it is reference / ours.
  const cases = ['p50', 'p95'].map((q) => ({
    name: `kernel-execute-${q}`,
    ours: ours[`${q}_ms`],
    reference: ref[`${q}_ms`],
    unit: 'ms',
    ratio: Math.round((ref[`${q}_ms`] / ours[`${q}_ms`]) * 1000) / 1000,
    note: `execute_request round trip of a trivial cell, ${q} of ${n} after ${warmup} warm-up requests; reference ipykernel`,
  }));
  return { cases, detail: res };
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const arg = (k, d) => {
    const i = process.argv.indexOf(k);
    return i > 0 ? Number(process.argv[i + 1]) : d;
  };
  const { cases, detail } = benchKernel({ n: arg('--n', 200), warmup: arg('--warmup', 20) });
  const rows = [['case', 'lathe', 'ipykernel', 'ratio (ipykernel/lathe)'], ...cases.map((c) => [c.name, `${c.ours} ms`, `${c.reference} ms`, String(c.ratio)])];
  const w = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)));
  for (const r of rows) console.log(r.map((c, i) => (i ? c.padStart(w[i]) : c.padEnd(w[i]))).join('  '));
  console.log(`(n=${detail.lathe.n} after ${arg('--warmup', 20)} warm-up requests; kernel start: lathe ${detail.lathe.startup_s} s, ipykernel ${detail.python3.startup_s} s)`);
  console.log(JSON.stringify({ cases, detail }));
}
