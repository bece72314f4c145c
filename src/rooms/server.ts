/**
 * The room server (`lathe rooms serve`): y-websocket's own server side (`setupWSConnection` from
 * @y/websocket-server) behind a token check, with each room persisted to an append-only log.
 *
 *   WebSocket  <base>/<room>?room_token=<token>   sync + awareness (y-websocket protocol, see protocol.ts)
 *   GET        <base>/<room>?room_token=<token>   the room as JSON (RoomSnapshot)
 *   GET        <base>/healthz                     { ok, rooms, rssMb, heapUsedMb } (jupyter-server-proxy probes /)
 *
 * A refused WebSocket gets an `auth / permission-denied` frame with the reason, then a close with code
 * 4401 (no, bad or expired token) / 4403 (token for another room) / 4400 (bad room name). Behind Jupyter's
 * proxy only the frame arrives (the proxy drops close codes), which is why it is sent. Read-only
 * connections sync and show presence; their updates are dropped before they reach the doc. Presence
 * (awareness) is vetted first (presence.ts): a connection speaks only for its own client ids, and its
 * states carry the identity of its token.
 *
 * @y/websocket-server keeps its rooms in a module-level map, so one process runs one room server.
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import type { Duplex } from 'node:stream';
import { docs, setPersistence, setupWSConnection, type WSSharedDoc } from '@y/websocket-server/utils';
import { WebSocketServer, type RawData, type WebSocket } from 'ws';
import * as Y from 'yjs';
import { LatheError } from '../errors.js';
import { ensureDataDir, clearServerInfo, loadSecret, writeServerInfo } from './datadir.js';
import { awarenessFrame, readAwarenessFrame, vetPresence } from './presence.js';
import { FrameError, inspectFrame, permissionDenied, stateAnswer } from './protocol.js';
import { checkRoomName, snapshot } from './schema.js';
import { RoomStore } from './store.js';
import { RoomAuthError, TOKEN_PARAM, verifyToken, type RoomGrant } from './token.js';

/** Options of {@link startRoomServer}. */
export interface RoomServerOptions {
  /** TCP port (0 picks a free one). Default 1234. */
  port?: number;
  /** Interface to bind. Default 127.0.0.1 (loopback only: Jupyter's proxy reaches it there). */
  host?: string;
  /** Data directory (secret, server.json, room logs). Default env LATHE_ROOMS_DIR or <package>/.lathe/rooms. */
  dataDir: string;
  /** Signing secret; default env LATHE_ROOMS_SECRET, else `<dataDir>/secret` (created on first start). */
  secret?: string;
  /** A file holding the secret, instead of the data dir's. */
  secretFile?: string;
  /** Compact a room's log after this many appended updates. Default 10000. */
  compactEvery?: number;
  /** Log sink, one line per connection, refusal and fault. Default stderr. */
  log?: (line: string) => void;
  /** Largest frame accepted, bytes. Default 64 MiB (a late joiner's step2 carries the whole room). */
  maxPayload?: number;
}

/** A running room server. */
export interface RoomServer {
  /** `ws://host:port` (rooms are `<url>/<room>`). */
  url: string;
  host: string;
  port: number;
  dataDir: string;
  /** Rooms loaded in memory now. */
  rooms(): string[];
  /** Closes every connection, flushes and closes the logs, removes server.json. */
  close(): Promise<void>;
}

let running = false;

