import { existsSync } from 'node:fs';
import { basename, extname, resolve } from 'node:path';
import { InvalidArgumentError, type Command } from 'commander';
import { formatTable } from '../data/table.js';
import { LatheError } from '../errors.js';
import { compareRuns, formatComparison } from '../eval/compare.js';
import { BUILTIN_SCORERS, type ScorerInput, type SuiteInput } from '../recipe/eval-schema.js';
import { evaluateRun, recipeSuites, type RunEvaluation, type SuiteSource } from '../eval/standalone.js';
import { errorCount } from '../eval/suite.js';
import { describeMetrics, lmEvalKey, runLmEval, type LmEvalResult } from '../eval/lm-eval.js';
import { finiteNumber, positiveInt } from './options.js';

interface EvalOptions {
  suite: string[];
  scorer?: ScorerInput;
  name?: string;
  field?: string;
  maxTokens?: number;
  temperature?: number;
  stop: string[];
  limit?: number;
  tolerance?: number;
  timeoutMs?: number;
  step?: number;
  json?: boolean;
  record: boolean;
  failOnBlocked?: boolean;
  lmEval: string[];
  batchSize?: number;
}

const collect = (v: string, acc: string[]): string[] => [...acc, v];

/** `--scorer`: a built-in name, a grader file (.json, .yaml), or a module path with an optional #export. */
export function scorerOption(v: string): ScorerInput {
  if ((BUILTIN_SCORERS as readonly string[]).includes(v)) return v as ScorerInput;
  if (/\.(json|ya?ml)$/i.test(v)) return { grader: v };
  const [module, exp] = v.split('#') as [string, string | undefined];
  if (!/\.(m?js|cjs|m?ts|cts)$/i.test(module)) {
    throw new InvalidArgumentError(
      `--scorer must be one of ${BUILTIN_SCORERS.join(', ')}, a grader file such as ./grader.json, or a module path such as ./score.mjs#myScorer; got "${v}"`,
    );
  }
  return exp ? { module, export: exp } : { module };
}

/** The suites to run: each --suite is a file (flags configure it) or the name of a suite in the run's recipe. */
function suitesFor(dir: string, o: EvalOptions): SuiteSource[] {
  const recipe = recipeSuites(dir);
  if (!o.suite.length) {
    if (!recipe.suites.length)
      throw new LatheError(
        `${dir}: the recipe has no eval.suites; pass --suite F (a JSONL of {"prompt", "expected"} rows)`,
      );
    return recipe.suites.map((config) => ({ config: withFlags(config, o), baseDir: recipe.baseDir }));
  }
  if (o.name && o.suite.length > 1)
    throw new LatheError('--name: applies to one --suite; drop it or run the suites one at a time');
  return o.suite.map((s) => {
    const named = recipe.suites.find((r) => r.name === s);
    if (named && !existsSync(s)) return { config: withFlags(named, o), baseDir: recipe.baseDir };
    if (!existsSync(s)) {
      const names = recipe.suites.map((r) => r.name);
      throw new LatheError(
        `--suite ${s}: no such file${names.length ? `, and the recipe's suites are ${names.join(', ')}` : ''}`,
      );
    }
    const name = o.name ?? (basename(s, extname(s)).replace(/[^A-Za-z0-9_.-]+/g, '-') || 'suite');
    return {
      config: withFlags(
        { name, path: resolve(s), scorer: o.scorer ?? (/\.(txt|md)$/i.test(s) ? 'perplexity' : 'exact') },
        o,
      ),
      baseDir: process.cwd(),
    };
  });
}

function withFlags(c: SuiteInput, o: EvalOptions): SuiteInput {
  const out: SuiteInput = { ...c };
  if (o.scorer !== undefined) out.scorer = o.scorer;
  if (o.field !== undefined) out.field = o.field;
  if (o.maxTokens !== undefined) out.maxTokens = o.maxTokens;
  if (o.temperature !== undefined) out.temperature = o.temperature;
  if (o.stop.length) out.stop = o.stop;
  if (o.limit !== undefined) out.limit = o.limit;
  if (o.tolerance !== undefined) out.tolerance = o.tolerance;
  if (o.timeoutMs !== undefined) out.timeoutMs = o.timeoutMs;
  return out;
}

