/**
 * Room tokens: `lr1.<payload>.<signature>`, both base64url; the payload is JSON
 * `{ room, role, exp, sub? }` and the signature is HMAC-SHA256 of `lr1.<payload>` with the server's
 * secret. `room` is a room name or a pattern (`*`, or a prefix ending in `*` such as `run:*`); `role`
 * is `write` (sync and edit) or `read` (sync only: the server drops every update it sends); `exp` is
 * the expiry in Unix seconds. Anyone holding the secret can mint tokens; see README.md for who does.
 */
import { createHmac, timingSafeEqual } from 'node:crypto';
import { LatheError } from '../errors.js';

/** What a token grants. */
export interface RoomGrant {
  /** Room name or pattern (`*`, `run:*`, `run:abc`). */
  room: string;
  role: 'read' | 'write';
  /** Expiry, Unix seconds. */
  exp: number;
  /** Who it was minted for (shown in the server log and used as a default presence name). */
  sub?: string;
}

/** A refused token: `code` is the WebSocket close code the server uses (4401 bad/expired, 4403 wrong room or role). */
export class RoomAuthError extends LatheError {
  readonly code: number;
  constructor(message: string, code: 4401 | 4403) {
    super(message);
    this.code = code;
  }
}

const PREFIX = 'lr1';

/** Parses a TTL such as `90s`, `30m`, `1h`, `7d` or plain seconds. */
export function parseTtl(ttl: string | number): number {
  if (typeof ttl === 'number') {
    if (!Number.isFinite(ttl) || ttl <= 0) throw new LatheError(`ttl must be a positive number of seconds, got ${ttl}`);
    return Math.round(ttl);
  }
  const m = /^(\d+(?:\.\d+)?)\s*(s|m|h|d)?$/.exec(ttl.trim());
  if (!m || Number(m[1]) <= 0) throw new LatheError(`ttl "${ttl}" is not valid: use e.g. 90s, 30m, 1h or 7d`);
  const unit = { s: 1, m: 60, h: 3600, d: 86400 }[(m[2] ?? 's') as 's' | 'm' | 'h' | 'd'];
  return Math.round(Number(m[1]) * unit);
}

/** Mints a signed token for a room (or pattern), role and time to live. */
export function mintToken(
  secret: string,
  grant: { room: string; role: 'read' | 'write'; ttl?: string | number; sub?: string; now?: number },
): string {
  if (grant.role !== 'read' && grant.role !== 'write')
    throw new LatheError(`role must be read or write, got "${String(grant.role)}"`);
  if (!grant.room) throw new LatheError('a token needs a room (a name, or a pattern such as run:* or *)');
  const now = grant.now ?? Math.floor(Date.now() / 1000);
  const payload: RoomGrant = { room: grant.room, role: grant.role, exp: now + parseTtl(grant.ttl ?? '1h') };
  if (grant.sub) payload.sub = grant.sub;
  const body = Buffer.from(JSON.stringify(payload)).toString('base64url');
  return `${PREFIX}.${body}.${sign(secret, `${PREFIX}.${body}`)}`;
}

/** Reads a token's claims without checking its signature (for display only). */
export function decodeToken(token: string): RoomGrant | undefined {
  const parts = token.split('.');
  if (parts.length !== 3 || parts[0] !== PREFIX) return undefined;
  try {
    return JSON.parse(Buffer.from(parts[1]!, 'base64url').toString('utf8')) as RoomGrant;
  } catch {
    return undefined;
  }
}

/** Checks a token for a room; returns its grant or throws RoomAuthError with a reason fit to show the user. */
export function verifyToken(
  secret: string,
  token: string | undefined | null,
  room: string,
  now = Date.now() / 1000,
): RoomGrant {
  if (!token)
    throw new RoomAuthError(
      `room ${room}: no token; pass ?room_token=<token> (mint one with: lathe rooms token --room ${room})`,
      4401,
    );
  const parts = token.split('.');
  if (parts.length !== 3 || parts[0] !== PREFIX)
    throw new RoomAuthError(`room ${room}: malformed token (expected ${PREFIX}.<payload>.<signature>)`, 4401);
  const expected = Buffer.from(sign(secret, `${PREFIX}.${parts[1]}`));
  const given = Buffer.from(parts[2]!);
  if (given.length !== expected.length || !timingSafeEqual(given, expected)) {
    throw new RoomAuthError(`room ${room}: token signature is wrong (minted with another secret, or altered)`, 4401);
  }
  const grant = decodeToken(token);
  if (!grant || typeof grant.room !== 'string' || typeof grant.exp !== 'number')
    throw new RoomAuthError(`room ${room}: token payload is not valid`, 4401);
  if (grant.role !== 'read' && grant.role !== 'write')
    throw new RoomAuthError(`room ${room}: token role "${String(grant.role)}" is not read or write`, 4401);
  if (grant.exp <= now)
    throw new RoomAuthError(
      `room ${room}: token expired at ${new Date(grant.exp * 1000).toISOString()}; mint a new one`,
      4401,
    );
  if (!roomMatches(grant.room, room))
    throw new RoomAuthError(`room ${room}: token is for room "${grant.room}", not this one`, 4403);
  return grant;
}

/** True if a grant's room pattern covers a room: `*` covers all, `run:*` covers every `run:` room, else exact. */
export function roomMatches(pattern: string, room: string): boolean {
  if (pattern === '*') return true;
  if (pattern.endsWith('*')) return room.startsWith(pattern.slice(0, -1));
  return pattern === room;
}

function sign(secret: string, data: string): string {
  return createHmac('sha256', secret).update(data).digest('base64url');
}

/** Query parameter that carries the room token (not `token`, which Jupyter reads as its own). */
export const TOKEN_PARAM = 'room_token';

/**
 * A read-only share link: the room's HTTP URL with a read token, e.g.
 * `https://host/user/me/lathe-rooms/run:abc?room_token=lr1…`. Opened through Jupyter (which still asks
 * for its own login) it answers GET with the room's JSON snapshot; `followRun(link)` follows it live.
 * `base` is the rooms base URL: `<jupyter base url>lathe-rooms` behind Jupyter, or `http://host:port`.
 */
export function shareLink(base: string, room: string, readToken: string): string {
  const grant = decodeToken(readToken);
  if (grant && grant.role !== 'read')
    throw new LatheError('a share link must carry a read token (mint it with --role read)');
  return `${base.replace(/\/+$/, '')}/${encodeURIComponent(room)}?${TOKEN_PARAM}=${encodeURIComponent(readToken)}`;
}

/** Splits a room URL (`<base>/<room>?room_token=…`) into the server base URL, room, token and other query parameters. */
export function parseRoomUrl(roomUrl: string): {
  base: string;
  room: string;
  token?: string;
  params: Record<string, string>;
} {
  let u: URL;
  try {
    u = new URL(roomUrl);
  } catch {
    throw new LatheError(`"${roomUrl}" is not a room URL (expected ws://host:port/<room>?room_token=…)`);
  }
  const path = u.pathname.replace(/\/+$/, '');
  const cut = path.lastIndexOf('/');
  const room = decodeURIComponent(path.slice(cut + 1));
  if (!room) throw new LatheError(`${roomUrl}: no room name at the end of the path`);
  const token = u.searchParams.get(TOKEN_PARAM) ?? undefined;
  u.searchParams.delete(TOKEN_PARAM);
  const base = `${u.protocol}//${u.host}${path.slice(0, cut)}`;
  return { base, room, token, params: Object.fromEntries(u.searchParams) };
}
