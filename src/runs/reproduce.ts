import { LatheError } from '../errors.js';
import { type PipelineLock, type RecipeLock } from '../recipe/lock.js';
import { sha256File } from '../hash.js';
import { TIMING_KEYS, type Metric } from './rundir.js';

/** Where two metric streams first differ. */
export interface Divergence {
  step: number;
  key: string;
  expected: unknown;
  actual: unknown;
}

/** Steps the re-run logged that the original metrics lack (lines lost from its metrics.jsonl). */
export function missingSteps(original: Metric[], rerun: Metric[]): number[] {
  const have = new Set(original.map((m) => m.step));
  return [...new Set(rerun.map((m) => m.step))].filter((s) => !have.has(s)).sort((a, b) => a - b);
}

/** Compares metrics to the bit, ignoring timing fields; undefined when identical. */
export function firstDivergence(expected: Metric[], actual: Metric[]): Divergence | undefined {
  const n = Math.max(expected.length, actual.length);
  for (let i = 0; i < n; i++) {
    const a = expected[i];
    const b = actual[i];
    if (!a || !b) return { step: (a ?? b)!.step, key: 'step', expected: a?.step, actual: b?.step };
    const keys = [...new Set([...Object.keys(a), ...Object.keys(b)])].filter((k) => !TIMING_KEYS.has(k)).sort();
    for (const k of keys) {
      if (JSON.stringify(a[k]) !== JSON.stringify(b[k])) return { step: a.step, key: k, expected: a[k], actual: b[k] };
    }
  }
  return undefined;
}

/** Checks that the data files a lock names (a pipeline's: every stage's) still have their recorded hashes. */
export async function verifyLockData(lock: RecipeLock | PipelineLock): Promise<void> {
  const data = 'stages' in lock ? lock.stages.flatMap((s) => s.data) : lock.data;
  for (const src of data) {
    for (const f of src.files) {
      const now = await sha256File(f.path).catch(() => undefined);
      if (!now)
        throw new LatheError(`${f.path}: data file of source ${src.source} is missing; reproduce needs the same data`);
      if (now.sha256 !== f.sha256)
        throw new LatheError(
          `${f.path}: data changed since the run (sha256 ${now.sha256.slice(0, 12)}… ≠ ${f.sha256.slice(0, 12)}…)`,
        );
    }
  }
}
