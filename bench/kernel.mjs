// The `kernel-latency` case of `npm run bench`: the execute_request round trip of a trivial cell
// (`1 + 1`), p50 and p95 after warm-up, on the lathe kernel against ipykernel started in the same
// run (kernel/bench.mjs drives both through jupyter_client in the project's .venv).
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { benchKernel } from '../kernel/bench.mjs';

const root = fileURLToPath(new URL('..', import.meta.url));

/**
 * Rows for bench/run.mjs: `kernel-latency` (p50) and `kernel-latency:p95`, in ms, with
 * ratio = ipykernel / lathe (higher is better, as for every row of the table).
 */
export async function kernelLatency({ quick = false } = {}) {
  const spec = join(root, '.venv', 'share', 'jupyter', 'kernels', 'lathe', 'kernel.json');
  if (!existsSync(spec) || !existsSync(join(root, 'kernel', 'dist', 'main.js'))) {
    throw new Error(
      'the lathe kernel is not installed: run `npm run setup` (it builds kernel/ and installs the spec into .venv)',
    );
  }
  const n = quick ? 50 : 200;
  const warmup = quick ? 10 : 20;
  const { cases, detail } = benchKernel({ n, warmup });
  const named = { 'kernel-execute-p50': 'kernel-latency', 'kernel-execute-p95': 'kernel-latency:p95' };
  return cases.map((c) => ({
    ...c,
    name: named[c.name] ?? c.name,
    note: `${c.note} (trivial cell \`1 + 1\`, type-checked); kernel start lathe ${detail.lathe.startup_s} s, ipykernel ${detail.python3.startup_s} s`,
    detail: { lathe: detail.lathe, ipykernel: detail.python3 },
  }));
}
