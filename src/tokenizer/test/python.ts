/** Running the project's Python (.venv, with HF `tokenizers` and `transformers`) from tokenizer tests. */
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The repository root. */
export const repoRoot = fileURLToPath(new URL('../../../', import.meta.url));
const pythonPath = join(repoRoot, '.venv', 'bin', 'python');
const SETUP_HINT = 'run `npm run setup` to create .venv with tokenizers==0.22.1';

/** Python source that reads the JSON request from stdin into `req`. */
export const READ_INPUT = "import json, sys\nreq = json.loads(sys.stdin.buffer.read().decode('utf-8'))\n";

/** Runs a Python script (source, or a file with `file: true`) with `input` as JSON on stdin; returns its JSON stdout. */
export function runPython(script: string, input: unknown, opts: { file?: boolean } = {}): any {
  if (!existsSync(pythonPath)) throw new Error(`Python venv not found at ${pythonPath}; ${SETUP_HINT}`);
  const args = opts.file ? [script] : ['-c', script];
  const r = spawnSync(pythonPath, args, {
    input: JSON.stringify(input),
    encoding: 'utf8',
    maxBuffer: 1 << 30,
    env: { ...process.env, TOKENIZERS_PARALLELISM: 'false', TRANSFORMERS_VERBOSITY: 'error', HF_HUB_OFFLINE: '1' },
  });
  if (r.error) throw new Error(`could not run ${pythonPath} (${r.error.message}); ${SETUP_HINT}`);
  if (r.status !== 0) {
    const hint = r.stderr.includes('No module named') ? `; ${SETUP_HINT}` : '';
    throw new Error(`python exited with ${r.status}${hint}:\n${r.stderr}`);
  }
  return JSON.parse(r.stdout);
}
