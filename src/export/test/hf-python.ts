/**
 * Test-side bridge to `check_hf.py` in the project's .venv (transformers + torch). Used by the
 * export tests only; a missing venv or package is a failure that says to run `npm run setup`.
 */
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const repoRoot = fileURLToPath(new URL('../../../', import.meta.url));
/** The project venv's python (LATHE_TEST_PYTHON overrides it, e.g. to check the failure message). */
export const PYTHON = process.env.LATHE_TEST_PYTHON ?? join(repoRoot, '.venv', 'bin', 'python');
const SCRIPT = fileURLToPath(new URL('../check_hf.py', import.meta.url));
const SETUP_HINT = 'run `npm run setup` to create .venv with the pinned transformers and torch (requirements.txt)';

/** One job for check_hf.py (see its docstring). */
export type HfJob = Record<string, unknown> & { op: 'check' | 'make' | 'peft' };

/** Result of a `peft` job. */
export interface PeftCheck {
  class: string;
  base: number[][];
  adapted: number[][];
  modules: string[];
  complaints: string[];
}

/** Result of a `check` job. */
export interface HfCheck {
  class: string;
  logits: number[][];
  greedy: number[];
  eos: number | number[] | null;
  texts: number[][];
  chat?: string;
  /** The loaded config (with `config: true`). */
  config?: Record<string, unknown>;
}

/** Runs jobs through check_hf.py; throws with the setup hint when the venv or a package is missing. */
export function runHf(jobs: HfJob[]): unknown[] {
  if (!existsSync(PYTHON)) throw new Error(`Python venv not found at ${PYTHON}; ${SETUP_HINT}`);
  const r = spawnSync(PYTHON, [SCRIPT], {
    input: JSON.stringify({ jobs }),
    encoding: 'utf8',
    maxBuffer: 1 << 30,
    timeout: 300_000,
    env: {
      ...process.env,
      HF_HUB_OFFLINE: '1',
      TRANSFORMERS_OFFLINE: '1',
      TOKENIZERS_PARALLELISM: 'false',
      OMP_NUM_THREADS: '1',
    },
  });
  if (r.error) throw new Error(`could not run ${PYTHON} (${r.error.message}); ${SETUP_HINT}`);
  if (r.status !== 0) {
    const hint = /No module named|ModuleNotFoundError|ImportError/.test(r.stderr) ? `; ${SETUP_HINT}` : '';
    throw new Error(`check_hf.py exited with ${r.status}${hint}:\n${r.stderr.slice(-4000)}`);
  }
  return JSON.parse(r.stdout) as unknown[];
}

/** Max |a - b| over two equally shaped [rows][cols] tables. */
export function maxAbsDiff(a: ArrayLike<ArrayLike<number>>, b: ArrayLike<ArrayLike<number>>, cols?: number): number {
  if (a.length !== b.length) throw new Error(`row counts differ: ${a.length} vs ${b.length}`);
  let m = 0;
  for (let i = 0; i < a.length; i++) {
    const n = cols ?? a[i]!.length;
    if (cols === undefined && a[i]!.length !== b[i]!.length)
      throw new Error(`row ${i}: lengths differ: ${a[i]!.length} vs ${b[i]!.length}`);
    for (let j = 0; j < n; j++) m = Math.max(m, Math.abs(a[i]![j]! - b[i]![j]!));
  }
  return m;
}
