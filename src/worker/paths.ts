import { existsSync } from 'node:fs';
import { link, mkdir, realpath, stat } from 'node:fs/promises';
import { dirname, isAbsolute, join, relative, resolve, sep } from 'node:path';
import { resolveSourceFiles } from '../recipe/files.js';
import { LatheError } from '../errors.js';
import { resolveModulePath } from '../eval/scorers.js';
import { isPipelineLock, type AnyLock, type RecipeLock } from '../recipe/lock.js';
import { sha256File } from '../hash.js';
import { ProtocolError, type ManifestEntry } from './protocol.js';
import type { BlobStore } from './store.js';

// Which files a job reads, and where they live on the worker. A recipe names client files (uploaded by
// content hash, then laid out under the job's inputs/ folder as they sat under the recipe's folder, so
// relative paths keep working) or `worker:<path>` files under the worker's --data-root, which never
// leave the cluster. Nothing a recipe says can make the worker read outside those two places.

/** Prefix of a path under the worker's --data-root, e.g. `worker:corpus/train.jsonl`. */
export const WORKER_PREFIX = 'worker:';

/** True for a `worker:` path. */
export function isWorkerPath(p: string): boolean {
  return p.startsWith(WORKER_PREFIX);
}

/** True when `p` is `root` or inside it (lexically). */
export function within(root: string, p: string): boolean {
  const rel = relative(root, p);
  return rel === '' || (rel !== '..' && !rel.startsWith('..' + sep) && !isAbsolute(rel));
}

/** A path-bearing field of a recipe: data, a single file, or a model folder (not sendable to a worker). */
export interface PathField {
  where: string;
  kind: 'data' | 'file' | 'scorer' | 'model';
  value: string;
  set(v: string): void;
  /** For a scorer module: the suite file it may sit beside. */
  suite?: string;
}

type Obj = Record<string, unknown>;
const obj = (v: unknown): Obj | undefined => (v && typeof v === 'object' && !Array.isArray(v) ? (v as Obj) : undefined);

/** Every path a recipe (a stage or a pipeline, resolved or as written) names, with a setter. */
export function recipePathFields(recipe: Obj, prefix = ''): PathField[] {
  const out: PathField[] = [];
  const field = (o: Obj | undefined, key: string, where: string, kind: PathField['kind'], suite?: string) => {
    if (o && typeof o[key] === 'string')
      out.push({ where: prefix + where, kind, value: o[key] as string, set: (v) => (o[key] = v), suite });
  };
  if (recipe.stage === 'pipeline') {
    field(recipe, 'from', 'from', 'model');
    for (const [i, st] of ((recipe.stages as Obj[] | undefined) ?? []).entries())
      out.push(...recipePathFields(st, `${prefix}stages[${i}].`));
    return out;
  }
  for (const [i, src] of ((obj(recipe.data)?.sources as Obj[] | undefined) ?? []).entries()) {
    if (Array.isArray(src.path)) {
      const arr = src.path as string[];
      arr.forEach((p, j) =>
        out.push({ where: `${prefix}data.sources[${i}].path[${j}]`, kind: 'data', value: p, set: (v) => (arr[j] = v) }),
      );
    } else field(src, 'path', `data.sources[${i}].path`, 'data');
  }
  const replay = obj(obj(recipe.data)?.replay);
  if (replay && Array.isArray(replay.path)) {
    const arr = replay.path as string[];
    arr.forEach((p, j) =>
      out.push({ where: `${prefix}data.replay.path[${j}]`, kind: 'data', value: p, set: (v) => (arr[j] = v) }),
    );
  } else field(replay, 'path', 'data.replay.path', 'data');
  field(obj(recipe.tokenizer), 'path', 'tokenizer.path', 'file');
  field(obj(recipe.reward), 'module', 'reward.module', 'file');
  field(obj(obj(recipe.judge)?.reward), 'module', 'judge.reward.module', 'file');
  field(obj(recipe.judge), 'model', 'judge.model', 'model');
  field(recipe, 'from', 'from', 'model');
  for (const [i, s] of ((obj(recipe.eval)?.suites as Obj[] | undefined) ?? []).entries()) {
    field(s, 'path', `eval.suites[${i}].path`, 'file');
    if (typeof s.path === 'string') field(obj(s.scorer), 'module', `eval.suites[${i}].scorer.module`, 'scorer', s.path);
  }
  return out;
}

/** A lock's stage locks: itself, or a pipeline's stages. */
export function stageLocks(lock: AnyLock): RecipeLock[] {
  return isPipelineLock(lock) ? lock.stages : [lock];
}

