import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import type { Metric } from '../runs/rundir.js';
import { applyGates, latestMetrics, resolveGateMetric, summarizeGates, type EvalRecord } from './gates.js';
import { evalSuiteFields, parseGate, parseSuiteConfig, SuiteSchema } from '../recipe/eval-schema.js';

describe('suite schema', () => {
  it('fills defaults: exact scorer, expected field, greedy, 32 tokens', () => {
    const s = SuiteSchema.parse({ name: 'tasks', path: 'tasks.jsonl' });
    expect(s).toMatchObject({
      name: 'tasks',
      path: 'tasks.jsonl',
      scorer: 'exact',
      field: 'expected',
      temperature: 0,
      maxTokens: 32,
      tolerance: 1e-6,
      timeoutMs: 5000,
    });
    expect(s.every).toBeUndefined();
    expect(SuiteSchema.parse({ name: 't', path: 'p', scorer: { module: 's.mjs' } }).scorer).toEqual({
      module: 's.mjs',
      export: 'default',
    });
    expect(SuiteSchema.parse({ name: 't', path: 'p', scorer: 'numeric', tolerance: { rel: 0.01 } }).tolerance).toEqual({
      abs: 0,
      rel: 0.01,
    });
  });

  it('rejects bad names, scorers and unknown fields, naming the field', () => {
    expect(() => parseSuiteConfig({ name: 'my suite', path: 'p' })).toThrow(/suite\.name: use letters, digits/);
    expect(() => parseSuiteConfig({ name: 't', path: 'p', scorer: 'fuzzy' })).toThrow(/suite\.scorer/);
    expect(() => parseSuiteConfig({ name: 't', path: 'p', maxTokns: 3 }, 'eval.suites[0]')).toThrow(
      /eval\.suites\[0\]: Unrecognized key: "maxTokns"/,
    );
  });

  it('recipe fields: suites with unique names, and gates that parse', () => {
    const Eval = z.strictObject({ every: z.number().default(50), ...evalSuiteFields });
    expect(Eval.parse({})).toEqual({ every: 50, suites: [], gates: [] });
    const dup = Eval.safeParse({
      suites: [
        { name: 'a', path: 'x' },
        { name: 'a', path: 'y' },
      ],
    });
    expect(dup.success).toBe(false);
    expect(dup.error!.issues[0]).toMatchObject({
      path: ['suites', 1, 'name'],
      message: expect.stringMatching(/used by an earlier suite/),
    });
    const bad = Eval.safeParse({ gates: ['tasks/accuracy >= 0.8', 'accuracy at least 0.8'] });
    expect(bad.success).toBe(false);
    expect(bad.error!.issues[0]).toMatchObject({
      path: ['gates', 1],
      message: expect.stringMatching(
        /cannot parse gate "accuracy at least 0.8"; write "<metric> <op> <number>", e\.g\. "tasks\/accuracy >= 0\.8"/,
      ),
    });
  });
});

