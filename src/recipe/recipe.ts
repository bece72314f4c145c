import { readFile, writeFile } from 'node:fs/promises';
import { dirname, extname, resolve } from 'node:path';
import YAML, { LineCounter } from 'yaml';
import { backendFromEnv, useBackend, type BackendRequest, type EngineBackend } from '../backend/select.js';
import type { Executor } from '../dispatch/executor.js';
import { localExecutor } from '../dispatch/local.js';
import { LatheError, RecipeError } from '../errors.js';
import type { Run } from '../runs/run.js';
import { diffRecipes, type RecipeChange } from './diff.js';
import { lockRecipe, type RecipeLock } from './lock.js';
import type { RecipeInput, ResolvedRecipe } from './schema.js';
import { checkRecipe, normalizeKeys, resolveRecipe } from './validate.js';

/** How to run a recipe. */
export interface RunOptions {
  /** Where to run: a worker, or (default) this process. */
  on?: Executor;
  /** Override train.steps (warmup is clamped to fit). */
  steps?: number;
  /** Override the backend (else the recipe's, else LATHE_BACKEND). */
  backend?: BackendRequest;
  /** Run directory to create. */
  out?: string;
  /** Stop as if interrupted after this step, with a checkpoint. */
  stopAfter?: number;
}

/** A validated recipe: plain data plus the directory its relative paths resolve against. */
export class Recipe {
  /** The recipe with every default filled in. */
  readonly config: ResolvedRecipe;
  /** The recipe as written (keys normalised to camelCase). */
  readonly input: RecipeInput;
  /** Relative data paths resolve against this directory. */
  readonly baseDir: string;
  /** The file it was loaded from, if any. */
  readonly file?: string;

  constructor(input: unknown, opts: { baseDir?: string; file?: string } = {}) {
    this.input = normalizeKeys(input) as RecipeInput;
    this.config = resolveRecipe(this.input, opts.file);
    this.baseDir = resolve(opts.baseDir ?? process.cwd());
    this.file = opts.file;
  }

  /** The stage this recipe trains. */
  get stage(): ResolvedRecipe['stage'] {
    return this.config.stage;
  }

  /** A copy with fields replaced (deep merge of plain objects), validated again. */
  with(patch: Record<string, unknown>): Recipe {
    return new Recipe(deepMerge(this.input, normalizeKeys(patch)), { baseDir: this.baseDir, file: this.file });
  }

  /** Resolves into a lock: defaults, data hashes, version, backend, seed. */
  async lock(opts: Pick<RunOptions, 'backend' | 'steps'> = {}): Promise<RecipeLock> {
    let config = this.config;
    if (opts.steps !== undefined) {
      if (!Number.isInteger(opts.steps) || opts.steps < 1) throw new LatheError(`--steps: must be a positive integer, got ${opts.steps}`);
      config = structuredClone(config);
      config.train.steps = opts.steps;
      config.train.warmupSteps = Math.min(config.train.warmupSteps, Math.max(0, opts.steps - 1));
    }
    const request = opts.backend ?? backendFromEnv() ?? config.backend;
    const backend: EngineBackend = await useBackend(request);
    config = { ...config, backend };
    return lockRecipe(config, { baseDir: this.baseDir, backend });
  }

  /** Starts training and returns the live Run at once; `await run.done` waits for the end. */
  async start(opts: RunOptions = {}): Promise<Run> {
    const lock = await this.lock(opts);
    return (opts.on ?? localExecutor).start(lock, { out: opts.out, stopAfter: opts.stopAfter });
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

function deepMerge(a: unknown, b: unknown): unknown {
  if (a && b && typeof a === 'object' && typeof b === 'object' && !Array.isArray(a) && !Array.isArray(b)) {
    const out: Record<string, unknown> = { ...(a as Record<string, unknown>) };
    for (const [k, v] of Object.entries(b as Record<string, unknown>)) out[k] = deepMerge(out[k], v);
    return out;
  }
  return b === undefined ? a : b;
}

/** Parses recipe text (JSON or YAML); syntax errors name file:line. */
export function parseRecipeText(text: string, file: string): unknown {
  const isJson = extname(file).toLowerCase() === '.json';
  if (isJson) {
    try {
      return JSON.parse(text);
    } catch (e) {
      // JSON.parse gives no line; YAML (a superset of JSON) locates the same fault.
      const lc = new LineCounter();
      const doc = YAML.parseDocument(text, { lineCounter: lc, prettyErrors: false });
      const line = doc.errors.length ? lc.linePos(doc.errors[0]!.pos[0]).line : 1;
      throw new LatheError(`${file}:${line}: invalid JSON: ${(e as Error).message.split('\n')[0]}`);
    }
  }
  const lc = new LineCounter();
  const doc = YAML.parseDocument(text, { lineCounter: lc, prettyErrors: false });
  if (doc.errors.length) {
    const e = doc.errors[0]!;
    const { line } = lc.linePos(e.pos[0]);
    throw new LatheError(`${file}:${line}: invalid YAML: ${e.message.split('\n')[0]}`);
  }
  return doc.toJS();
}

/** Reads a recipe file (.json, .yaml, .yml); relative paths in it resolve against its folder. */
export async function loadRecipe(path: string): Promise<Recipe> {
  const file = resolve(path);
  const text = await readFile(file, 'utf8').catch((e: NodeJS.ErrnoException) => {
    throw new LatheError(`${path}: cannot read recipe (${e.code === 'ENOENT' ? 'no such file' : e.message})`);
  });
  return new Recipe(parseRecipeText(text, path), { baseDir: dirname(file), file: path });
}

/** Validates raw recipe data without throwing: the list of issues (empty when valid). */
export function validateRecipe(raw: unknown): { path: string; message: string }[] {
  const r = checkRecipe(raw);
  return r.ok ? [] : r.issues;
}

/** Lists the fields that differ between two recipes, defaults filled in. */
export function diff(a: Recipe | RecipeInput, b: Recipe | RecipeInput): RecipeChange[] {
  const ca = a instanceof Recipe ? a.config : resolveRecipe(a);
  const cb = b instanceof Recipe ? b.config : resolveRecipe(b);
  return diffRecipes(ca, cb);
}

export { RecipeError };
