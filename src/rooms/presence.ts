/**
 * Presence as the server lets it through. Awareness (y-protocols) lets any client send a state for
 * any client id, so without a check a viewer could rewrite or remove someone else's presence, or
 * claim to be the run's producer. The server vets every awareness update first:
 *
 * - a connection speaks only for the client ids it introduced: entries for an id another open
 *   connection holds are dropped;
 * - every state is stamped with the identity of the token the connection presented:
 *   `lathe.sub` (the token's subject, absent when it has none) and `lathe.access` (`read` or
 *   `write`), overwriting whatever the client wrote there; a read token's presence is a viewer's.
 *
 * The display name (`user.name`) stays the client's own choice; `lathe.sub` is what the server vouches for.
 */
import * as decoding from 'lib0/decoding';
import * as encoding from 'lib0/encoding';
import { MESSAGE_AWARENESS } from './protocol.js';
import type { RoomGrant } from './token.js';

/** One entry of an awareness update: a client id, its clock, and its state (null: it left). */
export interface AwarenessEntry {
  clientId: number;
  clock: number;
  state: unknown;
}

/** Reads an awareness frame (message type 1, then the update). */
export function readAwarenessFrame(frame: Uint8Array): AwarenessEntry[] {
  const d = decoding.createDecoder(frame);
  if (decoding.readVarUint(d) !== MESSAGE_AWARENESS) throw new Error('not an awareness frame');
  const u = decoding.createDecoder(decoding.readVarUint8Array(d));
  const n = decoding.readVarUint(u);
  const out: AwarenessEntry[] = [];
  for (let i = 0; i < n; i++) {
    const clientId = decoding.readVarUint(u);
    const clock = decoding.readVarUint(u);
    out.push({ clientId, clock, state: JSON.parse(decoding.readVarString(u)) as unknown });
  }
  return out;
}

/** Writes entries as an awareness frame. */
export function awarenessFrame(entries: AwarenessEntry[]): Uint8Array {
  const u = encoding.createEncoder();
  encoding.writeVarUint(u, entries.length);
  for (const e of entries) {
    encoding.writeVarUint(u, e.clientId);
    encoding.writeVarUint(u, e.clock);
    encoding.writeVarString(u, JSON.stringify(e.state));
  }
  const f = encoding.createEncoder();
  encoding.writeVarUint(f, MESSAGE_AWARENESS);
  encoding.writeVarUint8Array(f, encoding.toUint8Array(u));
  return encoding.toUint8Array(f);
}

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => !!v && typeof v === 'object' && !Array.isArray(v);

/**
 * Vets a connection's awareness entries (see the module doc). `heldByOther(id)` says whether another
 * open connection holds that client id. Returns the entries to apply, stamped, and those refused.
 */
export function vetPresence(
  entries: AwarenessEntry[],
  grant: Pick<RoomGrant, 'role' | 'sub'>,
  heldByOther: (clientId: number) => boolean,
): { accepted: AwarenessEntry[]; refused: AwarenessEntry[] } {
  const accepted: AwarenessEntry[] = [];
  const refused: AwarenessEntry[] = [];
  for (const e of entries) {
    if (heldByOther(e.clientId) || (e.state !== null && !isObj(e.state))) {
      refused.push(e);
      continue;
    }
    accepted.push(e.state === null ? e : { ...e, state: stamp(e.state as Obj, grant) });
  }
  return { accepted, refused };
}

function stamp(state: Obj, grant: Pick<RoomGrant, 'role' | 'sub'>): Obj {
  const lathe: Obj = isObj(state.lathe) ? { ...state.lathe } : {};
  delete lathe.sub;
  if (grant.sub) lathe.sub = grant.sub;
  lathe.access = grant.role;
  if (grant.role === 'read') lathe.role = 'viewer';
  return { ...state, lathe };
}