describe('gates', () => {
  it('parse "<metric> <op> <number>"; a bad gate names itself and how to fix it', () => {
    expect(parseGate('tasks/accuracy >= 0.8')).toEqual({
      source: 'tasks/accuracy >= 0.8',
      metric: 'tasks/accuracy',
      op: '>=',
      value: 0.8,
    });
    expect(parseGate('eval_loss<2.5e0')).toMatchObject({ metric: 'eval_loss', op: '<', value: 2.5 });
    expect(parseGate(' eval/corpus/perplexity <= -.5 ')).toMatchObject({
      metric: 'eval/corpus/perplexity',
      op: '<=',
      value: -0.5,
    });
    expect(() => parseGate('accuracy => 0.8')).toThrow(
      /^gate "accuracy => 0\.8": cannot parse; write "<metric> <op> <number>".*ops: >=, >, <=, <, ==, !=/,
    );
    expect(() => parseGate('accuracy >= high')).toThrow(/gate "accuracy >= high"/);
    expect(() => parseGate('')).toThrow(/gate "": cannot parse/);
  });

  it('resolve a metric by key, by suite/metric, or a bare name when only one suite has it', () => {
    const v = { loss: 1, 'eval/tasks/accuracy': 0.9, 'eval/corpus/perplexity': 5, 'eval/corpus/loss': 1.6 };
    expect(resolveGateMetric('loss', v)).toEqual({ key: 'loss' });
    expect(resolveGateMetric('tasks/accuracy', v)).toEqual({ key: 'eval/tasks/accuracy' });
    expect(resolveGateMetric('accuracy', v)).toEqual({ key: 'eval/tasks/accuracy' });
    expect(resolveGateMetric('perplexity', v)).toEqual({ key: 'eval/corpus/perplexity' });
    const two = { ...v, 'eval/other/accuracy': 0.1 };
    expect(resolveGateMetric('accuracy', two)).toEqual({
      reason: expect.stringMatching(
        /"accuracy" is ambiguous \(eval\/tasks\/accuracy, eval\/other\/accuracy\); name the suite, e\.g\. "tasks\/accuracy"/,
      ),
    });
  });

  it('release-ready when every gate passes; blocked by a failing, missing or NaN metric, with reasons', () => {
    const latest = { 'eval/tasks/accuracy': 0.85, eval_loss: 2.1, 'eval/x/accuracy': NaN };
    const ok = applyGates(['tasks/accuracy >= 0.8', 'eval_loss <= 2.5'], latest);
    expect(ok).toEqual({
      status: 'release-ready',
      results: [
        { gate: 'tasks/accuracy >= 0.8', metric: 'eval/tasks/accuracy', value: 0.85, pass: true },
        { gate: 'eval_loss <= 2.5', metric: 'eval_loss', value: 2.1, pass: true },
      ],
    });
    const low = applyGates(['tasks/accuracy > 0.85'], latest);
    expect(low.status).toBe('blocked');
    expect(low.results[0]).toEqual({
      gate: 'tasks/accuracy > 0.85',
      metric: 'eval/tasks/accuracy',
      value: 0.85,
      pass: false,
    });
    const missing = applyGates(['tasks/accuracy >= 0.8', 'code/accuracy >= 0.5'], latest);
    expect(missing.status).toBe('blocked');
    expect(missing.results[1]).toMatchObject({
      gate: 'code/accuracy >= 0.5',
      pass: false,
      reason: expect.stringMatching(
        /^no metric "code\/accuracy" yet \(have: eval\/tasks\/accuracy, eval_loss, eval\/x\/accuracy\)/,
      ),
    });
    expect(applyGates(['x/accuracy >= 0'], latest).results[0]).toMatchObject({
      pass: false,
      reason: 'eval/x/accuracy is NaN',
    });
    expect(
      applyGates(['eval_loss != 2.1', 'eval_loss == 2.1', 'eval_loss < 2.1'], latest).results.map((r) => r.pass),
    ).toEqual([false, true, false]);
    expect(applyGates([], latest).status).toBe('release-ready');
  });

  it('latest metrics: last value per key; standalone evals overlay when at the same step or later', () => {
    const metrics: Metric[] = [
      { step: 10, stage: 'pretrain', loss: 3, eval_loss: 3.2, 'eval/tasks/accuracy': 0.1 },
      { step: 20, stage: 'pretrain', loss: 2 },
      { step: 30, stage: 'pretrain', loss: 1.5, eval_loss: 2.2, 'eval/tasks/accuracy': 0.4 },
    ];
    expect(latestMetrics(metrics).values).toMatchObject({ loss: 1.5, eval_loss: 2.2, 'eval/tasks/accuracy': 0.4 });
    const rec = (step: number, acc: number): EvalRecord => ({
      step,
      time: '',
      file: 'f',
      scorer: 'exact',
      n: 10,
      accuracy: acc,
      errors: { threw: 0, nan: 0, timeout: 0, invalid: 0 },
      seconds: 1,
      metrics: { 'eval/tasks/accuracy': acc, 'eval/more/accuracy': acc },
    });
    expect(latestMetrics(metrics, { tasks: rec(30, 0.9) }).values['eval/tasks/accuracy']).toBe(0.9);
    const stale = latestMetrics(metrics, { tasks: rec(20, 0.9) });
    expect(stale.values['eval/tasks/accuracy']).toBe(0.4);
    expect(stale.values['eval/more/accuracy']).toBe(0.9);
    expect(summarizeGates([], metrics)).toBeUndefined();
    expect(summarizeGates(['accuracy >= 0.5'], metrics)?.status).toBe('blocked');
    expect(summarizeGates(['tasks/accuracy >= 0.5'], metrics, { tasks: rec(30, 0.9) })?.status).toBe('release-ready');
  });
});
