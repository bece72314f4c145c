import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, readdir, stat, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { scratch } from '../../test/helpers.js';
import { MAX_UPLOAD_CHUNKS } from './protocol.js';
import { BlobStore } from './store.js';

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

describe('BlobStore', () => {
  it('bounds an upload before setting anything aside: the chunk count and the free disk, each error naming the field', async () => {
    const dir = await scratch('lathe-store-');
    const store = new BlobStore(dir, 1024, { freeBytes: async () => 10_000 });
    const s = 'b'.repeat(64);
    await expect(store.begin(s, 1024 * MAX_UPLOAD_CHUNKS + 1)).rejects.toMatchObject({
      code: 'bad-message',
      message: expect.stringMatching(
        /^upload\.begin: field "bytes": .* make 1048577 chunks; an upload has at most 1048576/,
      ),
    });
    await expect(store.begin(s, 10_001)).rejects.toMatchObject({
      code: 'bad-request',
      message: 'upload.begin: field "bytes": 10001 bytes do not fit on the worker\'s disk (10000 bytes free)',
    });
    expect(existsSync(join(dir, 'uploads'))).toBe(false);
    // A chunk size below the floor is raised to it, not trusted.
    const st = await store.begin(s, 5000, 1);
    expect(st).toMatchObject({ chunkBytes: 1024, chunks: 5, missing: [0, 1, 2, 3, 4] });
    expect(() => new BlobStore(dir, 1)).toThrow(/at least 1024/);
  });

  it('resumes a partial upload from its record; a torn or hostile record starts it over; a finished blob is 0400 in a 0700 folder', async () => {
    const dir = await scratch('lathe-store-');
    const data = Buffer.alloc(3000, 7);
    const s = sha(data);
    const store = new BlobStore(dir, 1024);
    await store.begin(s, data.length);
    await store.chunk(s, 1, sha(data.subarray(1024, 2048)), data.subarray(1024, 2048));
    // As a restarted worker finds it: a new store on the same folder.
    const again = new BlobStore(dir, 1024);
    expect(await again.begin(s, data.length)).toMatchObject({ chunks: 3, missing: [0, 2] });
    // A record claiming a billion chunks (written by hand, or torn) is not believed: the upload starts over.
    await writeFile(join(dir, 'uploads', `${s}.json`), JSON.stringify({ bytes: 2 ** 40, chunkBytes: 1024 }));
    expect(await again.begin(s, data.length)).toMatchObject({ chunks: 3, missing: [0, 1, 2] });
    await writeFile(join(dir, 'uploads', `${s}.json`), '{"bytes": 30');
    expect(await again.begin(s, data.length)).toMatchObject({ chunks: 3, missing: [0, 1, 2] });
    for (let i = 0; i < 3; i++) {
      const part = data.subarray(i * 1024, (i + 1) * 1024);
      await again.chunk(s, i, sha(part), part);
    }
    expect(await again.end(s)).toEqual({ bytes: 3000 });
    expect((await stat(again.blobPath(s))).mode & 0o777).toBe(0o400);
    expect((await stat(join(dir, 'blobs'))).mode & 0o777).toBe(0o700);
    expect((await stat(join(dir, 'uploads'))).mode & 0o777).toBe(0o700);
  });

  it('sweep removes partial uploads untouched for too long, and those cut off before their record; it keeps the rest', async () => {
    const dir = await scratch('lathe-store-');
    const uploads = join(dir, 'uploads');
    await mkdir(uploads);
    const [fresh, stale, orphan] = ['1', '2', '3'].map((c) => c.repeat(64));
    for (const s of [fresh, stale]) {
      await writeFile(join(uploads, `${s}.part`), 'x');
      await writeFile(join(uploads, `${s}.json`), JSON.stringify({ bytes: 1, chunkBytes: 1024 }));
    }
    await writeFile(join(uploads, `${orphan!}.part`), '');
    const now = Date.now();
    const old = new Date(now - 8 * 24 * 3600 * 1000);
    for (const f of await readdir(uploads)) if (f.startsWith(stale!)) await utimes(join(uploads, f), old, old);
    const removed = await new BlobStore(dir, 1024).sweep(7 * 24 * 3600 * 1000, now);
    expect(removed.sort()).toEqual([stale, orphan].sort());
    expect((await readdir(uploads)).sort()).toEqual([`${fresh!}.json`, `${fresh!}.part`]);
  });
});