function refuseModel(f: PathField): never {
  throw new LatheError(
    `${f.where}: ${f.value} is a model folder; a worker cannot be sent one yet. Train the base on the worker in the same pipeline, or run this stage locally`,
  );
}

async function entry(path: string, sha?: string): Promise<ManifestEntry> {
  if (sha) return { path, sha256: sha, bytes: (await stat(path)).size };
  const h = await sha256File(path);
  return { path, sha256: h.sha256, bytes: h.bytes };
}

/**
 * The client files a recipe needs on a worker, hashed: data files (from the lock when given, else
 * resolved now), the tokenizer, reward modules, eval suites and scorer modules. `worker:` paths are
 * the worker's own and are skipped. Model folders (`from`, `judge.model`) are refused.
 */
export async function recipeFiles(
  recipe: Obj,
  baseDir: string,
  lockData?: RecipeLock['data'],
): Promise<ManifestEntry[]> {
  const out: ManifestEntry[] = [];
  for (const f of recipePathFields(recipe)) {
    if (isWorkerPath(f.value)) continue;
    if (f.kind === 'model') refuseModel(f);
    if (f.kind === 'data') {
      if (lockData) continue;
      for (const p of await resolveSourceFiles({ path: f.value }, baseDir, f.where)) out.push(await entry(p));
    } else if (f.kind === 'scorer') {
      out.push(await entry(resolveModulePath(f.value, baseDir, f.suite ? resolve(baseDir, f.suite) : undefined)));
    } else {
      const p = resolve(baseDir, f.value);
      if (!existsSync(p)) throw new LatheError(`${f.where}: ${f.value} does not exist (resolved to ${p})`);
      out.push(await entry(p));
    }
  }
  for (const src of lockData ?? [])
    for (const f of src.files) if (!isWorkerPath(f.path)) out.push({ path: f.path, sha256: f.sha256, bytes: f.bytes });
  return out;
}

/** The client files a lock needs on a worker (every stage's), deduplicated by path. */
export async function lockFiles(lock: AnyLock): Promise<ManifestEntry[]> {
  const all: ManifestEntry[] = [];
  if (isPipelineLock(lock)) {
    for (const f of recipePathFields(lock.recipe as unknown as Obj))
      if (f.kind === 'model' && !f.where.includes('stages[')) refuseModel(f);
  }
  for (const st of stageLocks(lock)) {
    if (st.base)
      throw new LatheError(
        `from: ${st.base.path} is a model folder; a worker cannot be sent one yet. Train the base on the worker in the same pipeline, or run this stage locally`,
      );
    if (st.judge)
      throw new LatheError(`judge.model: ${st.judge.path} is a model folder; a worker cannot be sent one yet`);
    all.push(...(await recipeFiles(st.recipe as unknown as Obj, st.baseDir, st.data)));
  }
  const seen = new Map<string, ManifestEntry>();
  for (const e of all) seen.set(e.path, e);
  return [...seen.values()];
}

/** How one job's paths map between the client and the worker. */
export interface Relocation {
  /** The lock's baseDir on the client. */
  clientBaseDir: string;
  /** The job's inputs folder on the worker (the lock's new baseDir). */
  inputs: string;
  /** The worker's --data-root, resolved through symlinks; undefined when it has none. */
  dataRoot?: string;
}

/**
 * Maps a path as the client wrote it to the worker: `worker:x` to <data-root>/x, a client file to
 * its place under inputs/ (below the client's baseDir: the same relative path; elsewhere: _abs/<path>),
 * a relative path to itself (it resolves against inputs/). Throws a `path` error for anything that
 * would leave data-root or inputs/.
 */
export function toWorker(p: string, r: Relocation, where: string): string {
  if (p.includes('\0')) throw new ProtocolError('path', `${where}: ${JSON.stringify(p)} contains a NUL byte`);
  if (isWorkerPath(p)) {
    const rel = p.slice(WORKER_PREFIX.length);
    if (!r.dataRoot)
      throw new ProtocolError(
        'path',
        `${where}: ${p} names the worker's data, but this worker was started without --data-root`,
      );
    if (isAbsolute(rel))
      throw new ProtocolError(
        'path',
        `${where}: ${p}: a worker: path is relative to the worker's --data-root, not absolute`,
      );
    const abs = resolve(r.dataRoot, rel);
    if (!within(r.dataRoot, abs)) throw new ProtocolError('path', `${where}: ${p} leaves the worker's --data-root`);
    return abs;
  }
  if (isAbsolute(p)) {
    const rel = relative(r.clientBaseDir, p);
    const mapped = within(r.clientBaseDir, p) ? join(r.inputs, rel) : join(r.inputs, '_abs', p);
    if (!within(r.inputs, mapped)) throw new ProtocolError('path', `${where}: ${p} leaves the job's inputs`);
    return mapped;
  }
  if (!within(r.inputs, resolve(r.inputs, p)))
    throw new ProtocolError(
      'path',
      `${where}: ${p} leaves the recipe's folder (relative paths may not climb out with ..)`,
    );
  return p;
}

