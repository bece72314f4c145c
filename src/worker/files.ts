import { createHash } from 'node:crypto';
import { createReadStream, existsSync } from 'node:fs';
import { readdir, rm } from 'node:fs/promises';
import { join, relative } from 'node:path';
import { exportHf } from '../export/hf.js';
import { modelRunDir } from '../recipe/base.js';
import { ProtocolError } from './protocol.js';
import type { Session, WorkerContext } from './session.js';

// The files a client may fetch from a job: its run directory (what is worth downloading of it), its
// latest checkpoint, or an HF export made on the worker. Sent as binary `file.chunk` frames, each file
// closed by `file.done` with its size and sha256, and the whole by a `fetched` reply.

/** What a fetch asks for. */
export type FetchWhat = 'run' | 'checkpoint' | 'export';

/** Streams a job's files to a client, one chunk in flight at a time (a slow client slows only itself). */
export async function sendJobFiles(
  ctx: WorkerContext,
  c: Session,
  re: number,
  job: string,
  what: FetchWhat,
): Promise<void> {
  const { queue } = ctx;
  const info = queue.get(job);
  if (!info) throw new ProtocolError('not-found', `fetch: no job "${job}" on this worker`, re);
  const dir = queue.runDir(job);
  if (!existsSync(join(dir, 'recipe.lock.json')))
    throw new ProtocolError('not-found', `fetch: job "${job}" has no run directory yet (it is ${info.status})`, re);
  let root = dir;
  let files: string[];
  if (what === 'export') {
    if (queue.live(job))
      throw new ProtocolError('bad-request', `fetch: job "${job}" is still training; export it when it has ended`, re);
    root = join(queue.jobDir(job), 'export-hf');
    if (!existsSync(join(root, 'config.json'))) {
      await rm(root, { recursive: true, force: true });
      await exportHf(dir, root);
    }
    files = await walk(root);
  } else files = await runFiles(dir, what);
  let bytes = 0;
  for (const rel of files) {
    const h = createHash('sha256');
    let offset = 0;
    for await (const chunk of createReadStream(join(root, rel), { highWaterMark: ctx.chunkBytes })) {
      const buf = chunk as Buffer;
      h.update(buf);
      await c.sendBinary({ type: 'file.chunk', re, path: rel, offset }, buf);
      offset += buf.length;
    }
    if (offset === 0) await c.sendBinary({ type: 'file.chunk', re, path: rel, offset: 0 }, new Uint8Array(0));
    await c.send({ type: 'file.done', re, path: rel, bytes: offset, sha256: h.digest('hex') });
    bytes += offset;
  }
  await c.send({ type: 'fetched', re, job, what, files: files.length, bytes });
}

/** Every file under a folder, relative to it, sorted (links and special files are left out). */
export async function walk(root: string, sub = ''): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(join(root, sub), { withFileTypes: true })) {
    const rel = sub ? join(sub, e.name) : e.name;
    if (e.isDirectory()) out.push(...(await walk(root, rel)));
    else if (e.isFile()) out.push(rel);
  }
  return out.sort();
}

/**
 * The files of a run directory worth downloading: lock, metrics, events, summary, the tokenizer and the
 * latest checkpoint of each run directory in it (a pipeline's stages too); or, for `checkpoint`, just
 * what loading the model needs.
 */
export async function runFiles(dir: string, what: 'run' | 'checkpoint'): Promise<string[]> {
  const all = await walk(dir);
  const runDirs = all.filter((f) => f.endsWith('recipe.lock.json')).map((f) => f.slice(0, -'recipe.lock.json'.length));
  const latest = new Set<string>();
  for (const rd of runDirs) {
    const steps = all
      .filter((f) => f.startsWith(`${rd}checkpoints/`))
      .map((f) => f.slice(`${rd}checkpoints/`.length).split('/')[0]!)
      .filter((s) => /^\d+$/.test(s))
      .map(Number);
    if (steps.length) latest.add(`${rd}checkpoints/${Math.max(...steps)}/`);
  }
  const keep = (f: string) => {
    const rd = runDirs.filter((r) => f.startsWith(r)).sort((a, b) => b.length - a.length)[0] ?? '';
    const rest = f.slice(rd.length);
    if (rest.startsWith('checkpoints/')) return [...latest].some((l) => f.startsWith(l));
    if (rest.startsWith('data/')) return rest === 'data/tokenizer.json';
    return !rest.startsWith('.') && !rest.includes('/.tmp');
  };
  const files = all.filter(keep);
  if (what === 'run') return files;
  const model = relative(dir, modelRunDir(dir));
  const pre = model ? `${model}/` : '';
  return files.filter(
    (f) =>
      f === 'recipe.lock.json' ||
      f === 'summary.json' ||
      (f.startsWith(pre) &&
        (f.slice(pre.length).startsWith('checkpoints/') ||
          f.slice(pre.length) === 'data/tokenizer.json' ||
          f.slice(pre.length) === 'recipe.lock.json')),
  );
}