/** Starts the room server; resolves once it listens. */
export async function startRoomServer(opts: RoomServerOptions): Promise<RoomServer> {
  if (running)
    throw new LatheError('a room server already runs in this process (@y/websocket-server keeps rooms per process)');
  const log = opts.log ?? ((line: string) => process.stderr.write(`lathe rooms: ${line}\n`));
  const dataDir = ensureDataDir(opts.dataDir);
  const { secret } = loadSecret({ dataDir, secret: opts.secret, secretFile: opts.secretFile, create: true });
  const store = new RoomStore(join(dataDir, 'logs'), { compactEvery: opts.compactEvery, log });

  setPersistence({
    provider: store,
    // Synchronous on purpose: setupWSConnection sends sync step 1 right after getYDoc returns, so the
    // history must already be in the doc or a client's first sync would look empty.
    bindState: (room: string, doc: WSSharedDoc) => store.bind(room, doc),
    // Called when a room's last connection closes; the library then destroys the doc.
    writeState: async (room: string) => store.unbind(room),
  });

  // Which connection introduced each awareness client id, per room.
  const owners: Owners = new Map();
  const wss = new WebSocketServer({ noServer: true, maxPayload: opts.maxPayload ?? 64 * 1024 * 1024 });
  const http = createServer((req, res) => handleHttp(req, res, { secret, store, log }));
  http.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    socket.on('error', () => {});
    const who = `${req.socket.remoteAddress ?? '?'}`;
    let room = '';
    let grant: RoomGrant | undefined;
    let refusal: { code: number; reason: string } | undefined;
    try {
      const u = new URL(req.url ?? '/', 'http://rooms');
      room = checkRoomName(decodeURIComponent(u.pathname.replace(/^\/+/, '').replace(/\/+$/, '')));
      grant = verifyToken(secret, u.searchParams.get(TOKEN_PARAM) ?? headerToken(req), room);
    } catch (e) {
      refusal = {
        code: e instanceof RoomAuthError ? e.code : 4400,
        reason: e instanceof Error ? e.message : String(e),
      };
    }
    wss.handleUpgrade(req, socket, head, (ws) => {
      if (refusal || !grant) {
        const r = refusal ?? { code: 4401, reason: 'refused' };
        log(`refused ${room || '(bad room)'} from ${who}: ${r.reason}`);
        ws.send(permissionDenied(r.reason, r.code));
        // Close reasons are limited to 123 bytes; the full reason went in the frame above.
        ws.close(r.code, Buffer.from(r.reason).subarray(0, 123).toString());
        return;
      }
      attach(ws, req, room, grant, log, store, owners);
    });
  });

  await new Promise<void>((resolve, reject) => {
    http.once('error', (e: NodeJS.ErrnoException) =>
      reject(
        new LatheError(
          e.code === 'EADDRINUSE'
            ? `port ${opts.port} is in use; pick another with --port`
            : `cannot listen: ${e.message}`,
        ),
      ),
    );
    http.listen(opts.port ?? 1234, opts.host ?? '127.0.0.1', () => resolve());
  });
  running = true;
  const addr = http.address() as AddressInfo;
  const host = opts.host ?? '127.0.0.1';
  const urlHost = host.includes(':') ? `[${host}]` : host === '0.0.0.0' ? '127.0.0.1' : host;
  const url = `ws://${urlHost}:${addr.port}`;
  writeServerInfo(dataDir, { url, host, port: addr.port, pid: process.pid, startedAt: new Date().toISOString() });

  return {
    url,
    host,
    port: addr.port,
    dataDir,
    rooms: () => [...docs.keys()],
    close: async () => {
      for (const c of wss.clients) c.terminate();
      await new Promise<void>((r) => http.close(() => r()));
      wss.close();
      store.close();
      for (const d of docs.values()) d.destroy();
      docs.clear();
      setPersistence(null);
      clearServerInfo(dataDir);
      running = false;
    },
  };
}

/** Header alternative to the query parameter, for Node clients that can set headers. */
function headerToken(req: IncomingMessage): string | undefined {
  const h = req.headers['x-lathe-room-token'];
  return Array.isArray(h) ? h[0] : h;
}

/** Per room: which connection introduced each awareness client id, and how many connections are open. */
type Owners = Map<string, { held: Map<number, WebSocket>; open: number }>;

/**
 * Hands an authorized socket to setupWSConnection, with every incoming frame checked first: malformed
 * frames are refused (close 1007), read-only updates dropped, presence vetted, the state query answered here.
 */
