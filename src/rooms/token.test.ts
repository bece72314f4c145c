import { describe, expect, it } from 'vitest';
import {
  decodeToken,
  mintToken,
  parseRoomUrl,
  parseTtl,
  roomMatches,
  RoomAuthError,
  shareLink,
  verifyToken,
} from './token.js';

const SECRET = 'unit-test-secret-0123456789';

describe('room tokens', () => {
  it('round-trips a grant and refuses tampering, expiry, other rooms and other secrets', () => {
    const now = 1_700_000_000;
    const t = mintToken(SECRET, { room: 'run:abc', role: 'read', ttl: '1h', sub: 'vic', now });
    expect(verifyToken(SECRET, t, 'run:abc', now + 10)).toEqual({
      room: 'run:abc',
      role: 'read',
      exp: now + 3600,
      sub: 'vic',
    });
    expect(() => verifyToken(SECRET, t, 'run:abc', now + 3600)).toThrow(/expired at 2023-11-14T23:13:20.000Z/);
    expect(() => verifyToken(SECRET, t, 'run:abd', now)).toThrow(/is for room "run:abc"/);
    expect(() => verifyToken('another-secret-of-length', t, 'run:abc', now)).toThrow(/signature is wrong/);
    // Upgrading the role in the payload breaks the signature.
    const [p, body, sig] = t.split('.');
    const forged = Buffer.from(JSON.stringify({ ...decodeToken(t), role: 'write' })).toString('base64url');
    expect(body).not.toBe(forged);
    expect(() => verifyToken(SECRET, `${p}.${forged}.${sig}`, 'run:abc', now)).toThrow(/signature is wrong/);
    const e = (() => {
      try {
        verifyToken(SECRET, t, 'run:zzz', now);
      } catch (err) {
        return err as RoomAuthError;
      }
    })();
    expect(e).toBeInstanceOf(RoomAuthError);
    expect(e!.code).toBe(4403);
    expect(() => verifyToken(SECRET, '', 'run:abc')).toThrow(/no token/);
    expect(() => verifyToken(SECRET, 'a.b', 'run:abc')).toThrow(/malformed/);
  });

  it('matches room patterns and parses TTLs', () => {
    expect(roomMatches('*', 'run:x')).toBe(true);
    expect(roomMatches('run:*', 'run:x')).toBe(true);
    expect(roomMatches('run:*', 'notebook:x')).toBe(false);
    expect(roomMatches('run:x', 'run:xy')).toBe(false);
    expect([parseTtl('90s'), parseTtl('30m'), parseTtl('1h'), parseTtl('7d'), parseTtl('15'), parseTtl(2)]).toEqual([
      90, 1800, 3600, 604800, 15, 2,
    ]);
    expect(() => parseTtl('soon')).toThrow(/e.g. 90s/);
    expect(() => parseTtl('0h')).toThrow();
    expect(() => mintToken(SECRET, { room: 'run:x', role: 'admin' as 'read' })).toThrow(/read or write/);
  });

  it('builds and parses share links', () => {
    const t = mintToken(SECRET, { room: 'run:abc', role: 'read' });
    const link = shareLink('https://hub.example/user/ada/lathe-rooms/', 'run:abc', t);
    expect(link).toBe(`https://hub.example/user/ada/lathe-rooms/run%3Aabc?room_token=${t}`);
    expect(parseRoomUrl(link)).toEqual({
      base: 'https://hub.example/user/ada/lathe-rooms',
      room: 'run:abc',
      token: t,
      params: {},
    });
    expect(parseRoomUrl('ws://127.0.0.1:9/run:x?token=jupyter')).toEqual({
      base: 'ws://127.0.0.1:9',
      room: 'run:x',
      token: undefined,
      params: { token: 'jupyter' },
    });
    expect(() => shareLink('http://h', 'run:abc', mintToken(SECRET, { room: 'run:abc', role: 'write' }))).toThrow(
      /read token/,
    );
    expect(() => parseRoomUrl('not a url')).toThrow(/not a room URL/);
  });
});
