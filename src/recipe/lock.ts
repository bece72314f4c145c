import { createHash } from 'node:crypto';
import { relative, resolve } from 'node:path';
import { canonicalJson, sha256File } from '../hash.js';
import { LatheError } from '../errors.js';
import { resolveSourceFiles } from './files.js';
import { resolveBase, type BaseModelRef } from './base.js';
import { readGraderFile } from './grader-schema.js';
import { VERSION } from '../version.js';
import type { ResolvedPipeline, ResolvedRecipe } from './schema.js';

export type { BaseModelRef } from './base.js';

/** The torch engine a run trains on (a tfjs run records only its backend). */
export interface EngineLock {
  kind: 'torch';
  device: 'cpu' | 'cuda';
  dtype: 'fp32' | 'bf16';
  /** torch's version where the run was locked (bit-exact reproduce needs the same). */
  torch: string;
}

/** The fully resolved, hashed description of a run: what `recipe.lock.json` holds. */
export interface RecipeLock {
  /** Run identity: sha256 (hex, 16 chars) over everything below but baseDir and createdAt. */
  id: string;
  /** Lathe package version that made the lock. */
  lathe: string;
  /** Concrete tfjs backend (never "auto"); torch runs record cpu here and their engine below. */
  backend: 'cpu' | 'wasm' | 'webgpu';
  /** The torch engine, device, dtype and version; absent for the tfjs engine. */
  engine?: EngineLock;
  seed: number;
  /** The recipe with every default filled in. */
  recipe: ResolvedRecipe;
  /** Every data file with its content hash, per source. */
  data: { source: string; files: { path: string; sha256: string; bytes: number }[] }[];
  /** The loaded tokenizer file, when the recipe names one (or the base model's, when starting `from` one). */
  tokenizer?: { path: string; sha256: string };
  /** The pinned starting model (`from`: post-training, continued pre-training); its architecture is `recipe.model`. */
  base?: BaseModelRef;
  /** GRPO / online DPO: the reward module, hashed (its own imports are not). */
  reward?: { path: string; export: string; sha256: string };
  /** Online DPO with a reward-model judge: the pinned judge run. */
  judge?: BaseModelRef;
  /** GRPO / online DPO rewarded by a grader file: the file, hashed, and its judge model, pinned. */
  grader?: { path: string; sha256: string; judge: BaseModelRef };
  /** Directory that relative paths in the recipe resolve against (not part of the identity). */
  baseDir: string;
  createdAt: string;
}

/** The name a source goes by in reports and metrics. */
export function sourceName(recipe: ResolvedRecipe, i: number): string {
  const s = recipe.data.sources[i]!;
  if (s.name) return s.name;
  const p = Array.isArray(s.path) ? s.path[0]! : s.path;
  const base = p.replace(/\/+$/, '').split('/').pop() ?? `source${i}`;
  return recipe.data.sources.filter((o) => !o.name).length > 1 ? `${i}:${base}` : base;
}

/** Options of {@link lockRecipe}. */
export interface LockOptions {
  baseDir: string;
  backend: 'cpu' | 'wasm' | 'webgpu';
  /** The torch engine, when the run trains on it. */
  engine?: EngineLock;
  /** Pipelines: the stage starts from an earlier stage not trained yet, so `from` is resolved when it starts. */
  deferBase?: boolean;
}

/** Resolves a validated recipe into a lock: hashes data files, pins version, backend, seed, the base model and reward module. */
export async function lockRecipe(recipe: ResolvedRecipe, opts: LockOptions): Promise<RecipeLock> {
  const data: RecipeLock['data'] = [];
  for (const [i, src] of recipe.data.sources.entries()) {
    const files = await resolveSourceFiles(src, opts.baseDir, `data.sources[${i}]`);
    const entries = [];
    for (const f of files) entries.push({ path: f, ...(await sha256File(f)) });
    data.push({ source: sourceName(recipe, i), files: entries });
  }
  // Continued pre-training's replay data is the entry after the sources.
  const replay = recipe.stage === 'pretrain' ? recipe.data.replay : undefined;
  if (replay) {
    const files = await resolveSourceFiles(replay, opts.baseDir, 'data.replay');
    const entries = [];
    for (const f of files) entries.push({ path: f, ...(await sha256File(f)) });
    data.push({ source: replay.name ?? 'replay', files: entries });
  }
  let tokenizer: RecipeLock['tokenizer'];
  let base: BaseModelRef | undefined;
  let reward: RecipeLock['reward'];
  let judge: BaseModelRef | undefined;
  let resolved = recipe;
  if (recipe.from !== undefined && !opts.deferBase) {
    base = await resolveBase(recipe.from, opts.baseDir);
    // The base model fixes the architecture and the tokenizer.
    resolved = { ...recipe, model: base.model };
    tokenizer = { path: base.tokenizer, sha256: (await sha256File(base.tokenizer)).sha256 };
  } else if (recipe.tokenizer.path) {
    const p = resolve(opts.baseDir, recipe.tokenizer.path);
    const hashed = await sha256File(p).catch(() => undefined);
    if (!hashed) throw new LatheError(`tokenizer.path: ${recipe.tokenizer.path} does not exist (resolved to ${p})`);
    tokenizer = { path: p, sha256: hashed.sha256 };
  }
  const rewardCfg =
    recipe.stage === 'grpo' ? recipe.reward : recipe.stage === 'online-dpo' ? recipe.judge.reward : undefined;
  let grader: RecipeLock['grader'];
  if (rewardCfg?.grader !== undefined) {
    const where = recipe.stage === 'grpo' ? 'reward.grader' : 'judge.reward.grader';
    let g: ReturnType<typeof readGraderFile>;
    try {
      g = readGraderFile(rewardCfg.grader, opts.baseDir);
    } catch (e) {
      throw new LatheError(`${where}: ${(e as Error).message}`);
    }
    grader = {
      path: g.path,
      sha256: (await sha256File(g.path)).sha256,
      judge: await resolveBase(g.config.judge, g.dir, `${where}: judge`),
    };
  } else if (rewardCfg?.module !== undefined) {
    const where = recipe.stage === 'grpo' ? 'reward.module' : 'judge.reward.module';
    const p = resolve(opts.baseDir, rewardCfg.module);
    const hashed = await sha256File(p).catch(() => undefined);
    if (!hashed) throw new LatheError(`${where}: ${rewardCfg.module} does not exist (resolved to ${p})`);
    reward = { path: p, export: rewardCfg.export, sha256: hashed.sha256 };
  }
  if (recipe.stage === 'online-dpo' && recipe.judge.model !== undefined)
    judge = await resolveBase(recipe.judge.model, opts.baseDir, 'judge.model');
  const body = {
    lathe: VERSION,
    backend: opts.backend,
    engine: opts.engine,
    seed: recipe.seed,
    recipe: resolved,
    data,
    tokenizer,
    base,
    reward,
    judge,
    grader,
  };
  return { id: lockId(body, opts.baseDir), ...body, baseDir: opts.baseDir, createdAt: new Date().toISOString() };
}

