// Runs the Python side of the kernel tests (jupyter_client, jupyter_kernel_test, nbclient) in .venv.
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { KERNEL_DIR, REPO_ROOT } from '../src/kernel.js';

/** The venv's Python, where setup installed the pinned Jupyter packages and the `lathe` spec. */
export const PYTHON = join(REPO_ROOT, '.venv', 'bin', 'python');
/** Folder of the Python test scripts. */
export const TEST_DIR = join(KERNEL_DIR, 'test');

/** Throws a clear message when setup has not run. */
export function requireSetup(): void {
  const spec = join(REPO_ROOT, '.venv', 'share', 'jupyter', 'kernels', 'lathe', 'kernel.json');
  if (!existsSync(PYTHON) || !existsSync(spec) || !existsSync(join(KERNEL_DIR, 'dist', 'main.js'))) {
    throw new Error(
      'the lathe kernel is not installed: run `npm run setup` (it builds kernel/ and installs the spec into .venv)',
    );
  }
}

/** Environment for Jupyter inside the project: the venv's kernels first, runtime files in a temp dir. */
export function jupyterEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const scratch = join(tmpdir(), 'lathe-jupyter');
  for (const d of ['runtime', 'data', 'config']) mkdirSync(join(scratch, d), { recursive: true });
  return {
    ...process.env,
    JUPYTER_PATH: join(REPO_ROOT, '.venv', 'share', 'jupyter'),
    // Nothing read from or written to the user's own Jupyter folders.
    JUPYTER_RUNTIME_DIR: join(scratch, 'runtime'),
    JUPYTER_DATA_DIR: join(scratch, 'data'),
    JUPYTER_CONFIG_DIR: join(scratch, 'config'),
    JUPYTER_PLATFORM_DIRS: '1',
    PYTHONDONTWRITEBYTECODE: '1',
    LATHE_BACKEND: 'wasm',
    ...extra,
  };
}

/** A fresh temp folder for runs. */
export function tempRuns(prefix: string): string {
  return mkdtempSync(join(tmpdir(), `lathe-${prefix}-`));
}

/** Runs a Python test script; resolves with its exit code and output. */
export function python(
  args: string[],
  env: NodeJS.ProcessEnv,
  timeoutMs = 240_000,
): Promise<{ code: number | null; out: string }> {
  return new Promise((resolve) => {
    const p = spawn(PYTHON, args, { cwd: TEST_DIR, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    p.stdout.on('data', (d) => (out += d));
    p.stderr.on('data', (d) => (out += d));
    const timer = setTimeout(() => p.kill('SIGKILL'), timeoutMs);
    p.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, out });
    });
  });
}

/** Parses unittest's summary: tests run, skipped, and whether it ended OK. */
export function unittestSummary(out: string): { ran: number; skipped: number; ok: boolean } {
  const ran = Number(/Ran (\d+) tests?/.exec(out)?.[1] ?? 0);
  const skipped = Number(/skipped=(\d+)/.exec(out)?.[1] ?? 0);
  return { ran, skipped, ok: /\nOK\b/.test(out) };
}
