import { describe, expect, it } from 'vitest';
import { inspectFrame } from './protocol.js';
import { awarenessFrame, readAwarenessFrame, vetPresence, type AwarenessEntry } from './presence.js';

describe('presence vetting', () => {
  const mine = 1;
  const theirs = 2;
  const heldByOther = (id: number) => id === theirs;

  it('drops entries for client ids another connection holds, and stamps the rest with the token identity', () => {
    const entries: AwarenessEntry[] = [
      { clientId: theirs, clock: 9, state: { user: { name: 'Ada' } } },
      { clientId: theirs, clock: 10, state: null },
      {
        clientId: mine,
        clock: 1,
        state: { user: { name: 'Ada' }, lathe: { role: 'producer', sub: 'ada', access: 'write' } },
      },
      { clientId: 3, clock: 1, state: 'not an object' },
      { clientId: 4, clock: 2, state: null },
    ];
    const { accepted, refused } = vetPresence(entries, { role: 'read', sub: 'vic' }, heldByOther);
    expect(refused.map((e) => e.clientId)).toEqual([theirs, theirs, 3]);
    expect(accepted).toEqual([
      {
        clientId: mine,
        clock: 1,
        state: { user: { name: 'Ada' }, lathe: { role: 'viewer', sub: 'vic', access: 'read' } },
      },
      { clientId: 4, clock: 2, state: null },
    ]);
    // A token without a subject clears any the client claimed; a write token keeps the client's role.
    const w = vetPresence(entries.slice(2, 3), { role: 'write' }, heldByOther).accepted[0]!;
    expect(w.state).toEqual({ user: { name: 'Ada' }, lathe: { role: 'producer', access: 'write' } });
  });

  it('reads and writes awareness frames as y-protocols does', () => {
    const entries: AwarenessEntry[] = [
      { clientId: 7, clock: 3, state: { user: { name: 'Bob', color: '#00ff00' } } },
      { clientId: 8, clock: 1, state: null },
    ];
    const frame = awarenessFrame(entries);
    expect(inspectFrame(frame)).toEqual({ kind: 'awareness' });
    expect(readAwarenessFrame(frame)).toEqual(entries);
  });
});
