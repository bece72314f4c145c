import { basename } from 'node:path';
import { formatTable } from '../data/table.js';
import { RunDir } from '../runs/rundir.js';
import { applyGates, latestMetrics, type EvalRecord, type GateReport } from './gates.js';

/** One run in a comparison. */
export interface ComparisonRow {
  /** The run id (directory name). */
  run: string;
  /** The run directory (absolute). */
  dir: string;
  stage: string;
  /** From summary.json; `running` when there is none yet. */
  status: string;
  step: number;
  /** Final training loss. */
  loss?: number;
  /** Latest held-out loss. */
  eval_loss?: number;
  /** Latest suite scores by `<suite>/<metric>` (accuracy, perplexity, loss), from training or lathe eval, and `lm-eval/<task>/<metric>`. */
  scores: Record<string, number>;
  /** Gate verdict: from summary.json, else recomputed from the recipe's gates; undefined without gates. */
  gates?: GateReport['status'];
}

/** Reads runs for a comparison: final loss, eval_loss, every suite score and the gate status. */
export async function compareRuns(dirs: readonly string[]): Promise<ComparisonRow[]> {
  const rows: ComparisonRow[] = [];
  for (const dir of dirs) {
    const rd = RunDir.open(dir);
    const lock = rd.readLock();
    const summary = await rd.readSummary();
    const metrics = await rd.readMetrics();
    const evals = summary?.evals as Record<string, EvalRecord> | undefined;
    const { values } = latestMetrics(metrics, evals);
    const scores: Record<string, number> = {};
    for (const [k, v] of Object.entries(values)) {
      if (k.startsWith('eval/')) scores[k.slice(5)] = v;
      // lm-eval tasks keep their prefix; their standard errors stay in summary.json.
      else if (k.startsWith('lm-eval/') && !k.endsWith('_stderr')) scores[k] = v;
    }
    const recipeGates = (lock.recipe.eval as { gates?: string[] }).gates ?? [];
    const stored = summary?.gates as GateReport | undefined;
    const gates = stored?.status ?? (recipeGates.length ? applyGates(recipeGates, values).status : undefined);
    const lastLoss = [...metrics].reverse().find((m) => typeof m.loss === 'number')?.loss;
    rows.push({
      run: basename(rd.path),
      dir: rd.path,
      stage: lock.recipe.stage,
      status: summary?.status ?? 'running',
      step: summary?.step ?? metrics.at(-1)?.step ?? 0,
      loss: summary?.loss ?? lastLoss,
      eval_loss: values.eval_loss,
      scores,
      gates,
    });
  }
  return rows;
}

function fixed(v: number | undefined, digits: number): string {
  return v === undefined ? '-' : Number.isFinite(v) ? v.toFixed(digits) : String(v);
}

/** The comparison as a text table: one row per run, one column per suite score, then gates. */
export function formatComparison(rows: readonly ComparisonRow[]): string {
  const scoreKeys = [...new Set(rows.flatMap((r) => Object.keys(r.scores)))].sort();
  const headers = ['run', 'stage', 'status', 'step', 'loss', 'eval_loss', ...scoreKeys, 'gates'];
  const body = rows.map((r) => [
    r.run,
    r.stage,
    r.status,
    r.step,
    fixed(r.loss, 4),
    fixed(r.eval_loss, 4),
    ...scoreKeys.map((k) => fixed(r.scores[k], k.endsWith('/accuracy') ? 3 : 4)),
    r.gates ?? '-',
  ]);
  const align = headers.map((h, i) => (i >= 3 && i < headers.length - 1 ? 'right' : 'left') as 'left' | 'right');
  return formatTable(headers, body, { align });
}
