/**
 * Node clients of a room: `connectRoom` (a Y.Doc kept in sync with y-websocket's WebsocketProvider,
 * with presence) and `followRun` (the same, read as a run: its curve, events and live updates).
 * Used by tests, the benchmark, `lathe rooms follow`, and later the kernel.
 */
import { WebsocketProvider } from 'y-websocket';
import WebSocket from 'ws';
import * as decoding from 'lib0/decoding';
import * as Y from 'yjs';
import type { Awareness } from 'y-protocols/awareness';
import { LatheError } from '../errors.js';
import { MESSAGE_AUTH, MESSAGE_STATE, readPermissionDenied } from './protocol.js';
import {
  isEnded,
  readCurve,
  readKeyed,
  runRoom,
  type EvalEntry,
  type EventEntry,
  type MetricEntry,
  type RoomMeta,
  type RunRoom,
} from './schema.js';
import { parseRoomUrl, TOKEN_PARAM } from './token.js';

/** A collaborator's presence, kept in awareness under `user` (JupyterLab's field name) and `lathe`. */
export interface Presence {
  /** Awareness client id. */
  clientId?: number;
  name: string;
  color: string;
  /** producer (a kernel or worker publishing the run) or viewer. */
  role?: 'producer' | 'viewer';
  /** Set by the server from the token this client presented, never by the client: who the token was minted for. */
  sub?: string;
  /** Set by the server: what the client's token allows. */
  access?: 'read' | 'write';
}

/** Options shared by the Node room clients. */
export interface RoomClientOptions {
  /** Room token; default the URL's `room_token` parameter. */
  token?: string | (() => string);
  /** Room name, when the URL is the server base rather than `<base>/<room>`. */
  room?: string;
  /** Extra query parameters (e.g. Jupyter's `token` when going through Jupyter's proxy). */
  params?: Record<string, string>;
  /** Extra handshake headers (e.g. `Authorization: token <jupyter token>`). */
  headers?: Record<string, string>;
  /** Presence to announce; default a viewer named after $USER. */
  presence?: Partial<Presence> | null;
  /** Reconnect backoff ceiling, ms (y-websocket's maxBackoffTime). Default 2500. */
  maxBackoffMs?: number;
  /** Start connected. Default true. */
  connect?: boolean;
}

/** Colours for presence, picked by name so one person keeps one colour. */
const COLOURS = [
  '#e6194b',
  '#3cb44b',
  '#4363d8',
  '#f58231',
  '#911eb4',
  '#42d4f4',
  '#f032e6',
  '#bfef45',
  '#469990',
  '#9a6324',
];

/** A stable colour for a name. */
export function colourFor(name: string): string {
  let h = 0;
  for (const ch of name) h = (h * 31 + ch.charCodeAt(0)) >>> 0;
  return COLOURS[h % COLOURS.length]!;
}

/** Who this process is: LATHE_USER, JUPYTERHUB_USER or USER. */
export function localUser(env: NodeJS.ProcessEnv = process.env): string {
  return env.LATHE_USER || env.JUPYTERHUB_USER || env.USER || env.USERNAME || 'someone';
}

/** Announces a presence on an awareness. */
export function setPresence(awareness: Awareness, p: Partial<Presence>): void {
  const name = p.name ?? localUser();
  awareness.setLocalStateField('user', { name, color: p.color ?? colourFor(name) });
  awareness.setLocalStateField('lathe', { role: p.role ?? 'viewer' });
}

/** Everyone present in a room (this client included), by awareness client id. */
export function presenceList(awareness: Awareness): Presence[] {
  const out: Presence[] = [];
  for (const [clientId, state] of awareness.getStates()) {
    const user = (state as { user?: { name?: string; color?: string } }).user;
    if (!user?.name) continue;
    const lathe = (state as { lathe?: Pick<Presence, 'role' | 'sub' | 'access'> }).lathe;
    out.push({
      clientId,
      name: user.name,
      color: user.color ?? colourFor(user.name),
      role: lathe?.role,
      ...(lathe?.sub !== undefined && { sub: lathe.sub }),
      ...(lathe?.access !== undefined && { access: lathe.access }),
    });
  }
  return out;
}

