import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import {
  appendFile,
  chmod,
  mkdir,
  open,
  readdir,
  readFile,
  rename,
  rm,
  stat,
  statfs,
  writeFile,
} from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';
import { sha256File } from '../hash.js';
import { MAX_UPLOAD_BYTES, MAX_UPLOAD_CHUNKS, MIN_CHUNK_BYTES, ProtocolError } from './protocol.js';

/** Where an upload stands: done, or which chunks the worker still lacks. */
export interface UploadStatus {
  sha256: string;
  complete: boolean;
  chunkBytes: number;
  chunks: number;
  missing: number[];
}

// What uploads/<sha>.json holds. Read back after a crash, so it is checked like any input.
const PartialSchema = z.strictObject({
  bytes: z.number().int().nonnegative().max(MAX_UPLOAD_BYTES),
  chunkBytes: z.number().int().min(MIN_CHUNK_BYTES),
});
type Partial = z.infer<typeof PartialSchema>;

/** How a BlobStore is set up beyond its folder and chunk size. */
export interface BlobStoreOptions {
  /** Free bytes on the store's disk (default: statfs); an upload larger than this is refused at begin. */
  freeBytes?: (dir: string) => Promise<number>;
}

/**
 * Datasets by content hash. A file is uploaded in chunks into uploads/<sha>.part, each chunk checked
 * against its own sha256 and recorded in uploads/<sha>.chunks once written, so an interrupted upload
 * resumes with only the chunks that are missing. The finished file is checked against its sha256 and
 * moved to blobs/<sha> (0400: nobody writes it again, and nobody else reads it); a mismatch discards it.
 * A partial upload outlives a crash of the worker and resumes the same way; `sweep` removes those
 * nobody came back for. Folders are 0700: uploaded data is the client's, not other local users'.
 */
export class BlobStore {
  readonly dir: string;
  private locks = new Map<string, Promise<unknown>>();

  constructor(
    dir: string,
    private readonly defaultChunkBytes: number,
    private readonly opts: BlobStoreOptions = {},
  ) {
    if (!Number.isInteger(defaultChunkBytes) || defaultChunkBytes < MIN_CHUNK_BYTES)
      throw new RangeError(`chunk size ${defaultChunkBytes}: at least ${MIN_CHUNK_BYTES} bytes`);
    this.dir = dir;
  }

  /** The stored file for a hash (it may not exist yet). */
  blobPath(sha256: string): string {
    return join(this.dir, 'blobs', sha256);
  }

  /** True when the worker holds the file with this hash. */
  has(sha256: string): boolean {
    return existsSync(this.blobPath(sha256));
  }

  private part(sha: string): { data: string; meta: string; chunks: string } {
    const p = join(this.dir, 'uploads', sha);
    return { data: `${p}.part`, meta: `${p}.json`, chunks: `${p}.chunks` };
  }

  // One operation per hash at a time: chunk writes and the final check must not interleave.
  private serial<T>(sha: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.locks.get(sha) ?? Promise.resolve();
    const next = prev.catch(() => {}).then(fn);
    this.locks.set(sha, next);
    void next.finally(() => this.locks.get(sha) === next && this.locks.delete(sha)).catch(() => {});
    return next;
  }

  // A torn or foreign record reads as no upload at all: the next begin starts it over.
  private async readPartial(sha: string): Promise<Partial | undefined> {
    const text = await readFile(this.part(sha).meta, 'utf8').catch(() => undefined);
    if (text === undefined) return undefined;
    try {
      const p = PartialSchema.parse(JSON.parse(text));
      return chunkCount(p) <= MAX_UPLOAD_CHUNKS ? p : undefined;
    } catch {
      return undefined;
    }
  }

  private async received(sha: string): Promise<Set<number>> {
    const text = await readFile(this.part(sha).chunks, 'utf8').catch(() => '');
    // A torn last line (killed mid-append) is simply not counted: that chunk is sent again.
    return new Set(
      text
        .split('\n')
        .filter((l) => /^\d+$/.test(l))
        .map(Number),
    );
  }

  /**
   * Starts or resumes an upload of `bytes` bytes with hash `sha256`. The size is checked before
   * anything is set aside for it: at most MAX_UPLOAD_CHUNKS chunks, and no more than the disk holds.
   */
  begin(sha256: string, bytes: number, chunkBytes?: number): Promise<UploadStatus> {
    return this.serial(sha256, async () => {
      if (this.has(sha256)) return { sha256, complete: true, chunkBytes: 0, chunks: 0, missing: [] };
      let p = await this.readPartial(sha256);
      if (p && p.bytes !== bytes) p = undefined; // same hash, other size: the old partial upload is bogus
      if (!p) {
        const cb = Math.max(MIN_CHUNK_BYTES, Math.min(chunkBytes ?? this.defaultChunkBytes, this.defaultChunkBytes));
        p = { bytes, chunkBytes: cb };
        await this.checkSize(p);
        const f = this.part(sha256);
        await mkdir(join(this.dir, 'uploads'), { recursive: true, mode: 0o700 });
        await rm(f.chunks, { force: true });
        await writeFile(f.data, '', { mode: 0o600 });
        await writeFile(f.meta, JSON.stringify(p), { mode: 0o600 });
      }
      const n = chunkCount(p);
      const have = await this.received(sha256);
      const missing: number[] = [];
      for (let i = 0; i < n; i++) if (!have.has(i)) missing.push(i);
      return { sha256, complete: false, chunkBytes: p.chunkBytes, chunks: n, missing };
    });
  }

