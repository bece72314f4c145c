import { existsSync } from 'node:fs';
import { mkdir, readdir, readFile, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { SamplerState } from '../data/batches.js';
import { LatheError } from '../errors.js';
import type { Weights } from '../model/weights.js';
import { sha256File } from '../hash.js';
import type { Metric, RunDir } from './rundir.js';
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
  /** sha256 of each tensor file, checked on load. */
  files?: Record<string, string>;
  /** Held-out loss at this step, when it was evaluated (retention keeps the best). */
  evalLoss?: number;
  /** The metric lines written since the previous checkpoint: a resume restores them if metrics.jsonl lost them. */
  metrics?: Metric[];
  /**
   * LoRA checkpoints: they hold adapter.safetensors (the adapters) instead of the model, and adapt
   * this base (sha256 as the lock pins it; `init` for the stage's fresh model under its seed).
   */
  lora?: { base: string };
}

/** A checkpoint whose files are missing, unreadable or not what its state.json recorded. */
export class CorruptCheckpoint extends LatheError {}

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

/** The tensor file of a LoRA checkpoint: the adapters by name, with their optimizer state beside. */
export const ADAPTER_FILE = 'adapter.safetensors';

/** Writes a LoRA checkpoint's tensor files into `dir`: adapter.safetensors and, with moments, optimizer.safetensors. */
export async function writeAdapterFiles(
  dir: string,
  adapters: Weights,
  moments?: { m: Weights; v: Weights },
): Promise<void> {
  await writeFileAtomic(join(dir, ADAPTER_FILE), encodeSafetensors(stored(adapters), { format: 'pt' }));
  if (moments) {
    const both = new Map([...stored(moments.m, 'm.'), ...stored(moments.v, 'v.')]);
    await writeFileAtomic(join(dir, 'optimizer.safetensors'), encodeSafetensors(both));
  }
}

/** Whether a checkpoint folder holds LoRA adapters rather than a whole model. */
export function isAdapterCheckpoint(dir: string): boolean {
  return existsSync(join(dir, ADAPTER_FILE));
}

/**
 * Writes checkpoints/<step>/ atomically: `writeTensors` fills a temp folder (an engine writes its
 * tensors there), their sha256 go into state.json, then the folder is renamed into place, so a
 * crash leaves the previous checkpoint as the latest intact one.
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
  const files: Record<string, string> = {};
  for (const f of (await readdir(tmp)).filter((n) => n.endsWith('.safetensors')).sort())
    files[f] = (await sha256File(join(tmp, f))).sha256;
  await writeFileAtomic(join(tmp, 'state.json'), JSON.stringify({ ...state, files }, null, 2) + '\n');
  await rm(final, { recursive: true, force: true });
  await rename(tmp, final);
  return final;
}

/** Reads a checkpoint's state.json. */
export async function readCheckpointState(dir: string): Promise<CheckpointState> {
  try {
    return JSON.parse(await readFile(join(dir, 'state.json'), 'utf8')) as CheckpointState;
  } catch (e) {
    throw new CorruptCheckpoint(`${dir}: not a readable checkpoint (${(e as Error).message})`);
  }
}

/** Checks a checkpoint's files against the sha256 its state recorded (checkpoints from before checksums pass). */
export async function verifyCheckpoint(dir: string, state?: CheckpointState): Promise<CheckpointState> {
  const s = state ?? (await readCheckpointState(dir));
  for (const [f, want] of Object.entries(s.files ?? {})) {
    const got = await sha256File(join(dir, f)).catch(() => undefined);
    if (!got) throw new CorruptCheckpoint(`${join(dir, f)}: missing`);
    if (got.sha256 !== want)
      throw new CorruptCheckpoint(
        `${join(dir, f)}: sha256 ${got.sha256.slice(0, 12)}… is not the recorded ${want.slice(0, 12)}… (the file changed or is damaged)`,
      );
  }
  return s;
}

/** A checkpoint's tensors: the model's weights, or (LoRA) its adapters; and the optimizer moments when saved. */
export type CheckpointTensors = (
  { weights: Weights; adapters?: undefined } | { adapters: Weights; weights?: undefined }
) & { moments?: { m: Weights; v: Weights } };