/** Turns http(s) into ws(s), so a share link or a Jupyter URL can be passed as is. */
export function toWsUrl(url: string): string {
  return url.replace(/^http(s?):\/\//, 'ws$1://');
}

/** ws with fixed handshake headers, in the shape WebsocketProvider constructs. */
function socketClass(headers?: Record<string, string>): typeof globalThis.WebSocket {
  if (!headers || !Object.keys(headers).length) return WebSocket as unknown as typeof globalThis.WebSocket;
  class HeaderSocket extends WebSocket {
    constructor(url: string, protocols?: string | string[]) {
      super(url, protocols, { headers });
    }
  }
  return HeaderSocket as unknown as typeof globalThis.WebSocket;
}

/** A room kept in sync: its doc, provider and awareness, and why the server refused it, if it did. */
export class RoomClient {
  readonly room: string;
  readonly doc: Y.Doc;
  readonly provider: WebsocketProvider;
  readonly shared: RunRoom;
  /** The server's permission-denied reason (refused token, or a read-only write dropped). */
  denied?: string;
  /** Set when the server closed for good (close code 4400-4499). */
  closed?: { code: number; reason: string };
  private tokenSource?: string | (() => string);
  private stateWaiters: ((sv: Map<number, number>) => void)[] = [];
  private deniedWaiters: ((reason: string) => void)[] = [];

  constructor(url: string, opts: RoomClientOptions = {}) {
    const parsed = opts.room ? { base: url, room: opts.room, token: undefined, params: {} } : parseRoomUrl(url);
    this.room = parsed.room;
    this.tokenSource = opts.token ?? parsed.token;
    this.doc = new Y.Doc();
    this.shared = runRoom(this.doc);
    const params: Record<string, string> = { ...parsed.params, ...opts.params };
    const tok = this.currentToken();
    if (tok) params[TOKEN_PARAM] = tok;
    this.provider = new WebsocketProvider(toWsUrl(parsed.base), encodeURIComponent(this.room), this.doc, {
      connect: false,
      params,
      WebSocketPolyfill: socketClass(opts.headers),
      maxBackoffTime: opts.maxBackoffMs ?? 2500,
      // In-process clients of one room would otherwise sync over BroadcastChannel, around the server
      // (and around its authorization).
      disableBc: true,
    });
    // y-websocket adds a process 'exit' listener per provider (to clear its presence); the server
    // clears presence when the socket closes anyway, and many clients would trip MaxListeners.
    process.off('exit', (this.provider as unknown as { _exitHandler: () => void })._exitHandler);
    this.provider.messageHandlers[MESSAGE_AUTH] = (_enc, dec) => {
      const { reason, code } = readPermissionDenied(dec);
      this.denied = reason;
      for (const w of this.deniedWaiters.splice(0)) w(reason);
      if (code !== undefined && !this.closed) {
        // A refusal: stop here rather than reconnect forever (behind Jupyter's proxy the close code
        // itself never arrives).
        this.closed = { code, reason };
        this.provider.disconnect();
        this.provider.emit('closed', [{ code, reason }, this.provider]);
      }
    };
    this.provider.messageHandlers[MESSAGE_STATE] = (_enc, dec) => {
      const sv = Y.decodeStateVector(decoding.readVarUint8Array(dec));
      for (const w of this.stateWaiters.splice(0)) w(sv);
    };
    this.provider.on('closed', (e) => {
      this.closed ??= e;
    });
    // A token minted per connection (function) is refreshed before every reconnect.
    this.provider.on('connection-close', () => {
      const t = this.currentToken();
      if (t) this.provider.params[TOKEN_PARAM] = t;
    });
    if (opts.presence !== null) setPresence(this.provider.awareness, { ...opts.presence });
    if (opts.connect !== false) this.provider.connect();
  }

  /** The awareness (presence) of this room. */
  get awareness(): Awareness {
    return this.provider.awareness;
  }

  /** Everyone present now. */
  presence(): Presence[] {
    return presenceList(this.awareness);
  }

  /** Resolves once synced with the server; rejects if refused or after timeoutMs. */
  whenSynced(timeoutMs = 10_000): Promise<void> {
    if (this.provider.synced) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const done = (err?: Error) => {
        clearTimeout(timer);
        this.provider.off('sync', onSync);
        this.provider.off('closed', onClosed);
        if (err) reject(err);
        else resolve();
      };
      const onSync = (s: boolean) => s && done();
      const onClosed = (e: { code: number; reason: string }) =>
        done(new LatheError(`room ${this.room} refused (${e.code}): ${this.denied ?? e.reason}`));
      const timer = setTimeout(
        () =>
          done(
            new LatheError(
              `room ${this.room}: not synced within ${timeoutMs} ms${this.denied ? ` (${this.denied})` : ''}`,
            ),
          ),
        timeoutMs,
      );
      this.provider.on('sync', onSync);
      this.provider.on('closed', onClosed);
    });
  }

  /** Resolves with the next permission-denied reason the server sends. */
  nextDenied(timeoutMs = 10_000): Promise<string> {
    return new Promise((resolve, reject) => {
      const t = setTimeout(
        () => reject(new LatheError(`room ${this.room}: no permission-denied within ${timeoutMs} ms`)),
        timeoutMs,
      );
      this.deniedWaiters.push((r) => {
        clearTimeout(t);
        resolve(r);
      });
    });
  }

  /** Asks the server for its state vector (undefined if not connected or no answer within timeoutMs). */
  serverState(timeoutMs = 2000): Promise<Map<number, number> | undefined> {
    const ws = this.provider.ws;
    if (!ws || !this.provider.wsconnected) return Promise.resolve(undefined);
    return new Promise((resolve) => {
      const t = setTimeout(() => resolve(undefined), timeoutMs);
      this.stateWaiters.push((sv) => {
        clearTimeout(t);
        resolve(sv);
      });
      ws.send(new Uint8Array([MESSAGE_STATE]));
    });
  }

  /**
   * Resolves true once the server holds every update this client made, false after timeoutMs (server
   * down or refusing). Offline edits are kept and sent on reconnect either way.
   */
  async flush(timeoutMs = 10_000): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    const me = this.doc.clientID;
    for (;;) {
      const mine = Y.decodeStateVector(Y.encodeStateVector(this.doc)).get(me) ?? 0;
      if (mine === 0) return true;
      if (this.provider.synced) {
        const sv = await this.serverState(Math.max(1, Math.min(2000, deadline - Date.now())));
        if (sv && (sv.get(me) ?? 0) >= mine) return true;
      }
      if (Date.now() >= deadline || this.closed) return false;
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  /** Disconnects and releases the provider and doc. */
  close(): void {
    this.provider.destroy();
    this.doc.destroy();
  }

  private currentToken(): string | undefined {
    const t = this.tokenSource;
    return typeof t === 'function' ? t() : t;
  }
}