function lockId(body: Omit<RecipeLock, 'id' | 'baseDir' | 'createdAt'>, baseDir: string): string {
  // Identity follows content, not where the files sit on this machine.
  const pin = (b: BaseModelRef | undefined) => b && { kind: b.kind, step: b.step, sha256: b.sha256 };
  // `from` is pinned by hash below; checkpoint retention does not change what trains.
  // Nor where it runs: a run saved on N ranks resumes on M.
  const recipe = {
    ...body.recipe,
    checkpoints: undefined,
    resources: undefined,
    ...('from' in body.recipe ? { from: undefined } : {}),
  };
  const portable = {
    ...body,
    recipe,
    data: body.data.map((d) => ({ ...d, files: d.files.map((f) => ({ ...f, path: relative(baseDir, f.path) })) })),
    tokenizer: body.tokenizer && { sha256: body.tokenizer.sha256 },
    base: pin(body.base),
    judge: pin(body.judge),
    grader: body.grader && { sha256: body.grader.sha256, judge: pin(body.grader.judge) },
    reward: body.reward && { export: body.reward.export, sha256: body.reward.sha256 },
  };
  return createHash('sha256').update(canonicalJson(portable)).digest('hex').slice(0, 16);
}

/** Recomputes a lock's id; a mismatch means the lock file was edited. */
export function verifyLockId(lock: RecipeLock): boolean {
  const { id, baseDir, createdAt: _c, ...body } = lock;
  return lockId(body, baseDir) === id;
}

/** A pipeline's lock: the pipeline recipe and a preliminary lock per stage (stages after the first pin their base when they start). */
export interface PipelineLock {
  id: string;
  lathe: string;
  backend: 'cpu' | 'wasm' | 'webgpu';
  /** The torch engine every stage trains on; absent for the tfjs engine. */
  engine?: EngineLock;
  /** The first stage's seed. */
  seed: number;
  recipe: ResolvedPipeline;
  stages: RecipeLock[];
  baseDir: string;
  createdAt: string;
}

/** A run directory's lock: one stage, or a pipeline. */
export type AnyLock = RecipeLock | PipelineLock;

/** True for a pipeline's lock. */
export function isPipelineLock(lock: AnyLock): lock is PipelineLock {
  return lock.recipe.stage === 'pipeline';
}

/** Locks a pipeline: every stage's data and reward hashed now; the first stage's base pinned (from the pipeline's `from`). */
export async function lockPipeline(
  pipeline: ResolvedPipeline,
  opts: Omit<LockOptions, 'deferBase'>,
): Promise<PipelineLock> {
  const stages: RecipeLock[] = [];
  for (const [i, st] of pipeline.stages.entries()) {
    const stage = { ...st, backend: opts.backend, resources: st.resources ?? pipeline.resources } as ResolvedRecipe;
    if (i === 0 && pipeline.from !== undefined) (stage as { from?: string }).from = pipeline.from;
    try {
      stages.push(await lockRecipe(stage, { ...opts, deferBase: i > 0 }));
    } catch (e) {
      if (e instanceof LatheError && !e.message.startsWith('stages['))
        throw new LatheError(`stages[${i}].${e.message}`, e.exitCode);
      throw e;
    }
  }
  const body = {
    lathe: VERSION,
    backend: opts.backend,
    engine: opts.engine,
    seed: stages[0]!.seed,
    recipe: pipeline,
    stages: stages.map((s) => s.id),
  };
  const id = createHash('sha256')
    .update(
      canonicalJson({
        ...body,
        recipe: {
          ...pipeline,
          from: undefined,
          resources: undefined,
          stages: pipeline.stages.map((st) => ({ ...st, resources: undefined })),
        },
        base: stages[0]!.base?.sha256,
      }),
    )
    .digest('hex')
    .slice(0, 16);
  return {
    id,
    lathe: VERSION,
    backend: opts.backend,
    engine: opts.engine,
    seed: body.seed,
    recipe: pipeline,
    stages,
    baseDir: opts.baseDir,
    createdAt: new Date().toISOString(),
  };
}
