import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { relative, resolve } from 'node:path';
import { LatheError } from '../errors.js';
import { resolveSourceFiles } from '../data/files.js';
import { VERSION } from '../version.js';
import type { ResolvedRecipe } from './schema.js';

/** The fully resolved, hashed description of a run: what `recipe.lock.json` holds. */
export interface RecipeLock {
  /** Run identity: sha256 (hex, 16 chars) over everything below but baseDir and createdAt. */
  id: string;
  /** Lathe package version that made the lock. */
  lathe: string;
  /** Concrete tfjs backend (never "auto"). */
  backend: 'cpu' | 'wasm' | 'webgpu';
  seed: number;
  /** The recipe with every default filled in. */
  recipe: ResolvedRecipe;
  /** Every data file with its content hash, per source. */
  data: { source: string; files: { path: string; sha256: string; bytes: number }[] }[];
  /** The loaded tokenizer file, when the recipe names one. */
  tokenizer?: { path: string; sha256: string };
  /** Directory that relative paths in the recipe resolve against (not part of the identity). */
  baseDir: string;
  createdAt: string;
}

/** sha256 of a file, streamed. */
export async function sha256File(path: string): Promise<{ sha256: string; bytes: number }> {
  const h = createHash('sha256');
  let bytes = 0;
  for await (const chunk of createReadStream(path)) {
    h.update(chunk as Buffer);
    bytes += (chunk as Buffer).length;
  }
  return { sha256: h.digest('hex'), bytes };
}

/** JSON with sorted keys, so equal objects hash equally. */
export function canonicalJson(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(canonicalJson).join(',')}]`;
  if (v && typeof v === 'object') {
    const o = v as Record<string, unknown>;
    return `{${Object.keys(o)
      .filter((k) => o[k] !== undefined)
      .sort()
      .map((k) => `${JSON.stringify(k)}:${canonicalJson(o[k])}`)
      .join(',')}}`;
  }
  return JSON.stringify(v);
}

/** The name a source goes by in reports and metrics. */
export function sourceName(recipe: ResolvedRecipe, i: number): string {
  const s = recipe.data.sources[i]!;
  if (s.name) return s.name;
  const p = Array.isArray(s.path) ? s.path[0]! : s.path;
  const base = p.replace(/\/+$/, '').split('/').pop() ?? `source${i}`;
  return recipe.data.sources.filter((o) => !o.name).length > 1 ? `${i}:${base}` : base;
}

/** Resolves a validated recipe into a lock: hashes data files, pins version, backend and seed. */
export async function lockRecipe(recipe: ResolvedRecipe, opts: { baseDir: string; backend: 'cpu' | 'wasm' | 'webgpu' }): Promise<RecipeLock> {
  const data: RecipeLock['data'] = [];
  for (const [i, src] of recipe.data.sources.entries()) {
    const files = await resolveSourceFiles(src, opts.baseDir, `data.sources[${i}]`);
    const entries = [];
    for (const f of files) entries.push({ path: f, ...(await sha256File(f)) });
    data.push({ source: sourceName(recipe, i), files: entries });
  }
  let tokenizer: RecipeLock['tokenizer'];
  if (recipe.tokenizer.path) {
    const p = resolve(opts.baseDir, recipe.tokenizer.path);
    const hashed = await sha256File(p).catch(() => undefined);
    if (!hashed) throw new LatheError(`tokenizer.path: ${recipe.tokenizer.path} does not exist (resolved to ${p})`);
    tokenizer = { path: p, sha256: hashed.sha256 };
  }
  const body = { lathe: VERSION, backend: opts.backend, seed: recipe.seed, recipe, data, tokenizer };
  return { id: lockId(body, opts.baseDir), ...body, baseDir: opts.baseDir, createdAt: new Date().toISOString() };
}

function lockId(body: Omit<RecipeLock, 'id' | 'baseDir' | 'createdAt'>, baseDir: string): string {
  // Identity follows content, not where the files sit on this machine.
  const portable = {
    ...body,
    data: body.data.map((d) => ({ ...d, files: d.files.map((f) => ({ ...f, path: relative(baseDir, f.path) })) })),
    tokenizer: body.tokenizer && { sha256: body.tokenizer.sha256 },
  };
  return createHash('sha256').update(canonicalJson(portable)).digest('hex').slice(0, 16);
}

/** Recomputes a lock's id; a mismatch means the lock file was edited. */
export function verifyLockId(lock: RecipeLock): boolean {
  const { id, baseDir, createdAt: _c, ...body } = lock;
  return lockId(body, baseDir) === id;
}