function attach(
  ws: WebSocket,
  req: IncomingMessage,
  room: string,
  grant: RoomGrant,
  log: (line: string) => void,
  store: RoomStore,
  owners: Owners,
): void {
  const who = `${grant.sub ?? 'anonymous'}@${req.socket.remoteAddress ?? '?'}`;
  try {
    // Before setupWSConnection: a log that fails to load there would leave a half-made doc behind.
    if (!docs.has(room)) store.check(room);
  } catch (e) {
    log(`room ${room}: cannot open: ${(e as Error).message}`);
    ws.close(1011, `lathe rooms: room ${room} cannot be loaded; see the server log`.slice(0, 123));
    return;
  }
  // setupWSConnection registers its own 'message' listener; capture it so frames pass our check first.
  const deliver: ((data: ArrayBuffer) => void)[] = [];
  const on = ws.on.bind(ws);
  (ws as unknown as { on: unknown }).on = (event: string, fn: (...a: unknown[]) => void) => {
    if (event === 'message') deliver.push(fn as (data: ArrayBuffer) => void);
    else on(event as 'close', fn as () => void);
    return ws;
  };
  try {
    setupWSConnection(ws, req, { docName: room, gc: true });
  } catch (e) {
    // The room's log could not be loaded (e.g. not a room log): refuse this room, keep serving others.
    log(`room ${room}: cannot open: ${(e as Error).message}`);
    ws.close(1011, `lathe rooms: room ${room} cannot be loaded; see the server log`.slice(0, 123));
    return;
  } finally {
    (ws as unknown as { on: unknown }).on = on;
  }
  log(`open ${room} ${grant.role} ${who}`);
  let deniedOnce = false;
  let forgedOnce = false;
  const presence = owners.get(room) ?? { held: new Map<number, WebSocket>(), open: 0 };
  owners.set(room, presence);
  presence.open++;
  const held = presence.held;
  ws.on('message', (data: RawData, isBinary: boolean) => {
    if (!isBinary) {
      log(`room ${room}: ${who} sent a text frame; y-websocket frames are binary. Closing.`);
      ws.close(1003, 'lathe rooms: binary y-websocket frames only');
      return;
    }
    const bytes = toBytes(data);
    let frame;
    try {
      frame = inspectFrame(bytes);
    } catch (e) {
      const reason = e instanceof FrameError ? e.message : String(e);
      log(`room ${room}: ${who} sent a bad frame (${reason}). Closing.`);
      ws.close(1007, `lathe rooms: ${reason}`.slice(0, 123));
      return;
    }
    switch (frame.kind) {
      case 'update':
        if (grant.role === 'read') {
          // An empty step2 is a read-only client's normal answer to the server's step1: not a write.
          if (!frame.empty && !deniedOnce) {
            deniedOnce = true;
            log(`room ${room}: dropped updates from read-only ${who}`);
            ws.send(permissionDenied(`room ${room}: this token is read-only; your changes are not saved`));
          }
          return;
        }
        break;
      case 'awareness': {
        const { accepted, refused } = vetPresence(readAwarenessFrame(bytes), grant, (id) => {
          const owner = held.get(id);
          return owner !== undefined && owner !== ws;
        });
        // y-websocket clients echo the states they receive, with the same clock: those change nothing
        // and are dropped quietly. Only an entry that would have taken effect is worth a line.
        const meta = docs.get(room)?.awareness.meta;
        const forged = refused.filter((e) => e.clock > (meta?.get(e.clientId)?.clock ?? 0));
        if (forged.length && !forgedOnce) {
          forgedOnce = true;
          log(
            `room ${room}: dropped presence ${who} sent for client ids it does not hold (${forged.map((e) => e.clientId).join(', ')})`,
          );
        }
        if (!accepted.length) return;
        for (const e of accepted) {
          if (e.state === null) held.delete(e.clientId);
          else held.set(e.clientId, ws);
        }
        deliverFrame(awarenessFrame(accepted));
        // The library counts an id as this connection's only the first time it is seen; a client back
        // with the same id would stay present after it left. Its presence leaves with its socket.
        const mine = docs.get(room)?.conns.get(ws);
        for (const e of accepted) if (e.state !== null) mine?.add(e.clientId);
        return;
      }
      case 'state-query': {
        const doc = docs.get(room);
        if (doc) ws.send(stateAnswer(doc));
        return;
      }
      case 'unknown':
        log(`room ${room}: ${who} sent unknown message type ${frame.type}; ignored`);
        return;
      default:
        break;
    }
    deliverFrame(bytes);
  });
  function deliverFrame(bytes: Uint8Array): void {
    const buf = bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength) as ArrayBuffer;
    for (const f of deliver) f(buf);
  }
  ws.on('close', (code: number) => {
    for (const [id, owner] of held) if (owner === ws) held.delete(id);
    if (--presence.open === 0) owners.delete(room);
    log(`close ${room} ${who} (${code})`);
  });
}

function toBytes(data: RawData): Uint8Array {
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  if (Array.isArray(data)) return new Uint8Array(Buffer.concat(data));
  return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
}

/** GET /healthz, GET /<room>?room_token= (JSON snapshot); everything else is 404 with a hint. */
function handleHttp(
  req: IncomingMessage,
  res: ServerResponse,
  ctx: { secret: string; store: RoomStore; log: (line: string) => void },
): void {
  const send = (status: number, body: unknown) => {
    res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store' });
    res.end(JSON.stringify(body));
  };
  try {
    const u = new URL(req.url ?? '/', 'http://rooms');
    const path = u.pathname.replace(/^\/+/, '').replace(/\/+$/, '');
    if (req.method !== 'GET' && req.method !== 'HEAD')
      return send(405, { error: 'only GET; rooms sync over WebSocket' });
    if (path === '' || path === 'healthz') {
      const m = process.memoryUsage();
      return send(200, {
        ok: true,
        service: 'lathe rooms',
        rooms: docs.size,
        rssMb: Math.round(m.rss / 1e5) / 10,
        heapUsedMb: Math.round(m.heapUsed / 1e5) / 10,
      });
    }
    const room = checkRoomName(decodeURIComponent(path));
    verifyToken(ctx.secret, u.searchParams.get(TOKEN_PARAM) ?? headerToken(req), room);
    const live = docs.get(room);
    if (live) return send(200, snapshot(live, room));
    const state = ctx.store.state(room);
    if (!state) return send(404, { error: `room ${room} has no history` });
    const doc = new Y.Doc();
    Y.applyUpdate(doc, state);
    const body = snapshot(doc, room);
    doc.destroy();
    return send(200, body);
  } catch (e) {
    if (e instanceof RoomAuthError) {
      ctx.log(`refused GET ${req.url?.split('?')[0]}: ${e.message}`);
      return send(e.code === 4403 ? 403 : 401, { error: e.message });
    }
    if (e instanceof LatheError) return send(400, { error: e.message });
    ctx.log(`GET ${req.url?.split('?')[0]} failed: ${(e as Error).message}`);
    return send(500, { error: (e as Error).message });
  }
}
