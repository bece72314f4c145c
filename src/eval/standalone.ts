import { LatheError } from '../errors.js';
import { loadModel } from '../runs/index.js';
import { RunDir, type RunSummary } from '../runs/rundir.js';
import { summarizeGates, type EvalRecord, type GateReport } from './gates.js';
import { describeResult } from './suite.js';
import { parseSuiteConfig, type SuiteConfig, type SuiteInput } from '../recipe/eval-schema.js';
import { loadSuite, runSuite, type Suite, type SuiteResult } from './suite.js';

/** A suite to evaluate: a config (paths relative to opts.baseDir), or a config with its own base directory. */
export type SuiteSource = SuiteInput | SuiteConfig | { config: SuiteInput | SuiteConfig; baseDir: string };

/** What {@link evaluateRun} measured and recorded. */
export interface RunEvaluation {
  /** The run directory (absolute). */
  run: string;
  /** The checkpoint step evaluated. */
  step: number;
  results: SuiteResult[];
  /** The recipe's gates recomputed with these results, when it has gates. */
  gates?: GateReport;
  /** True when summary.json was updated (a run that has not written one yet is left alone). */
  recorded: boolean;
}

/** The suites a run's recipe declares (eval.suites), with their base directory. */
export function recipeSuites(dir: string): { suites: SuiteInput[]; gates: string[]; baseDir: string } {
  const lock = RunDir.open(dir).readLock();
  const ev = lock.recipe.eval as { suites?: SuiteInput[]; gates?: string[] };
  return { suites: ev.suites ?? [], gates: ev.gates ?? [], baseDir: lock.baseDir };
}

/** The summary.json entry of one suite result. */
export function evalRecord(r: SuiteResult, step: number): EvalRecord {
  const rec: EvalRecord = {
    step,
    time: new Date().toISOString(),
    file: r.file,
    scorer: r.scorer,
    n: r.n,
    errors: r.errors,
    seconds: Math.round(r.seconds * 1000) / 1000,
    metrics: r.metrics,
  };
  if (r.accuracy !== undefined) rec.accuracy = r.accuracy;
  if (r.perplexity !== undefined) rec.perplexity = r.perplexity;
  if (r.loss !== undefined) rec.loss = r.loss;
  if (r.truncated) rec.truncated = r.truncated;
  return rec;
}

/**
 * Adds results to a run's summary.json under `evals.<suite>` (replacing an earlier entry of that
 * suite) and recomputes `gates` when the recipe has any. Returns the new gates report.
 */
export async function recordEvals(
  dir: string,
  results: readonly SuiteResult[],
  step: number,
): Promise<{ recorded: boolean; gates?: GateReport }> {
  const records: Record<string, EvalRecord> = {};
  for (const r of results) records[r.name] = evalRecord(r, step);
  return recordEvalRecords(dir, records, step, results.map(describeResult).join('; '));
}

/**
 * Adds named records to a run's summary.json `evals` (replacing earlier ones of the same name),
 * recomputes `gates`, and logs an eval event with `message`. Lathe's suites and lm-eval tasks both
 * land here, so gates can name either.
 */
export async function recordEvalRecords(
  dir: string,
  records: Record<string, EvalRecord>,
  step: number,
  message: string,
): Promise<{ recorded: boolean; gates?: GateReport }> {
  const rd = RunDir.open(dir);
  const summary = await rd.readSummary();
  const evals: Record<string, EvalRecord> = {
    ...((summary?.evals as Record<string, EvalRecord> | undefined) ?? {}),
    ...records,
  };
  const gates = summarizeGates(recipeSuites(dir).gates, await rd.readMetrics(), evals);
  if (!summary) return { recorded: false, gates };
  const next: RunSummary = { ...summary, evals };
  if (gates) next.gates = gates;
  await rd.writeSummary(next);
  rd.appendEvent({ type: 'eval', step, message, suites: Object.keys(records) });
  return { recorded: true, gates };
}

/**
 * Evaluates a run's latest checkpoint (or `step`) on suites, standalone: loads the suites first (so
 * bad input stops before the model loads), runs them, and records them in summary.json.
 */
export async function evaluateRun(
  dir: string,
  suites: readonly SuiteSource[],
  opts: {
    baseDir?: string;
    step?: number;
    record?: boolean;
    onExample?: (suite: string, done: number, total: number) => void;
  } = {},
): Promise<RunEvaluation> {
  const rd = RunDir.open(dir);
  const baseDir = opts.baseDir ?? process.cwd();
  const loaded: Suite[] = [];
  try {
    const names = new Set<string>();
    for (const [i, src] of suites.entries()) {
      const [input, base] = 'config' in src ? [src.config, src.baseDir] : [src, baseDir];
      const config = parseSuiteConfig(input, `suites[${i}]`);
      if (names.has(config.name))
        throw new LatheError(`suites[${i}].name: "${config.name}" is used twice; give each suite its own name`);
      names.add(config.name);
      loaded.push(await loadSuite(config, base));
    }
    const { model, tokenizer, step } = await loadModel(rd.path, { step: opts.step });
    const results: SuiteResult[] = [];
    try {
      for (const s of loaded)
        results.push(
          await runSuite(model, tokenizer, s, { onExample: (d, t) => opts.onExample?.(s.config.name, d, t) }),
        );
    } finally {
      await model.dispose();
    }
    if (opts.record === false) return { run: rd.path, step, results, recorded: false };
    const { recorded, gates } = await recordEvals(rd.path, results, step);
    return { run: rd.path, step, results, gates, recorded };
  } finally {
    await Promise.all(loaded.map((s) => s.close()));
  }
}
