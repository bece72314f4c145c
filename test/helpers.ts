import { spawnSync } from 'node:child_process';
import { mkdtemp, readFile, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** Repository root. */
export const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');

/** The bundled Tally corpus. */
export const TALLY = join(ROOT, 'examples', 'data', 'tally', 'train.jsonl');

/** A scratch directory. */
export function scratch(prefix = 'lathe-test-'): Promise<string> {
  return mkdtemp(join(tmpdir(), prefix));
}

/** Writes the first n Tally programs to dir/tally.jsonl (a small, real corpus for fast tests). */
export async function tallySlice(dir: string, n: number): Promise<string> {
  const lines = (await readFile(TALLY, 'utf8')).split('\n').filter(Boolean).slice(0, n);
  const path = join(dir, 'tally.jsonl');
  await writeFile(path, lines.join('\n') + '\n');
  return path;
}

/** Runs the built `lathe` CLI (dist/, made by npm run setup). */
export function lathe(
  args: string[],
  opts: { cwd?: string; env?: Record<string, string> } = {},
): { status: number; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [join(ROOT, 'bin', 'lathe.js'), ...args], {
    cwd: opts.cwd ?? ROOT,
    encoding: 'utf8',
    env: { ...process.env, ...opts.env },
    timeout: 600_000,
  });
  return { status: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

/** A tiny, fast pre-training recipe over a data file. */
export function tinyRecipe(dataPath: string, over: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    stage: 'pretrain',
    seed: 3,
    backend: 'cpu',
    data: { sources: [{ path: dataPath }], valFraction: 0.1 },
    tokenizer: { vocabSize: 320 },
    model: { dim: 32, layers: 1, heads: 2, context: 32 },
    train: { steps: 40, batchSize: 4, lr: 0.01, minLr: 0.001, warmupSteps: 5, checkpointEvery: 10 },
    eval: { every: 10, batches: 2 },
    ...over,
  };
}
