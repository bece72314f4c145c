import { readFile, writeFile } from 'node:fs/promises';
import { dirname, isAbsolute, resolve } from 'node:path';
import YAML from 'yaml';
import { parseRecipeText } from '../recipe/parse.js';
import { checkResources, engineFromEnv, resolveEngine, type EngineRequest } from '../engine/select.js';
import type { BackendRequest } from '../engine/tfjs/backend.js';
import type { Executor } from './run.js';
import { localExecutor } from './local.js';
import { LatheError, RecipeError } from '../errors.js';
import type { Run } from './run.js';
import { diffRecipes, type RecipeChange } from '../recipe/diff.js';
import { lockPipeline, lockRecipe, type AnyLock, type PipelineLock, type RecipeLock } from '../recipe/lock.js';
import type {
  DpoRecipe,
  GrpoRecipe,
  Resources,
  OnlineDpoRecipe,
  PipelineInput,
  PretrainRecipe,
  RecipeInput,
  ResolvedPipeline,
  ResolvedRecipe,
  SftRecipe,
} from '../recipe/schema.js';
import { checkRecipe, normalizeKeys, resolveAnyRecipe, resolveRecipe } from '../recipe/validate.js';
import { resourcesFor } from '../recipe/resources.js';

/** How to run a recipe. */
export interface RunOptions {
  /** Where to run: a worker, or (default) this process. */
  on?: Executor;
  /** Override train.steps (warmup is clamped to fit). */
  steps?: number;
  /** Override the backend (else LATHE_BACKEND, else the recipe's). */
  backend?: BackendRequest;
  /** Override the engine: tfjs, torch or auto (else LATHE_ENGINE, else the recipe's, else tfjs). */
  engine?: EngineRequest['engine'];
  /** torch: override the device (else LATHE_DEVICE, else the recipe's, else cpu). */
  device?: EngineRequest['device'];
  /** torch: override the precision (else LATHE_DTYPE, else the recipe's, else fp32). */
  dtype?: EngineRequest['dtype'];
  /** Run directory to create. */
  out?: string;
  /** Stop as if interrupted after this step, with a checkpoint. */
  stopAfter?: number;
  /** Make the run directory its owner's alone (0700): it holds tokenized data. */
  private?: boolean;
  /** torch: ranks per node (GPUs, or CPU processes), overriding the recipe's resources.gpus. */
  gpus?: number;
  /** torch: nodes, overriding resources.nodes. */
  nodes?: number;
  /** torch: ddp or fsdp, overriding resources.parallel. */
  parallel?: Resources['parallel'];
}

/** What a lock may override: steps, the engine, device, dtype and backend, and the resources. */
export type LockRequest = Pick<
  RunOptions,
  'backend' | 'steps' | 'engine' | 'device' | 'dtype' | 'gpus' | 'nodes' | 'parallel'
>;

/** The engine request of a run: its options, else the environment, else the recipe. */
function engineRequest(opts: LockRequest, recipe: EngineRequest): EngineRequest {
  const env = engineFromEnv();
  return {
    engine: opts.engine ?? env.engine ?? recipe.engine,
    device: opts.device ?? env.device ?? recipe.device,
    dtype: opts.dtype ?? env.dtype ?? recipe.dtype,
    backend: opts.backend ?? env.backend ?? recipe.backend,
  };
}

/** An executor that locks recipes itself (a worker: its own backends, its own data); see dispatch/worker.ts. */
function locksItself(
  e: Executor | undefined,
): e is Executor & { lockRecipe(r: Recipe | Pipeline, o: RunOptions): Promise<AnyLock> } {
  return typeof (e as { lockRecipe?: unknown } | undefined)?.lockRecipe === 'function';
}

/** A validated stage recipe: plain data plus the directory its relative paths resolve against. */
export class Recipe<C extends ResolvedRecipe = ResolvedRecipe> {
  /** The recipe with every default filled in. */
  readonly config: C;
  /** The recipe as written (keys normalised to camelCase). */
  readonly input: RecipeInput;
  /** Relative data paths resolve against this directory. */
  readonly baseDir: string;
  /** The file it was loaded from, if any. */
  readonly file?: string;

  constructor(input: unknown, opts: { baseDir?: string; file?: string } = {}) {
    this.input = normalizeKeys(input) as RecipeInput;
    this.config = resolveRecipe(this.input, opts.file) as C;
    this.baseDir = resolve(opts.baseDir ?? process.cwd());
    this.file = opts.file;
  }

  /** The stage this recipe trains. */
  get stage(): C['stage'] {
    return this.config.stage;
  }

