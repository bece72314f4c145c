import { mkdir, readFile, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { SamplerState } from '../data/batches.js';
import { LatheError } from '../errors.js';
import type { Weights } from '../model/weights.js';
import type { RunDir } from './rundir.js';
import { encodeSafetensors, f32, readSafetensors, toFloat32, type StoredTensor } from '../model/safetensors.js';
import { writeFileAtomic } from './atomic.js';

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

export type { Weights };

function stored(w: Weights, prefix = ''): Map<string, StoredTensor> {
  const out = new Map<string, StoredTensor>();
  for (const [name, t] of w) out.set(prefix + name, f32(t.shape.slice(), t.data));
  return out;
}

/**
 * Writes a checkpoint's tensor files into `dir`: model.safetensors (HF names, metadata format pt)
 * and, with moments, optimizer.safetensors (`m.<name>`, `v.<name>`).
 */
export async function writeTensorFiles(
  dir: string,
  weights: Weights,
  moments?: { m: Weights; v: Weights },
): Promise<void> {
  await writeFileAtomic(join(dir, 'model.safetensors'), encodeSafetensors(stored(weights), { format: 'pt' }));
  if (moments) {
    const both = new Map([...stored(moments.m, 'm.'), ...stored(moments.v, 'v.')]);
    await writeFileAtomic(join(dir, 'optimizer.safetensors'), encodeSafetensors(both));
  }
}

/**
 * Writes checkpoints/<step>/ atomically: `writeTensors` fills a temp folder (an engine writes its
 * tensors there), then state.json, then the folder is renamed into place, so a crash leaves the
 * previous checkpoint as the latest intact one.
 */
export async function saveCheckpoint(
  rd: RunDir,
  state: CheckpointState,
  writeTensors: (dir: string) => Promise<void>,
): Promise<string> {
  const final = rd.checkpointPath(state.step);
  const tmp = join(rd.checkpointsDir, `.tmp-${state.step}-${process.pid}`);
  await rm(tmp, { recursive: true, force: true });
  await mkdir(tmp, { recursive: true });
  await writeTensors(tmp);
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
