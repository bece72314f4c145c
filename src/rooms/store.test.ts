import { appendFileSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import * as Y from 'yjs';
import { runRoom } from './schema.js';
import { readLog, RoomStore } from './store.js';

describe('room store', () => {
  it('logs every update, reloads them into a fresh doc, and compacts on load', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'lathe-store-'));
    const store = new RoomStore(dir);
    const doc = new Y.Doc();
    store.bind('run:a', doc);
    const { metrics } = runRoom(doc);
    for (let i = 0; i < 100; i++) metrics.push([{ seq: i, step: i + 1, stage: 'pretrain', loss: i }]);
    expect(readLog(store.pathOf('run:a')).frames.length).toBe(101); // the compacted empty state + 100 updates
    store.unbind('run:a');

    const again = new Y.Doc();
    store.bind('run:a', again);
    expect(
      runRoom(again)
        .metrics.toArray()
        .map((m) => m.seq),
    ).toEqual([...Array(100).keys()]);
    expect(readLog(store.pathOf('run:a')).frames.length).toBe(1);
    store.close();
  });

  it('ignores a torn last frame (a kill mid-write) and keeps the frames before it', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'lathe-store-'));
    const logs: string[] = [];
    const store = new RoomStore(dir, { log: (l) => logs.push(l) });
    const doc = new Y.Doc();
    store.bind('run:t', doc);
    for (let i = 0; i < 5; i++) runRoom(doc).metrics.push([{ seq: i, step: i + 1, stage: 'pretrain' }]);
    store.unbind('run:t');
    const path = store.pathOf('run:t');
    const size = statSync(path).size;
    appendFileSync(path, Buffer.from([200, 0, 0, 0, 1, 2, 3])); // claims 200 bytes, has 3
    expect(readLog(path)).toMatchObject({ tornBytes: 7 });
    const back = new Y.Doc();
    store.bind('run:t', back);
    expect(runRoom(back).metrics.length).toBe(5);
    expect(logs.join('\n')).toMatch(/torn last frame of 7 bytes/);
    expect(statSync(path).size).toBeLessThan(size + 7);
    store.close();
  });

  it('compacts a long log while the room is open', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'lathe-store-'));
    const store = new RoomStore(dir, { compactEvery: 50 });
    const doc = new Y.Doc();
    store.bind('run:c', doc);
    for (let i = 0; i < 120; i++) runRoom(doc).metrics.push([{ seq: i, step: i + 1, stage: 'pretrain' }]);
    expect(readLog(store.pathOf('run:c')).frames.length).toBeLessThanOrEqual(51);
    store.close();
    const back = new Y.Doc();
    Y.applyUpdate(back, new RoomStore(dir).state('run:c')!);
    expect(runRoom(back).metrics.length).toBe(120);
  });

  it('refuses a file that is not a room log, and room names that could escape the folder', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'lathe-store-'));
    const store = new RoomStore(dir);
    writeFileSync(store.pathOf('run:x'), 'hello');
    expect(() => store.bind('run:x', new Y.Doc())).toThrow(/not a lathe room log/);
    expect(() => store.pathOf('../etc')).toThrow(/not valid/);
    expect(() => store.pathOf('a/b')).toThrow(/not valid/);
    expect(readFileSync(store.pathOf('run:x'), 'utf8')).toBe('hello');
  });
});
