/**
 * Run rooms: every run's metrics, events, evals and status in a yjs document, synced through a
 * y-websocket server so every collaborator sees the same live curve. See README.md in this folder for
 * the document layout, the URL/token design and how it sits behind Jupyter.
 *
 *   rooms.startRoomServer({ port, dataDir })      the server (`lathe rooms serve`)
 *   rooms.publishRun(run, { url, token })         a producer (kernel, worker); auto with LATHE_ROOMS_URL
 *   rooms.followRun(roomUrl, { token })           a Node follower: curve(), events(), for await (point)
 *   rooms.mintToken(secret, { room, role, ttl })  tokens; rooms.roomRef(runId) for the run MIME bundle
 */
import { defaultDataDir, loadSecret, readServerInfo } from './datadir.js';
import { autoPublish } from './auto.js';
import { roomForRun } from './schema.js';
import { mintToken, TOKEN_PARAM } from './token.js';
import type { RoomServer, RoomServerOptions } from './server.js';

export {
  runRoom,
  roomForRun,
  checkRoomName,
  readCurve,
  readKeyed,
  snapshot,
  eventKey,
  isEnded,
  ROOM_SCHEMA,
} from './schema.js';
export type { MetricEntry, EventEntry, EvalEntry, RoomMeta, RoomSnapshot, RunRoom, CancelRequest } from './schema.js';
export {
  mintToken,
  verifyToken,
  decodeToken,
  roomMatches,
  parseTtl,
  shareLink,
  parseRoomUrl,
  RoomAuthError,
  TOKEN_PARAM,
  type RoomGrant,
} from './token.js';
export { defaultDataDir, loadSecret, readServerInfo, type ServerInfo } from './datadir.js';
export { RoomStore, readLog } from './store.js';
export {
  connectRoom,
  followRun,
  RoomClient,
  RunFollower,
  setPresence,
  presenceList,
  colourFor,
  localUser,
  toWsUrl,
  type Presence,
  type RoomClientOptions,
} from './client.js';
export { publishRun, RunPublisher, type PublishOptions } from './publish.js';
export { autoPublish, autoPublishers, tokenMinter, roomsUrlResolver, type AutoPublishOptions } from './auto.js';
export type { RoomServer, RoomServerOptions } from './server.js';

/** Starts the room server in this process (loaded lazily: importing lathe does not load the server). */
export async function startRoomServer(opts: RoomServerOptions): Promise<RoomServer> {
  const { startRoomServer: start } = await import('./server.js');
  return start(opts);
}

/** Path of the rooms behind Jupyter, relative to its base URL (`ServerProxy.servers['lathe-rooms']`). */
export const JUPYTER_ROOMS_PATH = 'lathe-rooms';

/** What a run's MIME bundle carries so a browser can follow its room through Jupyter. */
export interface RoomRef {
  /** Room name, `run:<id>`. */
  name: string;
  /** WebSocket path relative to Jupyter's base URL: `lathe-rooms/run%3A<id>`. */
  path: string;
  /** Query parameter for the token: `room_token`. */
  param: string;
  /** A token for the room (read by default). */
  token: string;
  role: 'read' | 'write';
  /** Expiry of the token, ISO time. */
  expires: string;
  /** Direct ws:// URL of the server, when one is running (for Node clients on this machine). */
  url?: string;
}

/**
 * The "room to follow" for a run, with a token minted from the rooms secret (LATHE_ROOMS_SECRET or
 * `<LATHE_ROOMS_DIR>/secret`). The browser connects to `${baseUrl}${path}?${param}=${token}`.
 */
export function roomRef(
  runId: string,
  opts: { role?: 'read' | 'write'; ttl?: string | number; sub?: string; dataDir?: string; dir?: string } = {},
): RoomRef {
  const name = roomForRun(runId, opts.dir);
  const dataDir = opts.dataDir ?? defaultDataDir();
  const { secret } = loadSecret({ dataDir });
  const role = opts.role ?? 'read';
  const ttl = opts.ttl ?? '7d';
  const token = mintToken(secret, { room: name, role, ttl, sub: opts.sub });
  const exp = JSON.parse(Buffer.from(token.split('.')[1]!, 'base64url').toString()) as { exp: number };
  const server = readServerInfo(dataDir);
  return {
    name,
    path: `${JUPYTER_ROOMS_PATH}/${encodeURIComponent(name)}`,
    param: TOKEN_PARAM,
    token,
    role,
    expires: new Date(exp.exp * 1000).toISOString(),
    url: server ? `${server.url}/${encodeURIComponent(name)}` : undefined,
  };
}

// Runs publish themselves when the environment names a room server (see auto.ts).
if (process.env.LATHE_ROOMS_URL) autoPublish();
