/**
 * Room persistence: one append-only update log per room, `<dataDir>/logs/<encoded room>.ylog`.
 *
 * Layout: the 8-byte magic `LATHEYL1`, then frames of `u32le length` + one yjs update (v1). Every
 * update the server's doc sees is written with a synchronous write() before the next message is read,
 * so a `kill -9` loses nothing the kernel already accepted; a torn last frame (killed mid-write) is
 * ignored on load, and the producer resends what the server lacks on its next sync.
 *
 * On load the frames are merged into one update and the file is rewritten with that single frame
 * (compaction); while a room is open the log is compacted again every `compactEvery` frames.
 */
import { closeSync, existsSync, fsyncSync, openSync, readFileSync, readSync, renameSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import * as Y from 'yjs';
import { checkRoomName } from './schema.js';

const MAGIC = Buffer.from('LATHEYL1');

/** Origin used when the store applies history, so its own update listener does not write it back. */
const LOADING = Symbol('lathe-rooms-store-load');

interface OpenLog {
  fd: number;
  frames: number;
  doc: Y.Doc;
  listener: (update: Uint8Array, origin: unknown) => void;
}

/** Result of reading a log file. */
export interface LogRead {
  frames: Uint8Array[];
  /** Bytes at the end that did not form a whole frame (a torn write). */
  tornBytes: number;
}

/** Persists rooms' Y.Docs to append-only logs in a directory. */
export class RoomStore {
  readonly dir: string;
  private readonly compactEvery: number;
  private readonly log: (line: string) => void;
  private open = new Map<string, OpenLog>();

  constructor(dir: string, opts: { compactEvery?: number; log?: (line: string) => void } = {}) {
    this.dir = dir;
    this.compactEvery = opts.compactEvery ?? 10_000;
    this.log = opts.log ?? (() => {});
  }

  /** The log file of a room. */
  pathOf(room: string): string {
    return join(this.dir, `${encodeURIComponent(checkRoomName(room))}.ylog`);
  }

  /** Throws if the room's log exists but is not a room log (checks the magic only: cheap). */
  check(room: string): void {
    const path = this.pathOf(room);
    if (!existsSync(path)) return;
    const fd = openSync(path, 'r');
    try {
      const head = Buffer.alloc(MAGIC.length);
      const n = readSync(fd, head, 0, MAGIC.length, 0);
      if (n < MAGIC.length || !head.equals(MAGIC))
        throw new Error(`${path}: not a lathe room log (bad magic); move it away to start the room empty`);
    } finally {
      closeSync(fd);
    }
  }

  /** Reads a room's log frames (empty if it has none). */
  read(room: string): LogRead {
    return readLog(this.pathOf(room));
  }

  /** A room's persisted state as one update, or undefined if it was never written. */
  state(room: string): Uint8Array | undefined {
    const { frames } = this.read(room);
    return frames.length ? Y.mergeUpdates(frames) : undefined;
  }

  /**
   * Loads a room's history into `doc` (synchronously, so the first sync a client gets is complete),
   * compacts the log, and appends every later update of `doc` to it.
   */
  bind(room: string, doc: Y.Doc): void {
    if (this.open.has(room)) this.unbind(room);
    const path = this.pathOf(room);
    const { frames, tornBytes } = readLog(path);
    if (tornBytes)
      this.log(`room ${room}: ignored a torn last frame of ${tornBytes} bytes in ${path} (the producer resends it)`);
    if (frames.length) Y.applyUpdate(doc, Y.mergeUpdates(frames), LOADING);
    const fd = this.rewrite(path, doc);
    const entry: OpenLog = { fd, frames: 1, doc, listener: () => {} };
    entry.listener = (update, origin) => {
      if (origin === LOADING) return;
      writeFrame(entry.fd, update);
      if (++entry.frames > this.compactEvery) {
        closeSync(entry.fd);
        entry.fd = this.rewrite(path, doc);
        entry.frames = 1;
      }
    };
    doc.on('update', entry.listener);
    this.open.set(room, entry);
  }

  /** Stops logging a room and closes its file (its history stays on disk). */
  unbind(room: string): void {
    const entry = this.open.get(room);
    if (!entry) return;
    entry.doc.off('update', entry.listener);
    closeSync(entry.fd);
    this.open.delete(room);
  }

  /** Closes every open log. */
  close(): void {
    for (const room of [...this.open.keys()]) this.unbind(room);
  }

  /** Rooms whose log is open (bound to a live doc) now. */
  openRooms(): string[] {
    return [...this.open.keys()];
  }

  /** Writes the doc's whole state as a fresh one-frame log (atomic rename) and returns an append fd. */
  private rewrite(path: string, doc: Y.Doc): number {
    const tmp = `${path}.tmp`;
    const fd = openSync(tmp, 'w', 0o600);
    writeSync(fd, MAGIC);
    writeFrame(fd, Y.encodeStateAsUpdate(doc));
    fsyncSync(fd);
    closeSync(fd);
    renameSync(tmp, path);
    return openSync(path, 'a', 0o600);
  }
}

function writeFrame(fd: number, update: Uint8Array): void {
  const buf = Buffer.allocUnsafe(4 + update.length);
  buf.writeUInt32LE(update.length, 0);
  buf.set(update, 4);
  // One write per frame: a kill can tear only the last frame, never interleave two.
  writeSync(fd, buf);
}

/** Reads the frames of a log file; a missing file has none, a torn tail is reported, not thrown. */
export function readLog(path: string): LogRead {
  if (!existsSync(path)) return { frames: [], tornBytes: 0 };
  const buf = readFileSync(path);
  if (buf.length < MAGIC.length || !buf.subarray(0, MAGIC.length).equals(MAGIC)) {
    throw new Error(`${path}: not a lathe room log (bad magic); move it away to start the room empty`);
  }
  const frames: Uint8Array[] = [];
  let off = MAGIC.length;
  while (off + 4 <= buf.length) {
    const len = buf.readUInt32LE(off);
    if (off + 4 + len > buf.length) break;
    frames.push(new Uint8Array(buf.buffer, buf.byteOffset + off + 4, len));
    off += 4 + len;
  }
  return { frames, tornBytes: buf.length - off };
}
