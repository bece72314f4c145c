import { mkdir, readFile, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { tf } from '../backend/tf.js';
import type { SamplerState } from '../data/batches.js';
import { LatheError } from '../errors.js';
import type { LanguageModel } from '../model/model.js';
import type { AdamW } from '../train/optimizer.js';
import type { RunDir } from './rundir.js';
import {
  encodeSafetensors,
  f32,
  readSafetensors,
  toFloat32,
  writeFileAtomic,
  type StoredTensor,
} from './safetensors.js';

/** The JSON state beside a checkpoint's tensors: everything needed to continue to the bit. */
export interface CheckpointState {
  step: number;
  stage: string;
  lockId: string;
  optimizerStep: number;
  sampler: SamplerState;
  tokens: number;
  seconds: number;
  /** Extra stage state (e.g. RNG states of sampling stages). */
  extra?: Record<string, unknown>;
}

/** Tensors read back from a checkpoint, by name. */
export type Weights = Map<string, { shape: number[]; data: Float32Array }>;

async function tensorsOf(
  vars: Map<string, { shape: number[]; data(): Promise<unknown> }>,
): Promise<Map<string, StoredTensor>> {
  const out = new Map<string, StoredTensor>();
  for (const [name, v] of vars) out.set(name, f32(v.shape.slice(), (await v.data()) as Float32Array));
  return out;
}

/**
 * Writes checkpoints/<step>/ atomically: files go to a temp folder that is renamed into place,
 * so a crash leaves the previous checkpoint as the latest intact one.
 */
export async function saveCheckpoint(
  rd: RunDir,
  model: LanguageModel,
  opt: AdamW | undefined,
  state: CheckpointState,
): Promise<string> {
  const final = rd.checkpointPath(state.step);
  const tmp = join(rd.checkpointsDir, `.tmp-${state.step}-${process.pid}`);
  await rm(tmp, { recursive: true, force: true });
  await mkdir(tmp, { recursive: true });
  await writeFileAtomic(
    join(tmp, 'model.safetensors'),
    encodeSafetensors(await tensorsOf(model.params), { format: 'pt' }),
  );
  if (opt) {
    const moments = new Map<string, StoredTensor>();
    for (const [k, v] of await tensorsOf(opt.m)) moments.set(`m.${k}`, v);
    for (const [k, v] of await tensorsOf(opt.v)) moments.set(`v.${k}`, v);
    await writeFileAtomic(join(tmp, 'optimizer.safetensors'), encodeSafetensors(moments));
  }
  await writeFileAtomic(join(tmp, 'state.json'), JSON.stringify(state, null, 2) + '\n');
  await rm(final, { recursive: true, force: true });
  await rename(tmp, final);
  return final;
}

/** Reads a checkpoint folder: model weights, optimizer moments (if saved) and state. */
export async function loadCheckpoint(
  dir: string,
): Promise<{ weights: Weights; moments?: { m: Weights; v: Weights }; state: CheckpointState }> {
  let state: CheckpointState;
  try {
    state = JSON.parse(await readFile(join(dir, 'state.json'), 'utf8')) as CheckpointState;
  } catch (e) {
    throw new LatheError(`${dir}: not a readable checkpoint (${(e as Error).message})`);
  }
  const weights: Weights = new Map();
  for (const [k, t] of (await readSafetensors(join(dir, 'model.safetensors'))).tensors)
    weights.set(k, { shape: t.shape, data: toFloat32(t) });
  const opt = await readSafetensors(join(dir, 'optimizer.safetensors')).catch(() => undefined);
  let moments: { m: Weights; v: Weights } | undefined;
  if (opt) {
    moments = { m: new Map(), v: new Map() };
    for (const [k, t] of opt.tensors)
      (k.startsWith('m.') ? moments.m : moments.v).set(k.slice(2), { shape: t.shape, data: toFloat32(t) });
  }
  return { weights, moments, state };
}

/** Restores optimizer moments and step count from a checkpoint. */
export function restoreOptimizer(opt: AdamW, moments: { m: Weights; v: Weights }, step: number): void {
  for (const [which, src] of [
    [opt.m, moments.m],
    [opt.v, moments.v],
  ] as const) {
    for (const [name, variable] of which) {
      const w = src.get(name);
      if (!w) throw new LatheError(`checkpoint optimizer state lacks ${name}`);
      const t = tf.tensor(w.data, variable.shape);
      variable.assign(t);
      t.dispose();
    }
  }
  opt.t = step;
}