  /** Writes one chunk after checking its index, size and sha256. */
  chunk(sha256: string, index: number, chunkSha256: string, payload: Buffer): Promise<void> {
    return this.serial(sha256, async () => {
      const p = await this.readPartial(sha256);
      if (!p)
        throw new ProtocolError(
          'bad-request',
          `upload.chunk: no upload of ${sha256.slice(0, 12)}… in progress; send upload.begin first`,
        );
      const n = chunkCount(p);
      if (index >= n)
        throw new ProtocolError('bad-request', `upload.chunk: index ${index} is past the last chunk (${n - 1})`);
      const want = index === n - 1 ? p.bytes - index * p.chunkBytes : p.chunkBytes;
      if (payload.length !== want)
        throw new ProtocolError(
          'bad-request',
          `upload.chunk: chunk ${index} has ${payload.length} bytes, expected ${want}`,
        );
      const got = createHash('sha256').update(payload).digest('hex');
      if (got !== chunkSha256)
        throw new ProtocolError(
          'sha-mismatch',
          `upload.chunk: chunk ${index} of ${sha256.slice(0, 12)}… has sha256 ${got.slice(0, 12)}…, not the ${chunkSha256.slice(0, 12)}… it claims; send it again`,
        );
      const f = this.part(sha256);
      const fh = await open(f.data, 'r+');
      try {
        await fh.write(payload, 0, payload.length, index * p.chunkBytes);
      } finally {
        await fh.close();
      }
      await appendFile(f.chunks, `${index}\n`, { mode: 0o600 });
    });
  }

  /** Finishes an upload: every chunk present and the whole file's sha256 right, else an error (a bad file is discarded). */
  end(sha256: string): Promise<{ bytes: number }> {
    return this.serial(sha256, async () => {
      if (this.has(sha256)) return { bytes: (await stat(this.blobPath(sha256))).size };
      const p = await this.readPartial(sha256);
      if (!p) throw new ProtocolError('bad-request', `upload.end: no upload of ${sha256.slice(0, 12)}… in progress`);
      const have = await this.received(sha256);
      const n = chunkCount(p);
      if (have.size < n)
        throw new ProtocolError(
          'bad-request',
          `upload.end: ${n - have.size} of ${n} chunks of ${sha256.slice(0, 12)}… are still missing`,
        );
      const f = this.part(sha256);
      const got = await sha256File(f.data);
      if (got.sha256 !== sha256 || got.bytes !== p.bytes) {
        await Promise.all([f.data, f.meta, f.chunks].map((x) => rm(x, { force: true })));
        throw new ProtocolError(
          'sha-mismatch',
          `upload.end: the uploaded file has sha256 ${got.sha256.slice(0, 12)}… (${got.bytes} bytes), not ${sha256.slice(0, 12)}… (${p.bytes} bytes); it was discarded`,
        );
      }
      await mkdir(join(this.dir, 'blobs'), { recursive: true, mode: 0o700 });
      await chmod(f.data, 0o400);
      await rename(f.data, this.blobPath(sha256));
      await Promise.all([rm(f.meta, { force: true }), rm(f.chunks, { force: true })]);
      return { bytes: p.bytes };
    });
  }

  private async checkSize(p: Partial): Promise<void> {
    const n = chunkCount(p);
    if (n > MAX_UPLOAD_CHUNKS)
      throw new ProtocolError(
        'bad-message',
        `upload.begin: field "bytes": ${p.bytes} bytes in chunks of ${p.chunkBytes} bytes make ${n} chunks; an upload has at most ${MAX_UPLOAD_CHUNKS} (this worker's chunks are ${this.defaultChunkBytes} bytes, so files up to ${MAX_UPLOAD_CHUNKS * this.defaultChunkBytes} bytes)`,
      );
    await mkdir(this.dir, { recursive: true, mode: 0o700 });
    const free = await (this.opts.freeBytes ?? diskFree)(this.dir);
    if (p.bytes > free)
      throw new ProtocolError(
        'bad-request',
        `upload.begin: field "bytes": ${p.bytes} bytes do not fit on the worker's disk (${free} bytes free)`,
      );
  }

  /**
   * Removes partial uploads nobody came back for: untouched for `maxAgeMs`, or cut off before their
   * record was written (not resumable). Run at start, before any upload begins.
   */
  async sweep(maxAgeMs: number, now = Date.now()): Promise<string[]> {
    const dir = join(this.dir, 'uploads');
    const names = await readdir(dir).catch(() => [] as string[]);
    const groups = new Map<string, string[]>();
    for (const n of names) {
      const sha = n.split('.')[0]!;
      groups.set(sha, [...(groups.get(sha) ?? []), n]);
    }
    const removed: string[] = [];
    for (const [sha, files] of groups) {
      const times = await Promise.all(
        files.map((n) =>
          stat(join(dir, n)).then(
            (s) => s.mtimeMs,
            () => 0,
          ),
        ),
      );
      const stale = now - Math.max(...times) > maxAgeMs;
      if (stale || !files.includes(`${sha}.json`)) {
        await Promise.all(files.map((n) => rm(join(dir, n), { force: true })));
        removed.push(sha);
      }
    }
    return removed;
  }
}

async function diskFree(dir: string): Promise<number> {
  const s = await statfs(dir);
  return s.bavail * s.bsize;
}

function chunkCount(p: Partial): number {
  return Math.ceil(p.bytes / p.chunkBytes);
}
