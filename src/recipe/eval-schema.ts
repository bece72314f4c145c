import { z } from 'zod';
import { LatheError } from '../errors.js';

// Evaluation config: suites (a JSONL of prompts plus a scorer, or a text file for perplexity) and
// release gates. The recipe's `eval` section spreads {@link evalSuiteFields} into its schema.

/** Built-in scorers, by name. */
export const BUILTIN_SCORERS = ['exact', 'contains', 'regex', 'numeric', 'perplexity'] as const;

/** A custom scorer: a JS module (or TS, where a TS loader is available) exporting `(completion, example) => number | boolean`. */
export const ModuleScorerSchema = z
  .strictObject({
    module: z
      .string()
      .min(1)
      .describe(
        'Path to the module, relative to the recipe (or the suite file): .js, .mjs, .cjs, or TypeScript (.ts, .mts), compiled on load.',
      ),
    export: z
      .string()
      .min(1)
      .default('default')
      .describe('The exported function to call: (completion, example) => number | boolean | Promise of either.'),
  })
  .describe('A custom scorer module.');

/** A model grader (scorer kind `model`): a grader file naming a judge model and its rubric. */
export const GraderScorerSchema = z
  .strictObject({
    grader: z
      .string()
      .min(1)
      .describe(
        'A grader file (JSON or YAML, src/recipe/grader-schema.ts: {kind: "model", judge, rubric, ...}), relative to the recipe (or the suite file).',
      ),
  })
  .describe('A model grader: a judge model scores each completion; unparsable answers score 0 and are counted.');

export const ScorerSchema = z
  .union([z.enum(BUILTIN_SCORERS), ModuleScorerSchema, GraderScorerSchema])
  .describe(
    'How a completion is scored: exact (trimmed), contains, regex (expected is a pattern), numeric (within tolerance), perplexity (path is a text file), {module, export}, or {grader} (a judge model).',
  );

/** Numeric tolerance: a number is absolute; {abs, rel} passes when |got - expected| <= max(abs, rel·|expected|). */
export const ToleranceSchema = z
  .union([
    z.number().min(0),
    z.strictObject({
      abs: z.number().min(0).default(0).describe('Absolute tolerance.'),
      rel: z.number().min(0).default(0).describe('Relative tolerance, as a fraction of |expected|.'),
    }),
  ])
  .describe('Numeric scorer tolerance: a number (absolute), or {abs, rel}.');

/** One evaluation suite. */
export const SuiteSchema = z
  .strictObject({
    name: z
      .string()
      .regex(/^[A-Za-z0-9_.-]+$/, {
        error: 'use letters, digits, "_", "." or "-" (it becomes the metric key eval/<name>/accuracy)',
      })
      .describe('Suite name; metrics are eval/<name>/accuracy (or eval/<name>/perplexity).'),
    path: z
      .string()
      .min(1)
      .describe('JSONL file of {"prompt", "expected", ...} rows (a text file for perplexity), relative to the recipe.'),
    scorer: ScorerSchema.default('exact'),
    field: z.string().min(1).default('expected').describe('The row field holding the expected answer.'),
    tolerance: ToleranceSchema.default(1e-6),
    maxTokens: z.number().int().positive().default(32).describe('Tokens to generate per prompt at most.'),
    temperature: z.number().min(0).default(0).describe('Sampling temperature; 0 is greedy (deterministic).'),
    seed: z.number().int().min(0).default(0).describe('Sampling seed when temperature > 0 (example i uses seed + i).'),
    stop: z
      .array(z.string().min(1))
      .optional()
      .describe('Strings that end a completion (cut before them); end-of-sequence always stops.'),
    every: z
      .number()
      .int()
      .min(0)
      .optional()
      .describe('Run every N training steps (0: only at the end); defaults to eval.every.'),
    limit: z
      .number()
      .int()
      .positive()
      .optional()
      .describe('Use only the first N examples (perplexity: the first N windows).'),
    timeoutMs: z
      .number()
      .int()
      .positive()
      .default(5000)
      .describe('Custom scorer: time allowed per call; a call past it scores 0 and is counted.'),
    split: z
      .enum(['line', 'paragraph', 'file'])
      .default('paragraph')
      .describe('Perplexity: how the text file splits into documents (each wrapped in bos…eos, as in training).'),
  })
  .describe('An evaluation suite.');

