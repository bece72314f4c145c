import { stat } from 'node:fs/promises';
import { isAbsolute, resolve } from 'node:path';
import { glob } from 'tinyglobby';
import { LatheError } from '../errors.js';
import type { SourceConfig } from './schema.js';

const DATA_EXT = /\.(txt|jsonl|json|csv)$/i;

/** Expands a source's paths (files, folders, globs; relative to baseDir) into sorted absolute file paths. */
export async function resolveSourceFiles(
  source: Pick<SourceConfig, 'path'>,
  baseDir: string,
  where = 'data.sources',
): Promise<string[]> {
  const patterns = Array.isArray(source.path) ? source.path : [source.path];
  const files = new Set<string>();
  for (const [i, p] of patterns.entries()) {
    const at = Array.isArray(source.path) ? `${where}.path[${i}]` : `${where}.path`;
    const abs = isAbsolute(p) ? p : resolve(baseDir, p);
    const st = await stat(abs).catch(() => undefined);
    let found: string[];
    if (st?.isFile()) found = [abs];
    else if (st?.isDirectory())
      found = (await glob('**/*', { cwd: abs, absolute: true, onlyFiles: true })).filter((f) => DATA_EXT.test(f));
    else if (/[*?[{]/.test(p)) found = await glob(p, { cwd: baseDir, absolute: true, onlyFiles: true });
    else throw new LatheError(`${at}: ${p} does not exist (resolved to ${abs})`);
    if (!found.length) throw new LatheError(`${at}: ${p} matches no data files (.txt, .jsonl, .csv)`);
    for (const f of found) files.add(f);
  }
  return [...files].sort();
}
