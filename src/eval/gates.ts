import type { Metric } from '../runs/rundir.js';
import { parseGate, type Gate, type GateOp } from '../recipe/eval-schema.js';

/** One gate checked against the latest metrics. */
export interface GateResult {
  /** The gate as written. */
  gate: string;
  /** The metrics key it resolved to, when found. */
  metric?: string;
  /** The latest value of that metric, when found. */
  value?: number;
  pass: boolean;
  /** Why it did not pass, when the metric is missing, ambiguous or not a number. */
  reason?: string;
}

/** The verdict of a recipe's gates, as summary.json holds it under `gates`. */
export interface GateReport {
  status: 'release-ready' | 'blocked';
  results: GateResult[];
}

/** Latest values of numeric metrics, with the step each came from. */
export interface LatestMetrics {
  values: Record<string, number>;
  steps: Record<string, number>;
}

/** What one standalone evaluation recorded in summary.json under `evals.<suite>`. */
export interface EvalRecord {
  step: number;
  time: string;
  file: string;
  scorer: string;
  n: number;
  accuracy?: number;
  perplexity?: number;
  loss?: number;
  errors: { threw: number; nan: number; timeout: number; invalid: number; crashed?: number };
  /** Prompts cut from the left to fit the context. */
  truncated?: number;
  seconds: number;
  /** The same keys training writes to metrics.jsonl, e.g. eval/tasks/accuracy. */
  metrics: Record<string, number>;
}

/**
 * The latest value of every numeric key in metrics.jsonl, overlaid with standalone evaluations
 * from summary.json (`evals`) where those are at the same step or later.
 */
export function latestMetrics(metrics: readonly Metric[], evals?: Record<string, EvalRecord>): LatestMetrics {
  const values: Record<string, number> = {};
  const steps: Record<string, number> = {};
  for (const m of metrics) {
    for (const [k, v] of Object.entries(m)) {
      if (k === 'step' || typeof v !== 'number') continue;
      values[k] = v;
      steps[k] = m.step;
    }
  }
  for (const rec of Object.values(evals ?? {})) {
    for (const [k, v] of Object.entries(rec.metrics ?? {})) {
      if (typeof v !== 'number' || (steps[k] ?? -Infinity) > rec.step) continue;
      values[k] = v;
      steps[k] = rec.step;
    }
  }
  return { values, steps };
}

/**
 * Finds the metrics key a gate names: the key itself, then eval/<name>, then (for a bare
 * `accuracy` or `perplexity`) the only suite's; else a reason it is missing or ambiguous.
 */
export function resolveGateMetric(name: string, values: Record<string, number>): { key: string } | { reason: string } {
  if (name in values) return { key: name };
  if (`eval/${name}` in values) return { key: `eval/${name}` };
  if (!name.includes('/')) {
    const matches = Object.keys(values).filter((k) => k.startsWith('eval/') && k.endsWith(`/${name}`));
    if (matches.length === 1) return { key: matches[0]! };
    if (matches.length > 1)
      return {
        reason: `"${name}" is ambiguous (${matches.join(', ')}); name the suite, e.g. "${matches[0]!.slice(5)}"`,
      };
  }
  const evalKeys = Object.keys(values).filter((k) => k.startsWith('eval/') || k === 'eval_loss' || k === 'loss');
  return {
    reason: `no metric "${name}" yet${evalKeys.length ? ` (have: ${evalKeys.join(', ')})` : ''}; run the suite (lathe eval <run> --suite F) or fix the gate's name`,
  };
}

function compare(a: number, op: GateOp, b: number): boolean {
  switch (op) {
    case '>=':
      return a >= b;
    case '>':
      return a > b;
    case '<=':
      return a <= b;
    case '<':
      return a < b;
    case '==':
      return a === b;
    case '!=':
      return a !== b;
  }
}

/**
 * Checks gates against the latest metrics: `release-ready` when every gate passes, else
 * `blocked`. A missing, ambiguous or non-finite metric blocks, with a reason.
 */
export function applyGates(
  gates: readonly (string | Gate)[],
  latest: Record<string, number> | LatestMetrics,
): GateReport {
  const values =
    'values' in latest && typeof latest.values === 'object'
      ? (latest as LatestMetrics).values
      : (latest as Record<string, number>);
  const results = gates.map((g): GateResult => {
    const gate = typeof g === 'string' ? parseGate(g) : g;
    const found = resolveGateMetric(gate.metric, values);
    if ('reason' in found) return { gate: gate.source, pass: false, reason: found.reason };
    const value = values[found.key]!;
    if (!Number.isFinite(value))
      return { gate: gate.source, metric: found.key, value, pass: false, reason: `${found.key} is ${value}` };
    return { gate: gate.source, metric: found.key, value, pass: compare(value, gate.op, gate.value) };
  });
  return { status: results.every((r) => r.pass) ? 'release-ready' : 'blocked', results };
}

/** The gates report for a run's summary, or undefined when the recipe has no gates. */
export function summarizeGates(
  gates: readonly string[] | undefined,
  metrics: readonly Metric[],
  evals?: Record<string, EvalRecord>,
): GateReport | undefined {
  if (!gates?.length) return undefined;
  return applyGates(gates, latestMetrics(metrics, evals));
}