const clip = (s: string, n = 60): string => {
  const one = JSON.stringify(s);
  return one.length > n ? one.slice(0, n - 1) + '…' : one;
};

/** The text report of an evaluation: a table of suites, the first failures, then gates. */
export function formatEvaluation(e: RunEvaluation, opts: { record?: boolean } = {}): string {
  const rows = e.results.map((r) => [
    r.name,
    r.scorer,
    r.n,
    r.kind === 'perplexity' ? 'perplexity' : 'accuracy',
    (r.kind === 'perplexity' ? r.perplexity! : r.accuracy!).toFixed(4),
    errorCount(r),
    r.seconds.toFixed(1),
  ]);
  const out = [
    `run ${e.run} at step ${e.step}`,
    '',
    formatTable(['suite', 'scorer', 'n', 'metric', 'value', 'scorer errors', 'seconds'], rows),
  ];
  for (const r of e.results) {
    if (!r.failures.length) continue;
    out.push('', `${r.name}: first ${r.failures.length} misses`);
    for (const f of r.failures)
      out.push(
        `  ${r.file}:${f.line}  score ${f.score}  expected ${clip(typeof f.expected === 'string' ? f.expected : (JSON.stringify(f.expected) ?? ''))}  got ${clip(f.completion)}${f.error ? `  (${f.error})` : ''}`,
      );
    const er = r.errors;
    if (errorCount(r))
      out.push(
        `  scorer errors: ${er.threw} threw, ${er.nan} NaN, ${er.timeout} timed out, ${er.invalid} invalid, ${er.crashed ?? 0} crashed (each scored 0)`,
      );
  }
  if (e.gates) {
    out.push('', `gates: ${e.gates.status}`);
    for (const g of e.gates.results)
      out.push(
        `  ${g.pass ? 'pass' : 'FAIL'}  ${g.gate}${g.value !== undefined ? `  (${g.metric} = ${g.value})` : ''}${g.reason ? `  ${g.reason}` : ''}`,
      );
  }
  const cut = e.results.filter((r) => r.truncated);
  if (cut.length)
    out.push(
      '',
      `prompts cut from the left to fit the model's context with room for --max-tokens: ${cut.map((r) => `${r.name} ${r.truncated}/${r.n}`).join(', ')}`,
    );
  if (!e.recorded && opts.record !== false)
    out.push('', 'not recorded: the run has no summary.json yet (still running?)');
  return out.join('\n');
}

/** The text report of an lm-eval run: a table of tasks and their metrics, then gates. */
export function formatLmEval(e: LmEvalResult, opts: { record?: boolean } = {}): string {
  const rows = e.tasks.map((t) => [lmEvalKey(t.task), t.outputType ?? '', `${t.n}/${t.of}`, describeMetrics(t)]);
  const out = [
    `run ${e.run} at step ${e.step}: lm-evaluation-harness ${e.lmEval ?? ''} in ${e.seconds.toFixed(1)} s`,
    '',
    formatTable(['task', 'type', 'n', 'metrics'], rows),
  ];
  if (e.gates) {
    out.push('', `gates: ${e.gates.status}`);
    for (const g of e.gates.results)
      out.push(
        `  ${g.pass ? 'pass' : 'FAIL'}  ${g.gate}${g.value !== undefined ? `  (${g.metric} = ${g.value})` : ''}${g.reason ? `  ${g.reason}` : ''}`,
      );
  }
  if (!e.recorded && opts.record !== false)
    out.push('', 'not recorded: the run has no summary.json yet (still running?)');
  return out.join('\n');
}