  /** A copy with fields replaced (deep merge of plain objects), validated again. */
  with(patch: Record<string, unknown>): Recipe<C> {
    return new Recipe<C>(deepMerge(this.input, normalizeKeys(patch)), { baseDir: this.baseDir, file: this.file });
  }

  /** Resolves into a lock: defaults, data hashes, version, backend, seed. */
  async lock(opts: LockRequest = {}): Promise<RecipeLock> {
    let config = this.config;
    if (opts.steps !== undefined) {
      if (!Number.isInteger(opts.steps) || opts.steps < 1)
        throw new LatheError(`--steps: must be a positive integer, got ${opts.steps}`);
      config = structuredClone(config);
      config.train.steps = opts.steps;
      config.train.warmupSteps = Math.min(config.train.warmupSteps, Math.max(0, opts.steps - 1));
    }
    const req = engineRequest(opts, config);
    const { backend, engine } = await resolveEngine(req);
    const resources = resourcesFor(opts, config.resources);
    checkResources(resources, engine);
    config = {
      ...config,
      backend,
      // tfjs: a dtype asked for (fp32 turns webgpu's f16 weight storage off) is the lock's too.
      ...(engine
        ? { engine: 'torch', device: engine.device, dtype: engine.dtype }
        : req.dtype
          ? { dtype: req.dtype }
          : {}),
      ...(resources ? { resources } : {}),
    };
    return lockRecipe(config, { baseDir: this.baseDir, backend, engine });
  }

  /** Starts training and returns the live Run at once; `await run.done` waits for the end. */
  async start(opts: RunOptions = {}): Promise<Run> {
    const lock = locksItself(opts.on) ? await opts.on.lockRecipe(this, opts) : await this.lock(opts);
    return (opts.on ?? localExecutor).start(lock, { out: opts.out, stopAfter: opts.stopAfter, private: opts.private });
  }

  /** Trains to the end (or an interrupt) and returns the Run. */
  async run(opts: RunOptions = {}): Promise<Run> {
    const run = await this.start(opts);
    await run.done;
    return run;
  }

  /** The recipe as plain data, as written. */
  toJSON(): RecipeInput {
    return this.input;
  }

  /** Writes the recipe as JSON or YAML (by extension). */
  async save(path: string): Promise<void> {
    const text = /\.ya?ml$/i.test(path) ? YAML.stringify(this.input) : JSON.stringify(this.input, null, 2) + '\n';
    await writeFile(path, text);
  }
}

/** Paths inside a stage recipe that resolve against the recipe's folder. */
function absolutizePaths(input: Record<string, unknown>, baseDir: string): Record<string, unknown> {
  const abs = (p: unknown) => (typeof p === 'string' && !isAbsolute(p) ? resolve(baseDir, p) : p);
  const out = structuredClone(input);
  const data = out.data as { sources?: { path?: unknown }[] } | undefined;
  for (const src of data?.sources ?? [])
    if (src && src.path !== undefined) src.path = Array.isArray(src.path) ? src.path.map(abs) : abs(src.path);
  if (out.from !== undefined) out.from = abs(out.from);
  const tok = out.tokenizer as { path?: unknown } | undefined;
  if (tok?.path !== undefined) tok.path = abs(tok.path);
  const reward = out.reward as { module?: unknown; grader?: unknown } | undefined;
  if (reward?.module !== undefined) reward.module = abs(reward.module);
  if (reward?.grader !== undefined) reward.grader = abs(reward.grader);
  const judge = out.judge as { reward?: { module?: unknown; grader?: unknown }; model?: unknown } | undefined;
  if (judge?.reward?.module !== undefined) judge.reward.module = abs(judge.reward.module);
  if (judge?.reward?.grader !== undefined) judge.reward.grader = abs(judge.reward.grader);
  if (judge?.model !== undefined) judge.model = abs(judge.model);
  return out;
}

/**
 * Several stage recipes run in order, each from the previous stage's final checkpoint. The run
 * directory holds one run directory per stage (stages/<i>-<stage>/); a resume skips finished stages.
 */
export class Pipeline {
  /** The pipeline with every default filled in; `train.steps` is the sum of the stages' steps. */
  readonly config: ResolvedPipeline;
  /** The pipeline as written (keys normalised to camelCase). */
  readonly input: PipelineInput;
  readonly baseDir: string;
  readonly file?: string;

