/**
 * `lathe eval <run> --lm-eval <tasks>`: lm-evaluation-harness (the pinned `lm-eval` in the
 * project's .venv) on the run's HF export. The checkpoint is exported to a temporary folder, the
 * harness runs its `hf` model on it (CPU, float32, <|bos|> in front as in training) through
 * lm_eval_run.py, and each task's metrics land in summary.json under `evals["lm-eval/<task>"]`
 * with keys `lm-eval/<task>/<metric>`, so a recipe gate can say `lm-eval/<task>/acc >= 0.5`.
 *
 * There is no model hub here: tasks are local lm-eval YAML files (with their JSONL data beside
 * them; examples/lm-eval/ has two on Tally). A bare name goes to lm-eval's own task index, whose
 * tasks need their datasets downloadable.
 */
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { enginePython, packageRoot } from '../engine/torch/process.js';
import { LatheError } from '../errors.js';
import { exportHf } from '../export/hf.js';
import { RunDir } from '../runs/rundir.js';
import type { EvalRecord, GateReport } from './gates.js';
import { recordEvalRecords } from './standalone.js';

/** Options for {@link runLmEval}. */
export interface LmEvalOptions {
  /** Documents per task (lm-eval's --limit): the first N. */
  limit?: number;
  /** Checkpoint step; default the latest. */
  step?: number;
  /** Requests per forward pass (default 8). */
  batchSize?: number;
  /** Write the results into summary.json (default true). */
  record?: boolean;
  /** Lines lm-eval writes to stderr (progress, warnings). */
  onLog?: (line: string) => void;
}

/** One task's outcome. */
export interface LmEvalTask {
  /** lm-eval's task name. */
  task: string;
  /** The task's YAML file, or null for a task from lm-eval's index. */
  file: string | null;
  outputType: string | null;
  /** Documents scored, of those in the task. */
  n: number;
  of: number;
  /** Metrics as recorded: `lm-eval/<task>/<metric>` (a filter other than `none` adds `/<filter>`). */
  metrics: Record<string, number>;
  /** Per-document records lm-eval logged: the target, the model's responses, and the per-sample metrics. */
  samples: {
    doc_id: number;
    target: unknown;
    resps: unknown;
    filtered_resps: unknown;
    metrics: Record<string, unknown>;
  }[];
}

/** What {@link runLmEval} measured and recorded. */
export interface LmEvalResult {
  run: string;
  step: number;
  tasks: LmEvalTask[];
  /** The lm-eval version that ran. */
  lmEval: string | null;
  seconds: number;
  gates?: GateReport;
  recorded: boolean;
}

/** The summary.json `evals` key of a task. */
export const lmEvalKey = (task: string) => `lm-eval/${task}`;

/** Splits `--lm-eval` values (comma-separated, repeatable) into task files and task names. */
export function parseLmEvalTasks(values: readonly string[]): ({ yaml: string } | { name: string })[] {
  const items = values.flatMap((v) => v.split(',')).map((v) => v.trim());
  if (!items.length || items.some((t) => !t))
    throw new LatheError('--lm-eval: give task YAML files or task names, comma-separated (an empty entry was given)');
  return items.map((t) => {
    if (!/\.ya?ml$/i.test(t)) return { name: t };
    if (!existsSync(t)) throw new LatheError(`--lm-eval ${t}: no such task file`);
    return { yaml: resolve(t) };
  });
}