export function register(program: Command): void {
  program
    .command('eval')
    .description(
      "Evaluate a run's latest checkpoint on suites, or with lm-evaluation-harness (--lm-eval); prints a table and records results (and gates) in summary.json.",
    )
    .argument('<run-dir>', 'run directory')
    .option(
      '--suite <file|name>',
      'JSONL of {"prompt", "expected"} rows (a .txt is scored by perplexity), or a suite named in the recipe; repeatable (default: the recipe\'s suites)',
      collect,
      [],
    )
    .option(
      '--scorer <s>',
      `${BUILTIN_SCORERS.join(', ')}, a grader file ./grader.json (a judge model and its rubric), or a module ./file.mjs[#export] with (completion, example) => number | boolean`,
      scorerOption,
    )
    .option('--name <name>', 'suite name for the metrics (default: the file name)')
    .option('--field <f>', 'row field with the expected answer (default: expected)')
    .option('--max-tokens <n>', 'tokens to generate per prompt (default: 32)', positiveInt('--max-tokens'))
    .option('--temperature <t>', 'sampling temperature (default: 0, greedy)', finiteNumber('--temperature'))
    .option(
      '--stop <s>',
      'a string that ends a completion; repeatable (e.g. --stop "\\n")',
      (v: string, acc: string[]) => [...acc, v.replace(/\\n/g, '\n').replace(/\\t/g, '\t')],
      [],
    )
    .option('--limit <n>', 'use the first n examples (with --lm-eval: documents per task)', positiveInt('--limit'))
    .option('--tolerance <x>', 'numeric scorer: absolute tolerance (default: 1e-6)', finiteNumber('--tolerance'))
    .option('--timeout-ms <n>', 'custom scorer: time allowed per example (default: 5000)', positiveInt('--timeout-ms'))
    .option('--step <n>', 'evaluate this checkpoint step instead of the latest', positiveInt('--step'))
    .option(
      '--lm-eval <tasks>',
      "run lm-evaluation-harness on the run's HF export instead of suites: task YAML files (or lm-eval task names), comma-separated or repeated; scores land in summary.json as lm-eval/<task>/<metric>",
      collect,
      [],
    )
    .option('--batch-size <n>', 'lm-eval: requests per forward pass (default: 8)', positiveInt('--batch-size'))
    .option('--no-record', 'do not write the results into summary.json')
    .option('--fail-on-blocked', "exit 1 when the recipe's gates block the run")
    .option('--json', 'print the results as JSON')
    .action(async (dir: string, o: EvalOptions) => {
      if (o.lmEval.length) {
        const suiteOnly = (
          ['suite', 'scorer', 'name', 'field', 'maxTokens', 'temperature', 'tolerance', 'timeoutMs'] as const
        ).find((k) => (k === 'suite' ? o.suite.length > 0 : o[k] !== undefined));
        if (suiteOnly || o.stop.length)
          throw new LatheError(
            `--${(suiteOnly ?? 'stop').replace(/[A-Z]/g, (c) => '-' + c.toLowerCase())}: applies to suites, not to --lm-eval (the task files say how to generate and score)`,
          );
        const progress = !o.json && process.stderr.isTTY;
        const e = await runLmEval(dir, o.lmEval, {
          limit: o.limit,
          step: o.step,
          batchSize: o.batchSize,
          record: o.record,
          onLog: progress ? (l) => process.stderr.write(l + '\n') : undefined,
        });
        if (o.json) process.stdout.write(JSON.stringify(e) + '\n');
        else console.log(formatLmEval(e, { record: o.record }));
        if (o.failOnBlocked && e.gates?.status === 'blocked') process.exitCode = 1;
        return;
      }
      if (o.batchSize !== undefined) throw new LatheError('--batch-size: applies to --lm-eval');
      const suites = suitesFor(dir, o);
      const progress = !o.json && process.stderr.isTTY;
      const e = await evaluateRun(dir, suites, {
        step: o.step,
        record: o.record,
        onExample: progress ? (s, d, t) => process.stderr.write(`\r${s} ${d}/${t}${d === t ? '\n' : ''}`) : undefined,
      });
      if (o.json) process.stdout.write(JSON.stringify(e) + '\n');
      else console.log(formatEvaluation(e, { record: o.record }));
      if (o.failOnBlocked && e.gates?.status === 'blocked') process.exitCode = 1;
    });

  program
    .command('compare')
    .description('Compare runs: final loss, eval_loss, each suite score and the gate status, one row per run.')
    .argument('<run-dir...>', 'run directories')
    .option('--json', 'print the rows as JSON')
    .action(async (dirs: string[], o: { json?: boolean }) => {
      const rows = await compareRuns(dirs);
      if (o.json) process.stdout.write(JSON.stringify(rows) + '\n');
      else console.log(formatComparison(rows));
    });
}