/** Comparison operators a gate may use. */
export const GATE_OPS = ['>=', '<=', '==', '!=', '>', '<'] as const;
export type GateOp = (typeof GATE_OPS)[number];

/** A parsed gate: the latest value of `metric` must satisfy `op value`. */
export interface Gate {
  /** The gate as written, e.g. `tasks/accuracy >= 0.8`. */
  source: string;
  /** Metric name as written: `tasks/accuracy`, `eval/tasks/accuracy`, `eval_loss`, or `accuracy` (the only suite). */
  metric: string;
  op: GateOp;
  value: number;
}

const GATE_RE = /^\s*([A-Za-z_][\w./-]*)\s*(>=|<=|==|!=|>|<)\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*$/;
const GATE_HELP =
  'write "<metric> <op> <number>", e.g. "tasks/accuracy >= 0.8" or "eval_loss <= 2.5"; ops: >=, >, <=, <, ==, !=';

/** Parses a gate string such as `tasks/accuracy >= 0.8`; a bad one throws a LatheError naming it and how to fix it. */
export function parseGate(source: string): Gate {
  const m = GATE_RE.exec(source);
  if (!m) throw new LatheError(`gate ${JSON.stringify(source)}: cannot parse; ${GATE_HELP}`);
  return { source, metric: m[1]!, op: m[2] as GateOp, value: Number(m[3]) };
}

/** A gate in a recipe: a string checked by {@link parseGate} at validation time. */
export const GateSchema = z
  .string()
  .superRefine((s, ctx) => {
    if (!GATE_RE.test(s))
      ctx.addIssue({ code: 'custom', message: `cannot parse gate ${JSON.stringify(s)}; ${GATE_HELP}` });
  })
  .describe(
    'A release gate: "<metric> <op> <number>", e.g. "tasks/accuracy >= 0.8"; metric is eval/<suite>/<name>, <suite>/<name>, a metrics.jsonl key, or accuracy when there is one suite.',
  );

/** Fields to add to the recipe's `eval` section (spread into its strictObject). */
export const evalSuiteFields = {
  suites: z
    .array(SuiteSchema)
    .superRefine((suites, ctx) => {
      const seen = new Set<string>();
      suites.forEach((s, i) => {
        if (seen.has(s.name))
          ctx.addIssue({
            code: 'custom',
            path: [i, 'name'],
            message: `"${s.name}" is used by an earlier suite; suite names must be unique (they key the metrics)`,
          });
        seen.add(s.name);
      });
    })
    .default([])
    .describe(
      'Evaluation suites run during training (every eval.every steps unless a suite says otherwise) and by lathe eval.',
    ),
  gates: z
    .array(GateSchema)
    .default([])
    .describe('Thresholds on the latest metrics that mark a run release-ready or blocked in summary.json.'),
};

/** A suite with every default filled in. */
export type SuiteConfig = z.output<typeof SuiteSchema>;
/** A suite as a user writes it. */
export type SuiteInput = z.input<typeof SuiteSchema>;
export type ScorerConfig = z.output<typeof ScorerSchema>;
/** A scorer as a user writes it (export may be left out). */
export type ScorerInput = z.input<typeof ScorerSchema>;
export type ModuleScorerConfig = z.output<typeof ModuleScorerSchema>;
export type GraderScorerConfig = z.output<typeof GraderScorerSchema>;
export type Tolerance = z.output<typeof ToleranceSchema>;

/** Validates a suite config (e.g. from CLI flags), filling defaults; errors name the field. */
export function parseSuiteConfig(input: unknown, where = 'suite'): SuiteConfig {
  const r = SuiteSchema.safeParse(input);
  if (r.success) return r.data;
  const lines = r.error.issues.map(
    (i) => `  ${where}${i.path.length ? '.' + i.path.map(String).join('.') : ''}: ${i.message}`,
  );
  throw new LatheError(`${where} is invalid:\n${lines.join('\n')}`);
}