/** Runs lm-evaluation-harness tasks on a run's checkpoint (see the module comment). */
export async function runLmEval(
  runDir: string,
  taskArgs: readonly string[],
  opts: LmEvalOptions = {},
): Promise<LmEvalResult> {
  const rd = RunDir.open(runDir);
  const tasks = parseLmEvalTasks(taskArgs);
  const t0 = performance.now();
  const tmp = await mkdtemp(join(tmpdir(), 'lathe-lm-eval-'));
  try {
    const hf = join(tmp, 'hf');
    const exported = await exportHf(rd.path, hf, { step: opts.step });
    const out = await harness(
      {
        model: hf,
        tasks,
        limit: opts.limit ?? null,
        batch_size: opts.batchSize ?? 8,
        device: 'cpu',
        samples: true,
      },
      tmp,
      opts.onLog,
    );
    const seconds = (performance.now() - t0) / 1000;
    const results: LmEvalTask[] = Object.entries(out.tasks).map(([task, r]) => ({
      task,
      file: r.file,
      outputType: r.output_type,
      n: r.n ?? r.samples.length,
      of: r.of ?? r.samples.length,
      metrics: metricKeys(task, r.metrics),
      samples: r.samples,
    }));
    const step = exported.step;
    const result: LmEvalResult = { run: rd.path, step, tasks: results, lmEval: out.lm_eval, seconds, recorded: false };
    if (opts.record === false) return result;
    const records: Record<string, EvalRecord> = {};
    for (const t of results) {
      const rec: EvalRecord = {
        step,
        time: new Date().toISOString(),
        file: t.file ?? `lm-eval:${t.task}`,
        scorer: 'lm-eval',
        n: t.n,
        errors: { threw: 0, nan: 0, timeout: 0, invalid: 0 },
        seconds: Math.round((seconds / results.length) * 1000) / 1000,
        metrics: t.metrics,
      };
      const main = t.metrics[`${lmEvalKey(t.task)}/acc`] ?? t.metrics[`${lmEvalKey(t.task)}/exact_match`];
      if (main !== undefined) rec.accuracy = main;
      records[lmEvalKey(t.task)] = rec;
    }
    const message = results.map((t) => `${lmEvalKey(t.task)} ${describeMetrics(t)}`).join('; ');
    const { recorded, gates } = await recordEvalRecords(rd.path, records, step, message);
    return { ...result, recorded, gates };
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
}

/** The metrics of a task, as one short line. */
export function describeMetrics(t: LmEvalTask): string {
  const prefix = `${lmEvalKey(t.task)}/`;
  return Object.entries(t.metrics)
    .filter(([k]) => !k.includes('_stderr'))
    .map(([k, v]) => `${k.slice(prefix.length)} ${v.toFixed(4)}`)
    .join(', ');
}

// "acc,none" -> lm-eval/<task>/acc; "exact_match,strict-match" -> lm-eval/<task>/exact_match/strict-match.
function metricKeys(task: string, metrics: Record<string, number>): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [k, v] of Object.entries(metrics)) {
    const [metric, filter] = k.split(',') as [string, string | undefined];
    out[`${lmEvalKey(task)}/${metric}${filter && filter !== 'none' ? `/${filter}` : ''}`] = v;
  }
  return out;
}

interface HarnessOutput {
  tasks: Record<
    string,
    {
      metrics: Record<string, number>;
      n: number | null;
      of: number | null;
      file: string | null;
      output_type: string | null;
      samples: LmEvalTask['samples'];
    }
  >;
  lm_eval: string | null;
}

const SETUP_HINT = 'run `npm run setup` to install the pinned lm-eval into .venv (requirements.txt)';

/** Runs lm_eval_run.py with one JSON request; its JSON answer, or a LatheError with its message. */
function harness(request: unknown, tmp: string, onLog?: (line: string) => void): Promise<HarnessOutput> {
  const python = enginePython();
  const script = join(packageRoot(), 'src', 'eval', 'lm_eval_run.py');
  return new Promise((resolvePromise, reject) => {
    const child = spawn(python, [script], {
      stdio: ['pipe', 'pipe', 'pipe'],
      env: {
        ...process.env,
        // No hub: everything is local; the datasets cache stays in the temporary folder.
        HF_HUB_OFFLINE: '1',
        HF_DATASETS_OFFLINE: '1',
        TRANSFORMERS_OFFLINE: '1',
        HF_DATASETS_CACHE: join(tmp, 'datasets'),
        HF_EVALUATE_OFFLINE: '1',
        TOKENIZERS_PARALLELISM: 'false',
      },
    });
    let stdout = '';
    let stderr = '';
    let partial = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => {
      stderr = (stderr + d).slice(-20_000);
      if (!onLog) return;
      const lines = (partial + d).split(/\r?\n|\r/);
      partial = lines.pop()!;
      for (const l of lines) if (l.trim()) onLog(l);
    });
    child.on('error', (e) => reject(new LatheError(`lm-eval: cannot run ${python} (${e.message}); ${SETUP_HINT}`)));
    child.on('close', (code) => {
      let parsed: (HarnessOutput & { error?: undefined }) | { error: string } | undefined;
      try {
        parsed = JSON.parse(stdout) as typeof parsed;
      } catch {
        parsed = undefined;
      }
      if (parsed && 'error' in parsed && parsed.error !== undefined) return reject(new LatheError(parsed.error));
      if (code === 0 && parsed) return resolvePromise(parsed as HarnessOutput);
      const hint = /No module named|ModuleNotFoundError/.test(stderr) ? `; ${SETUP_HINT}` : '';
      reject(new LatheError(`lm-eval exited with ${code}${hint}:\n${stderr.split('\n').slice(-15).join('\n')}`));
    });
    child.stdin.end(JSON.stringify(request));
  });
}