  constructor(input: unknown, opts: { baseDir?: string; file?: string } = {}) {
    this.input = normalizeKeys(input) as PipelineInput;
    const r = resolveAnyRecipe(this.input, opts.file);
    if (r.stage !== 'pipeline')
      throw new LatheError(
        `${opts.file ? `${opts.file}: ` : ''}stage: expected "pipeline", got ${JSON.stringify(r.stage)}`,
      );
    this.config = r;
    this.baseDir = resolve(opts.baseDir ?? process.cwd());
    this.file = opts.file;
  }

  /** Always "pipeline". */
  get stage(): 'pipeline' {
    return 'pipeline';
  }

  /** The stage recipes. */
  get stages(): Recipe[] {
    return (this.input.stages as unknown[]).map((s) => new Recipe(s, { baseDir: this.baseDir, file: this.file }));
  }

  /** A copy with fields replaced (deep merge of plain objects; arrays such as stages are replaced), validated again. */
  with(patch: Record<string, unknown>): Pipeline {
    return new Pipeline(deepMerge(this.input, normalizeKeys(patch)), { baseDir: this.baseDir, file: this.file });
  }

  /** Resolves into a lock; `steps` overrides every stage's train.steps. */
  async lock(opts: LockRequest = {}): Promise<PipelineLock> {
    let config = this.config;
    if (opts.steps !== undefined) {
      if (!Number.isInteger(opts.steps) || opts.steps < 1)
        throw new LatheError(`--steps: must be a positive integer, got ${opts.steps}`);
      config = structuredClone(config);
      for (const st of config.stages) {
        st.train.steps = opts.steps;
        st.train.warmupSteps = Math.min(st.train.warmupSteps, Math.max(0, opts.steps - 1));
      }
      config.train.steps = opts.steps * config.stages.length;
    }
    const first = config.stages[0]!;
    const { backend, engine } = await resolveEngine(
      engineRequest(opts, {
        backend: config.backend ?? first.backend,
        engine: config.engine ?? first.engine,
        device: config.device ?? first.device,
        dtype: config.dtype ?? first.dtype,
      }),
    );
    const resources = resourcesFor(opts, config.resources ?? first.resources);
    checkResources(resources, engine);
    return lockPipeline(
      { ...config, backend, ...(resources ? { resources } : {}) },
      { baseDir: this.baseDir, backend, engine },
    );
  }

  /** Starts the pipeline and returns the live Run at once (metrics carry a global step, the stage and stage_step). */
  async start(opts: RunOptions = {}): Promise<Run> {
    const lock = locksItself(opts.on) ? await opts.on.lockRecipe(this, opts) : await this.lock(opts);
    return (opts.on ?? localExecutor).start(lock, { out: opts.out, stopAfter: opts.stopAfter, private: opts.private });
  }

  /** Runs every stage to the end (or an interrupt) and returns the Run. */
  async run(opts: RunOptions = {}): Promise<Run> {
    const run = await this.start(opts);
    await run.done;
    return run;
  }

  toJSON(): PipelineInput {
    return this.input;
  }

  async save(path: string): Promise<void> {
    const text = /\.ya?ml$/i.test(path) ? YAML.stringify(this.input) : JSON.stringify(this.input, null, 2) + '\n';
    await writeFile(path, text);
  }

  /**
   * Builds a pipeline from stage recipes (Recipe objects or plain stage inputs). Paths of Recipe
   * objects made elsewhere are made absolute so they still resolve from the pipeline's baseDir.
   */
  static of(
    stages: (Recipe | RecipeInput)[],
    opts: { baseDir?: string; name?: string; backend?: PipelineInput['backend']; from?: string } = {},
  ): Pipeline {
    const baseDir = resolve(
      opts.baseDir ?? stages.find((s): s is Recipe => s instanceof Recipe)?.baseDir ?? process.cwd(),
    );
    const inputs = stages.map((s) =>
      s instanceof Recipe
        ? s.baseDir === baseDir
          ? s.input
          : absolutizePaths(s.input as Record<string, unknown>, s.baseDir)
        : s,
    );
    const input: Record<string, unknown> = { stage: 'pipeline', stages: inputs };
    if (opts.name) input.name = opts.name;
    if (opts.backend) input.backend = opts.backend;
    if (opts.from) input.from = opts.from;
    return new Pipeline(input, { baseDir });
  }
}

function deepMerge(a: unknown, b: unknown): unknown {
  if (a && b && typeof a === 'object' && typeof b === 'object' && !Array.isArray(a) && !Array.isArray(b)) {
    const out: Record<string, unknown> = { ...(a as Record<string, unknown>) };
    for (const [k, v] of Object.entries(b as Record<string, unknown>)) out[k] = deepMerge(out[k], v);
    return out;
  }
  return b === undefined ? a : b;
}