/** Connects to a room: `url` is `<server>/<room>[?room_token=…]`, or the server base with `opts.room`. */
export function connectRoom(url: string, opts: RoomClientOptions = {}): RoomClient {
  return new RoomClient(url, opts);
}

/** A room read as a run: the curve so far, events, and every new point as it arrives. */
export class RunFollower extends RoomClient {
  /** The curve: metric entries by seq, each once. */
  curve(): MetricEntry[] {
    return readCurve(this.shared.metrics);
  }

  /** Run events, in room order, each once. */
  events(): EventEntry[] {
    return readKeyed(this.shared.events);
  }

  /** Evaluation results. */
  evals(): EvalEntry[] {
    return readKeyed(this.shared.evals);
  }

  /** The run's meta (status, who started/cancelled it, …). */
  meta(): RoomMeta {
    return this.shared.meta.toJSON() as RoomMeta;
  }

  /** Calls fn after every change to the room; returns a function that unsubscribes. */
  onChange(fn: () => void): () => void {
    const h = () => fn();
    this.doc.on('update', h);
    return () => this.doc.off('update', h);
  }

  /** Resolves when pred(this) holds (checked now and after every change); rejects after timeoutMs. */
  waitFor(pred: (f: RunFollower) => boolean, timeoutMs = 10_000, what = 'condition'): Promise<void> {
    if (pred(this)) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const off = this.onChange(() => {
        if (!pred(this)) return;
        off();
        clearTimeout(t);
        resolve();
      });
      const t = setTimeout(() => {
        off();
        reject(
          new LatheError(
            `room ${this.room}: ${what} not reached within ${timeoutMs} ms (${this.curve().length} points, status ${this.meta().status ?? 'unknown'})`,
          ),
        );
      }, timeoutMs);
    });
  }

  /** Asks the run's producer to cancel it (needs a write token); recorded as cancelled by `by`. */
  requestCancel(by = localUser()): void {
    this.shared.control.set('cancel', { by, at: new Date().toISOString() });
  }

  /**
   * Every point in seq order: the whole curve so far, then live ones, ending when the producer marks
   * the run ended and every published point has been yielded (or when the follower is closed).
   */
  async *[Symbol.asyncIterator](): AsyncGenerator<MetricEntry> {
    const yielded = new Set<number>();
    let wake: (() => void) | undefined;
    const off = this.onChange(() => wake?.());
    const onClose = () => wake?.();
    this.provider.on('closed', onClose);
    try {
      for (;;) {
        const fresh = this.curve().filter((m) => !yielded.has(m.seq));
        for (const m of fresh) {
          yielded.add(m.seq);
          yield m;
        }
        const meta = this.meta();
        if (isEnded(meta) && yielded.size >= (meta.metricCount ?? 0)) return;
        if (this.closed)
          throw new LatheError(`room ${this.room} closed (${this.closed.code}): ${this.denied ?? this.closed.reason}`);
        await new Promise<void>((r) => (wake = r));
        wake = undefined;
      }
    } finally {
      off();
      this.provider.off('closed', onClose);
    }
  }
}

/**
 * Follows a run room: `roomUrl` is `ws://host:port/run:<id>?room_token=…` (or http(s), e.g. a share
 * link, or a Jupyter URL `…/lathe-rooms/run:<id>`). Iterate it for the curve and live points.
 */
export function followRun(roomUrl: string, opts: RoomClientOptions = {}): RunFollower {
  return new RunFollower(roomUrl, opts);
}
