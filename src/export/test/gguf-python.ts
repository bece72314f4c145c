/**
 * Test-side bridge to `check_gguf.py` in the project's .venv: the `gguf` package's reader and
 * llama.cpp through llama-cpp-python (compiled by `node scripts/setup.mjs --tests`). A missing
 * venv or package is a failure that says how to install it.
 */
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { PYTHON } from './hf-python.js';

const SCRIPT = fileURLToPath(new URL('../check_gguf.py', import.meta.url));
const SETUP_HINT =
  'run `node scripts/setup.mjs --tests` (npm test does) to install gguf and build llama-cpp-python into .venv';

/** What a `read` job returns. */
export interface GgufRead {
  meta: Record<string, string | number | boolean | { array: number }>;
  tensors: { name: string; type: string; ne: number[] }[];
  values: Record<string, number[]>;
  alignment: number;
}

/** What a `llama` job returns. */
export interface LlamaRun {
  n_vocab: number;
  metadata: Record<string, string>;
  bos: number;
  eos: number;
  texts: number[][];
  completions: string[];
  windows: { nll: number; tokens: number }[];
  chat?: string;
}

/** Runs jobs through check_gguf.py (see its docstring) in one Python process. */
export function runGguf(jobs: Record<string, unknown>[]): unknown[] {
  if (!existsSync(PYTHON)) throw new Error(`Python venv not found at ${PYTHON}; ${SETUP_HINT}`);
  const r = spawnSync(PYTHON, [SCRIPT], {
    input: JSON.stringify({ jobs }),
    encoding: 'utf8',
    maxBuffer: 1 << 30,
    timeout: 300_000,
    env: { ...process.env, OMP_NUM_THREADS: '1' },
  });
  if (r.error) throw new Error(`could not run ${PYTHON} (${r.error.message}); ${SETUP_HINT}`);
  if (r.status !== 0) {
    const hint = /No module named|ModuleNotFoundError|ImportError/.test(r.stderr) ? `; ${SETUP_HINT}` : '';
    throw new Error(`check_gguf.py exited with ${r.status}${hint}:\n${r.stderr.slice(-4000)}`);
  }
  return JSON.parse(r.stdout) as unknown[];
}