/** The inverse of {@link toWorker}: a worker path as the client knows it (`worker:x`, or the client's file). */
export function toClient(p: string, r: Relocation): string {
  if (!isAbsolute(p)) return p;
  if (r.dataRoot && within(r.dataRoot, p)) return WORKER_PREFIX + relative(r.dataRoot, p);
  const abs = join(r.inputs, '_abs');
  if (within(abs, p)) return '/' + relative(abs, p);
  if (within(r.inputs, p)) return join(r.clientBaseDir, relative(r.inputs, p));
  return p;
}

/** Checks that a file under data-root really is there: its real path (symlinks followed) stays inside. */
export async function checkDataRootFile(p: string, r: Relocation, where: string): Promise<void> {
  const real = await realpath(p).catch(() => undefined);
  if (!real) throw new ProtocolError('missing-data', `${where}: ${toClient(p, r)} does not exist on the worker`);
  if (!r.dataRoot || !within(r.dataRoot, real))
    throw new ProtocolError('path', `${where}: ${toClient(p, r)} is a link that leaves the worker's --data-root`);
}

/** Maps a recipe field to the worker; a single `worker:` file (not a data pattern) is checked against data-root now. */
async function mapChecked(f: PathField, r: Relocation): Promise<string> {
  const mapped = toWorker(f.value, r, f.where);
  if (isWorkerPath(f.value) && f.kind !== 'data') await checkDataRootFile(mapped, r, f.where);
  return mapped;
}

/** Lays the uploaded files out under inputs/ (hard links to the blobs); every one must be uploaded. */
export async function placeFiles(
  files: ManifestEntry[],
  r: Relocation,
  store: BlobStore,
): Promise<Map<string, ManifestEntry>> {
  const byPath = new Map<string, ManifestEntry>();
  const missing = files.filter((f) => !store.has(f.sha256));
  if (missing.length) {
    throw new ProtocolError(
      'missing-data',
      `the worker lacks ${missing.length} file(s): ${missing
        .slice(0, 3)
        .map((f) => `${f.path} (sha256 ${f.sha256.slice(0, 12)}…)`)
        .join(', ')}; upload them first`,
    );
  }
  for (const f of files) {
    if (!isAbsolute(f.path) || isWorkerPath(f.path))
      throw new ProtocolError('path', `files: ${f.path}: expected the absolute path of a client file`);
    const target = toWorker(f.path, r, 'files');
    await mkdir(dirname(target), { recursive: true });
    if (!existsSync(target)) await link(store.blobPath(f.sha256), target);
    else if ((await stat(target)).ino !== (await stat(store.blobPath(f.sha256))).ino) {
      // Two names for one place (e.g. /a/x and /a/./x) with different contents: refuse rather than pick one.
      throw new ProtocolError(
        'bad-request',
        `files: ${f.path} lands where another file with other contents already is`,
      );
    }
    byPath.set(f.path, f);
  }
  return byPath;
}

/**
 * Rewrites a lock in client form for this worker: files placed under inputs/, every path mapped (and
 * checked), `worker:` data checked against data-root and its recorded sha256. Returns the worker's lock.
 */