/** Reads a recipe file (.json, .yaml, .yml): a stage recipe or a pipeline; relative paths in it resolve against its folder. */
export async function loadRecipe(path: string): Promise<Recipe | Pipeline> {
  const file = resolve(path);
  const text = await readFile(file, 'utf8').catch((e: NodeJS.ErrnoException) => {
    throw new LatheError(`${path}: cannot read recipe (${e.code === 'ENOENT' ? 'no such file' : e.message})`);
  });
  const raw = normalizeKeys(parseRecipeText(text, path));
  if (raw && typeof raw === 'object' && (raw as { stage?: unknown }).stage === 'pipeline')
    return new Pipeline(raw, { baseDir: dirname(file), file: path });
  return new Recipe(raw, { baseDir: dirname(file), file: path });
}

/** Validates raw recipe data without throwing: the list of issues (empty when valid). */
export function validateRecipe(raw: unknown): { path: string; message: string }[] {
  const r = checkRecipe(raw);
  return r.ok ? [] : r.issues;
}

/** Lists the fields that differ between two recipes, defaults filled in. */
export function diff(
  a: Recipe | Pipeline | RecipeInput | PipelineInput,
  b: Recipe | Pipeline | RecipeInput | PipelineInput,
): RecipeChange[] {
  const ca = a instanceof Recipe || a instanceof Pipeline ? a.config : resolveAnyRecipe(a);
  const cb = b instanceof Recipe || b instanceof Pipeline ? b.config : resolveAnyRecipe(b);
  return diffRecipes(ca, cb);
}

export { RecipeError };

export { recipeJsonSchema as schema, STAGES } from '../recipe/schema.js';
export type * from '../recipe/schema.js';
export { formatDiff, type RecipeChange } from '../recipe/diff.js';
export {
  lockRecipe,
  lockPipeline,
  isPipelineLock,
  verifyLockId,
  type RecipeLock,
  type PipelineLock,
  type AnyLock,
  type BaseModelRef,
} from '../recipe/lock.js';
export { canonicalJson, sha256File } from '../hash.js';
export { checkRecipe, resolveRecipe, resolveAnyRecipe, normalizeKeys } from '../recipe/validate.js';

export { parseRecipeText, loadRecipe as load, validateRecipe as validate };

type StageInput<S extends RecipeInput['stage']> = Omit<Extract<RecipeInput, { stage: S }>, 'stage'>;

/** A pre-training recipe built in code; relative paths resolve against opts.baseDir or the cwd. */
export function pretrain(input: StageInput<'pretrain'>, opts: { baseDir?: string } = {}): Recipe<PretrainRecipe> {
  return new Recipe<PretrainRecipe>({ ...input, stage: 'pretrain' }, opts);
}

/** A supervised fine-tuning recipe (chat JSONL, loss on assistant tokens); `from` names the starting model. */
export function sft(input: StageInput<'sft'>, opts: { baseDir?: string } = {}): Recipe<SftRecipe> {
  return new Recipe<SftRecipe>({ ...input, stage: 'sft' }, opts);
}

/** A DPO recipe (preference pairs, frozen reference = the starting model). */
export function dpo(input: StageInput<'dpo'>, opts: { baseDir?: string } = {}): Recipe<DpoRecipe> {
  return new Recipe<DpoRecipe>({ ...input, stage: 'dpo' }, opts);
}

/** An online DPO recipe (prompts; the policy samples, a judge ranks, best vs worst is a DPO pair). */
export function onlineDpo(input: StageInput<'online-dpo'>, opts: { baseDir?: string } = {}): Recipe<OnlineDpoRecipe> {
  return new Recipe<OnlineDpoRecipe>({ ...input, stage: 'online-dpo' }, opts);
}

/** A GRPO recipe (prompts and a reward module). */
export function grpo(input: StageInput<'grpo'>, opts: { baseDir?: string } = {}): Recipe<GrpoRecipe> {
  return new Recipe<GrpoRecipe>({ ...input, stage: 'grpo' }, opts);
}

/**
 * Chains stage recipes: `recipe.pipeline([pretrain, sft, dpo, grpo])`. Each stage starts from the
 * previous one's final checkpoint; the run resumes at stage granularity.
 */
export function pipeline(
  stages: (Recipe | RecipeInput)[],
  opts: { baseDir?: string; name?: string; backend?: PipelineInput['backend']; from?: string } = {},
): Pipeline {
  return Pipeline.of(stages, opts);
}

export type { RunOptions as PipelineRunOptions };
