/** Held-out loss and perplexity of a run's latest checkpoint on its own validation split. */
export { heldOut } from './heldout.js';
/** Mean loss of a model over token batches. */
export { evaluateLoss } from './loss.js';

/** Suite and gate config schemas (zod), the fields for the recipe's `eval` section, and the gate parser. */
export {
  BUILTIN_SCORERS,
  GATE_OPS,
  GateSchema,
  GraderScorerSchema,
  ModuleScorerSchema,
  ScorerSchema,
  SuiteSchema,
  ToleranceSchema,
  evalSuiteFields,
  parseGate,
  parseSuiteConfig,
  type Gate,
  type GateOp,
  type GraderScorerConfig,
  type ModuleScorerConfig,
  type ScorerConfig,
  type ScorerInput,
  type SuiteConfig,
  type SuiteInput,
  type Tolerance,
} from '../recipe/eval-schema.js';

/** Scorers: exact, contains, regex, numeric, custom modules (worker-isolated, with timeouts), and text perplexity. */
export {
  builtinScorer,
  compilePattern,
  containsScore,
  exactScore,
  expectedAnswers,
  expectedNumbers,
  firstNumber,
  loadGraderScorer,
  loadModuleScorer,
  numericScore,
  outcomeOf,
  regexScore,
  resolveModulePath,
  textPerplexity,
  withinTolerance,
  type PerplexityResult,
  type ScoreOutcome,
  type ScoredExample,
  type Scorer,
  type ScorerErrors,
} from './scorers.js';

/** Suites: load a JSONL (file:line errors), complete prompts with stop strings, run and score. */
export {
  complete,
  errorCount,
  loadSuite,
  metricKey,
  runSuite,
  splitDocuments,
  type CompleteOptions,
  type Completion,
  type Suite,
  type SuiteFailure,
  type SuiteResult,
} from './suite.js';

/** Gates: check thresholds on the latest metrics, giving release-ready or blocked. */
export {
  applyGates,
  latestMetrics,
  resolveGateMetric,
  summarizeGates,
  type EvalRecord,
  type GateReport,
  type GateResult,
  type LatestMetrics,
} from './gates.js';

/** Model graders: a grader file (a judge model, its rubric, how its answer becomes a score), loaded and run in batches. */
export {
  ModelGrader,
  parseScore,
  renderRubric,
  type Grade,
  type GradeItem,
  type GraderErrors,
  type GraderOpenOptions,
} from './grader.js';
export { GraderSchema, readGraderFile, type GraderConfig, type GraderFile } from '../recipe/grader-schema.js';

/** The comparison table across runs. */
export { compareRuns, formatComparison, type ComparisonRow } from './compare.js';

/** Standalone evaluation of a run's checkpoint, recorded in its summary.json. */
export {
  evalRecord,
  evaluateRun,
  recipeSuites,
  recordEvals,
  recordEvalRecords,
  type RunEvaluation,
  type SuiteSource,
} from './standalone.js';
export { describeResult } from './suite.js';

/** lm-evaluation-harness on a run's HF export (`lathe eval --lm-eval`), recorded like the suites. */
export {
  runLmEval,
  parseLmEvalTasks,
  lmEvalKey,
  type LmEvalOptions,
  type LmEvalResult,
  type LmEvalTask,
} from './lm-eval.js';

/** The training-loop hook: a recipe's suites, run when due. */
export { TrainingEvals } from './training.js';