/** Reads the tensor files of a checkpoint folder (see {@link writeTensorFiles}, {@link writeAdapterFiles}). */
export async function readTensorFiles(dir: string): Promise<CheckpointTensors> {
  const lora = isAdapterCheckpoint(dir);
  const tensors: Weights = new Map();
  try {
    for (const [k, t] of (await readSafetensors(join(dir, lora ? ADAPTER_FILE : 'model.safetensors'))).tensors)
      tensors.set(k, { shape: t.shape, data: toFloat32(t) });
  } catch (e) {
    throw new CorruptCheckpoint((e as Error).message);
  }
  const opt = await readSafetensors(join(dir, 'optimizer.safetensors')).catch(() => undefined);
  let moments: { m: Weights; v: Weights } | undefined;
  if (opt) {
    moments = { m: new Map(), v: new Map() };
    for (const [k, t] of opt.tensors)
      (k.startsWith('m.') ? moments.m : moments.v).set(k.slice(2), { shape: t.shape, data: toFloat32(t) });
  }
  return lora ? { adapters: tensors, moments } : { weights: tensors, moments };
}

/** Reads a checkpoint folder, verified: model weights, optimizer moments (if saved) and state. */
export async function loadCheckpoint(dir: string): Promise<CheckpointTensors & { state: CheckpointState }> {
  const state = await verifyCheckpoint(dir);
  return { ...(await readTensorFiles(dir)), state };
}

/** The newest checkpoint (at most `upTo`) whose files verify, and the newer ones skipped as corrupt. */
export async function latestGoodCheckpoint(
  rd: RunDir,
  opts: { upTo?: number } = {},
): Promise<{ step?: number; skipped: { step: number; reason: string }[] }> {
  const skipped: { step: number; reason: string }[] = [];
  const steps = (await rd.checkpointSteps()).filter((s) => opts.upTo === undefined || s <= opts.upTo);
  for (const step of steps.reverse()) {
    try {
      await verifyCheckpoint(rd.checkpointPath(step));
      return { step, skipped };
    } catch (e) {
      if (!(e instanceof CorruptCheckpoint)) throw e;
      skipped.push({ step, reason: e.message });
    }
  }
  return { skipped };
}

/** Which checkpoints retention keeps (see CheckpointsSchema); defaults: the last 3 and the best. */
export interface Retention {
  keep: number;
  keepEvery: number;
  keepBest: boolean;
}

/**
 * Deletes the checkpoints retention does not keep: the last `keep`, multiples of `keepEvery`, and
 * the one with the lowest recorded eval loss stay. Each goes by an atomic rename to a `.trash-`
 * folder first, so a kill mid-delete never leaves a half checkpoint that looks whole. Returns the
 * steps deleted.
 */
export async function pruneCheckpoints(rd: RunDir, r: Retention): Promise<number[]> {
  const steps = await rd.checkpointSteps();
  const keep = new Set(steps.slice(-r.keep));
  if (r.keepEvery > 0) for (const s of steps) if (s % r.keepEvery === 0) keep.add(s);
  if (r.keepBest) {
    let best: { step: number; loss: number } | undefined;
    for (const s of steps) {
      const loss = (await readCheckpointState(rd.checkpointPath(s)).catch(() => undefined))?.evalLoss;
      if (typeof loss === 'number' && Number.isFinite(loss) && (!best || loss < best.loss)) best = { step: s, loss };
    }
    if (best) keep.add(best.step);
  }
  const gone = steps.filter((s) => !keep.has(s));
  for (const s of gone) {
    const trash = join(rd.checkpointsDir, `.trash-${s}-${process.pid}`);
    await rename(rd.checkpointPath(s), trash);
    await rm(trash, { recursive: true, force: true });
  }
  return gone;
}

/** Removes what a kill can leave in checkpoints/: half-written `.tmp-*` and half-deleted `.trash-*` folders. */
export async function removeOrphanCheckpoints(rd: RunDir): Promise<string[]> {
  const names = await readdir(rd.checkpointsDir).catch(() => [] as string[]);
  const orphans = names.filter((n) => n.startsWith('.tmp-') || n.startsWith('.trash-'));
  for (const n of orphans) await rm(join(rd.checkpointsDir, n), { recursive: true, force: true });
  return orphans;
}
