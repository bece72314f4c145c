import { engineFromEnv, worldSize, type EngineRequest } from '../engine/select.js';
import { backendFromEnv, type BackendRequest, type EngineBackend } from '../engine/tfjs/backend.js';
import { TORCH_FIX, torchInfo } from '../engine/torch/process.js';
import { LatheError } from '../errors.js';
import { lockPipeline, lockRecipe, type AnyLock, type EngineLock } from '../recipe/lock.js';
import { resourcesFor } from '../recipe/resources.js';
import type { ResolvedPipeline, ResolvedRecipe } from '../recipe/schema.js';
import type { Pipeline, Recipe } from '../runs/recipe.js';
import { isWorkerPath, recipePathFields } from '../worker/paths.js';
import { withSteps, type RemoteLockOptions } from './worker.js';

// Locking for a worker that does not exist yet (Slurm, Kubernetes): the executor cannot ask it what
// it has, so the lock takes this machine's torch version (the nodes share the install or the image)
// and leaves CUDA to be checked where the job lands.

/** What an executor that starts its workers says about them. */
export interface AheadOptions {
  /** The tfjs backend a job's worker will use for a request. */
  backendFor(request: BackendRequest | undefined): EngineBackend;
  /** The torch device when a recipe names none: cuda where jobs get GPUs. */
  defaultDevice: 'cpu' | 'cuda';
  /** "Slurm" or "Kubernetes", for messages. */
  where: string;
}

/** The torch engine a job asks for (undefined: tfjs). */
export function engineAhead(request: EngineRequest, defaultDevice: 'cpu' | 'cuda'): EngineLock | undefined {
  if ((request.engine ?? 'tfjs') === 'tfjs') return undefined;
  const probe = torchInfo();
  if (!probe.info) throw new LatheError(`engine torch: ${probe.why}; ${TORCH_FIX}`, 2);
  return {
    kind: 'torch',
    device: request.device ?? defaultDevice,
    dtype: request.dtype ?? 'fp32',
    torch: probe.info.torch,
  };
}

/** Locks a recipe here for a worker an executor will start: backend or torch engine, resources, steps. */
export async function lockAhead(recipe: Recipe | Pipeline, opts: RemoteLockOptions, a: AheadOptions): Promise<AnyLock> {
  const env = engineFromEnv();
  const input = recipe.input as EngineRequest;
  const engine = engineAhead(
    {
      engine: opts.engine ?? env.engine ?? input.engine,
      device: opts.device ?? env.device ?? input.device,
      dtype: opts.dtype ?? env.dtype ?? input.dtype,
    },
    a.defaultDevice,
  );
  const backend = engine
    ? 'cpu'
    : a.backendFor(opts.backend ?? backendFromEnv() ?? (recipe.input as { backend?: BackendRequest }).backend);
  const resources = resourcesFor(opts, recipe.config.resources);
  if (worldSize(resources) > 1 && !engine)
    throw new LatheError(`resources: ${worldSize(resources)} ranks need the torch engine (--engine torch)`, 2);
  const named = engine ? { engine: 'torch' as const, device: engine.device, dtype: engine.dtype } : {};
  const config = withSteps(
    { ...recipe.config, backend, ...named, ...(resources ? { resources } : {}) } as ResolvedRecipe | ResolvedPipeline,
    opts.steps,
  );
  const bad = recipePathFields(config as unknown as Record<string, unknown>).find((f) => isWorkerPath(f.value));
  if (bad)
    throw new LatheError(
      `${bad.where}: worker: data is not supported through ${a.where} yet; name a file the job can read instead`,
    );
  return config.stage === 'pipeline'
    ? lockPipeline(config as ResolvedPipeline, { baseDir: recipe.baseDir, backend, engine })
    : lockRecipe(config as ResolvedRecipe, { baseDir: recipe.baseDir, backend, engine });
}
