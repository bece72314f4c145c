// Run rooms in the browser: a run's yjs document (metrics, events, status) synced through Jupyter's
// proxy (`<base>lathe-rooms/<room>`, authenticated by Jupyter's cookie plus the room's read token),
// so every collaborator's chart shows the whole curve, live, even when the kernel's display updates
// stop reaching them (a disconnected author: jupyterlab#2833). Presence rides on yjs awareness.
import { PageConfig } from '@jupyterlab/coreutils';
import * as decoding from 'lib0/decoding';
import { WebsocketProvider } from 'y-websocket';
import * as Y from 'yjs';
import type { MetricLine } from './chart';

/** What the kernel puts in the run MIME data (`rooms.roomRef` in the core). */
export interface RoomRef {
  name: string;
  path: string;
  param: string;
  token: string;
  role: string;
  expires?: string;
}

/** Someone in a room: JupyterLab's identity name and colour. */
export interface Presence {
  name: string;
  color: string;
  role?: string;
}

let identity: Presence = { name: 'anonymous', color: '#888888' };
const rooms = new Map<string, RunRoom>();

/** Sets who this browser is in every room (the plugin calls it with JupyterLab's current user). */
export function setIdentity(p: Presence): void {
  identity = p;
  for (const r of rooms.values()) r.provider.awareness.setLocalStateField('user', p);
}

export function currentIdentity(): Presence {
  return identity;
}

/** One shared connection per room, however many outputs and panels show it. */
export function joinRoom(ref: RoomRef): RunRoom {
  let r = rooms.get(ref.name);
  if (!r || r.closed) rooms.set(ref.name, (r = new RunRoom(ref)));
  return r;
}

/** Entries of an append-only array, sorted by `seq` (or first-seen `key`), repeats dropped. */
export function dedupeBySeq<T extends { seq?: number }>(items: readonly T[]): T[] {
  const seen = new Set<number>();
  const out: T[] = [];
  for (const it of [...items].sort((a, b) => (a.seq ?? 0) - (b.seq ?? 0))) {
    if (typeof it.seq !== 'number' || seen.has(it.seq)) continue;
    seen.add(it.seq);
    out.push(it);
  }
  return out;
}

export class RunRoom {
  readonly doc = new Y.Doc();
  readonly provider: WebsocketProvider;
  /** Why the server refused us, when it did (wrong or expired token). */
  refused: string | null = null;
  closed = false;
  private readonly listeners = new Set<() => void>();
  private scheduled = false;

  constructor(readonly ref: RoomRef) {
    const base = new URL(PageConfig.getBaseUrl(), window.location.href);
    base.protocol = base.protocol === 'https:' ? 'wss:' : 'ws:';
    const server = new URL(ref.path.split('/').slice(0, -1).join('/'), base).href;
    this.provider = new WebsocketProvider(server, encodeURIComponent(ref.name), this.doc, {
      params: { [ref.param]: ref.token },
      connect: false,
    });
    // A permission-denied frame carrying a close code is a refusal (Jupyter's proxy drops close codes):
    // stop, instead of y-websocket's retry every 2.5 s; without a code it only says "read-only".
    this.provider.messageHandlers[2] = (_enc, decoder: decoding.Decoder) => {
      decoding.readVarUint(decoder);
      const reason = decoding.readVarString(decoder);
      if (decoding.hasContent(decoder)) {
        this.refused = reason;
        this.provider.disconnect();
        this.notify();
      }
    };
    this.provider.awareness.setLocalStateField('user', identity);
    this.provider.awareness.on('change', () => this.notify());
    this.doc.on('update', () => this.notify());
    this.provider.connect();
  }

  /** Calls fn (at most once a frame) whenever the room's data or presence changes. */
  onChange(fn: () => void): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  private notify(): void {
    if (this.scheduled) return;
    this.scheduled = true;
    requestAnimationFrame(() => {
      this.scheduled = false;
      for (const l of this.listeners) l();
    });
  }

  get synced(): boolean {
    return this.provider.synced;
  }

  /** The curve so far, in order, each point once. */
  metrics(): MetricLine[] {
    return dedupeBySeq(this.doc.getArray<MetricLine & { seq?: number }>('metrics').toArray()).map(
      ({ seq: _s, ...m }) => m as MetricLine,
    );
  }

  meta(): Record<string, unknown> {
    return this.doc.getMap('meta').toJSON();
  }

  /** Everyone here now (this browser included), by client id. */
  presence(): Presence[] {
    const out: Presence[] = [];
    for (const [, s] of this.provider.awareness.getStates()) {
      const u = (s as { user?: Presence; lathe?: { role?: string } }).user;
      if (u?.name)
        out.push({
          name: u.name,
          color: u.color ?? '#888',
          role: (s as { lathe?: { role?: string } }).lathe?.role ?? u.role,
        });
    }
    return out;
  }

  close(): void {
    this.closed = true;
    this.provider.destroy();
    this.doc.destroy();
    rooms.delete(this.ref.name);
  }
}
