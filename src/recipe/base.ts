import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { LatheError } from '../errors.js';
import { sha256File } from '../hash.js';
import { modelConfigOf, specFromHfConfig } from './hf-config.js';
import type { ModelConfig } from './schema.js';

// Where a post-training stage's starting model comes from (`from`): a Lathe run directory (its latest
// checkpoint; for a pipeline run, its last stage that has one) or a Hugging Face Llama/Mixtral folder.

/** A resolved, pinned starting model: what a lock records under `base` (and `judge` for a reward-model run). */
export interface BaseModelRef {
  kind: 'run' | 'hf';
  /** The run directory or HF folder, absolute. */
  path: string;
  /** Run bases: the pinned checkpoint folder (absolute) and its step. */
  checkpoint?: string;
  step?: number;
  /**
   * sha256 of the weights (run: the checkpoint's model.safetensors, or a LoRA run's
   * adapter.safetensors, whose own lock pins its base; HF: config.json and every .safetensors file).
   */
  sha256: string;
  /** The base model's architecture, as a recipe's model section. */
  model: ModelConfig;
  /** Its tokenizer.json, absolute. */
  tokenizer: string;
}

/** The run directory that holds a run's model: itself, or for a pipeline its last stage with a checkpoint. */
export function modelRunDir(dir: string): string {
  const lock = readLockJson(dir);
  if (lock?.recipe?.stage !== 'pipeline') return dir;
  const stagesDir = join(dir, 'stages');
  const subs = existsSync(stagesDir)
    ? readdirSync(stagesDir)
        .filter((n) => /^\d+-/.test(n))
        .sort((a, b) => parseInt(a, 10) - parseInt(b, 10))
    : [];
  for (const s of subs.reverse()) {
    const sub = join(stagesDir, s);
    if (checkpointSteps(sub).length) return sub;
  }
  throw new LatheError(`${dir}: pipeline has no stage with a checkpoint yet`);
}

function readLockJson(dir: string): { recipe?: { stage?: string; model?: ModelConfig } } | undefined {
  const p = join(dir, 'recipe.lock.json');
  if (!existsSync(p)) return undefined;
  try {
    return JSON.parse(readFileSync(p, 'utf8')) as { recipe?: { stage?: string; model?: ModelConfig } };
  } catch (e) {
    throw new LatheError(`${p}: cannot read the lock (${(e as Error).message})`);
  }
}

function checkpointSteps(dir: string): number[] {
  const c = join(dir, 'checkpoints');
  if (!existsSync(c)) return [];
  return readdirSync(c)
    .filter((n) => /^\d+$/.test(n) && existsSync(join(c, n, 'state.json')) && checkpointWeightsFile(join(c, n)))
    .map(Number)
    .sort((a, b) => a - b);
}

/** The tensor file that pins a checkpoint: model.safetensors, or a LoRA checkpoint's adapter.safetensors. */
export function checkpointWeightsFile(checkpoint: string): string | undefined {
  for (const f of ['model.safetensors', 'adapter.safetensors'])
    if (existsSync(join(checkpoint, f))) return join(checkpoint, f);
  return undefined;
}

/** sha256 over an HF folder's config.json and every .safetensors file (what a lock pins an HF base by). */
export async function hfFolderSha256(dir: string): Promise<string> {
  const { createHash } = await import('node:crypto');
  const h = createHash('sha256');
  for (const f of [
    'config.json',
    ...readdirSync(dir)
      .filter((n) => n.endsWith('.safetensors'))
      .sort(),
  ])
    h.update(`${f}:${(await sha256File(join(dir, f))).sha256}\n`);
  return h.digest('hex');
}

/** Resolves `from` (relative to baseDir) into a pinned base model; `where` names the recipe field in errors. */
export async function resolveBase(from: string, baseDir: string, where = 'from'): Promise<BaseModelRef> {
  const abs = resolve(baseDir, from);
  if (!existsSync(abs)) throw new LatheError(`${where}: ${from} does not exist (resolved to ${abs})`);
  if (!statSync(abs).isDirectory())
    throw new LatheError(`${where}: ${from} is a file; name a run directory or a Hugging Face model folder`);
  if (existsSync(join(abs, 'recipe.lock.json'))) {
    const dir = modelRunDir(abs);
    const lock = readLockJson(dir);
    const steps = checkpointSteps(dir);
    const step = steps.at(-1);
    if (step === undefined)
      throw new LatheError(`${where}: ${from} has no checkpoint yet; train it first (or resume it)`);
    if (!lock?.recipe?.model) throw new LatheError(`${where}: ${join(dir, 'recipe.lock.json')} has no model section`);
    const checkpoint = join(dir, 'checkpoints', String(step));
    const tokenizer = join(dir, 'data', 'tokenizer.json');
    if (!existsSync(tokenizer)) throw new LatheError(`${where}: ${from} has no data/tokenizer.json`);
    const { sha256 } = await sha256File(checkpointWeightsFile(checkpoint)!);
    return { kind: 'run', path: dir, checkpoint, step, sha256, model: lock.recipe.model, tokenizer };
  }
  if (existsSync(join(abs, 'config.json'))) {
    const configPath = join(abs, 'config.json');
    let cfg: unknown;
    try {
      cfg = JSON.parse(readFileSync(configPath, 'utf8'));
    } catch (e) {
      throw new LatheError(`${configPath}: invalid JSON (${(e as Error).message})`);
    }
    const { spec } = specFromHfConfig(cfg, configPath);
    const model = modelConfigOf(spec);
    const tokenizer = join(abs, 'tokenizer.json');
    if (!existsSync(tokenizer)) throw new LatheError(`${where}: ${from} has no tokenizer.json`);
    return { kind: 'hf', path: abs, sha256: await hfFolderSha256(abs), model, tokenizer };
  }
  throw new LatheError(
    `${where}: ${from} is neither a Lathe run directory (no recipe.lock.json) nor a Hugging Face model folder (no config.json)`,
  );
}