export async function relocateLock(
  clientLock: AnyLock,
  files: ManifestEntry[],
  r: Relocation,
  store: BlobStore,
): Promise<AnyLock> {
  const lock = structuredClone(clientLock);
  const placed = await placeFiles(files, r, store);
  const need = (p: string, sha: string, where: string) => {
    const e = placed.get(p);
    if (!e || e.sha256 !== sha)
      throw new ProtocolError(
        'missing-data',
        `${where}: ${p} (sha256 ${sha.slice(0, 12)}…) is not among the uploaded files`,
      );
  };
  for (const [si, st] of stageLocks(lock).entries()) {
    const at = isPipelineLock(lock) ? `stages[${si}].` : '';
    if (st.base || st.judge)
      throw new ProtocolError(
        'bad-request',
        `${at}${st.base ? 'from' : 'judge.model'}: model folders cannot be sent to a worker`,
      );
    for (const [i, src] of st.data.entries()) {
      for (const [j, f] of src.files.entries()) {
        const where = `${at}data[${i}].files[${j}]`;
        if (isWorkerPath(f.path)) {
          const abs = toWorker(f.path, r, where);
          await checkDataRootFile(abs, r, where);
          const now = await sha256File(abs);
          if (now.sha256 !== f.sha256)
            throw new ProtocolError(
              'sha-mismatch',
              `${where}: ${f.path} changed on the worker since it was locked (sha256 ${now.sha256.slice(0, 12)}… ≠ ${f.sha256.slice(0, 12)}…)`,
            );
          f.path = abs;
        } else {
          need(f.path, f.sha256, where);
          f.path = toWorker(f.path, r, where);
        }
      }
    }
    if (st.tokenizer) {
      need(st.tokenizer.path, st.tokenizer.sha256, `${at}tokenizer`);
      st.tokenizer.path = toWorker(st.tokenizer.path, r, `${at}tokenizer`);
    }
    if (st.reward) {
      need(st.reward.path, st.reward.sha256, `${at}reward`);
      st.reward.path = toWorker(st.reward.path, r, `${at}reward`);
    }
    for (const f of recipePathFields(st.recipe as unknown as Obj, at)) f.set(await mapChecked(f, r));
    st.baseDir = r.inputs;
  }
  if (isPipelineLock(lock)) {
    for (const f of recipePathFields(lock.recipe as unknown as Obj)) f.set(await mapChecked(f, r));
    lock.baseDir = r.inputs;
  }
  return lock;
}

/**
 * Prepares a recipe that names `worker:` data for locking on the worker: maps every path, and
 * expands each `worker:` source pattern into the files it matches, each checked to stay inside
 * data-root (symlinks followed) before anything reads it.
 */
export async function workerRecipe(recipe: Obj, r: Relocation): Promise<Obj> {
  const out = structuredClone(recipe);
  const stages = out.stage === 'pipeline' ? ((out.stages as Obj[] | undefined) ?? []) : [out];
  for (const [si, st] of stages.entries()) {
    const at = out.stage === 'pipeline' ? `stages[${si}].` : '';
    for (const [i, src] of ((obj(st.data)?.sources as Obj[] | undefined) ?? []).entries()) {
      const patterns = Array.isArray(src.path) ? (src.path as string[]) : [src.path as string];
      const expanded: string[] = [];
      for (const [j, p] of patterns.entries()) {
        const where = `${at}data.sources[${i}].path${Array.isArray(src.path) ? `[${j}]` : ''}`;
        const mapped = toWorker(p, r, where);
        if (!isWorkerPath(p)) {
          expanded.push(mapped);
          continue;
        }
        const files = await resolveSourceFiles({ path: mapped }, r.dataRoot!, where).catch((e: Error) => {
          throw new ProtocolError('missing-data', e.message.split(mapped).join(p));
        });
        for (const f of files) await checkDataRootFile(f, r, where);
        // The checked files replace the pattern, so locking reads only those.
        expanded.push(...files);
      }
      src.path = expanded.length === 1 ? expanded[0] : expanded;
    }
  }
  for (const f of recipePathFields(out)) {
    if (f.kind === 'model') refuseModel(f);
    if (f.kind !== 'data') f.set(await mapChecked(f, r));
  }
  return out;
}

/** Rewrites a lock the worker made back into client form (the inverse of {@link relocateLock}). */
export function clientLock(workerLock: AnyLock, r: Relocation): AnyLock {
  const lock = structuredClone(workerLock);
  const back = (p: string) => toClient(p, r);
  const unmapRecipe = (rec: Obj) => {
    for (const f of recipePathFields(rec)) f.set(back(f.value));
    for (const src of (obj(rec.data)?.sources as Obj[] | undefined) ?? [])
      if (Array.isArray(src.path)) src.path = (src.path as string[]).map(back);
  };
  for (const st of stageLocks(lock)) {
    for (const src of st.data) for (const f of src.files) f.path = back(f.path);
    if (st.tokenizer) st.tokenizer.path = back(st.tokenizer.path);
    if (st.reward) st.reward.path = back(st.reward.path);
    unmapRecipe(st.recipe as unknown as Obj);
    st.baseDir = r.clientBaseDir;
  }
  if (isPipelineLock(lock)) {
    unmapRecipe(lock.recipe as unknown as Obj);
    lock.baseDir = r.clientBaseDir;
  }
  return lock;
}
