/**
 * The wire protocol: y-websocket's tagged binary frames (`varuint type` + body), unchanged, plus one
 * Lathe message. Types:
 *
 *     0 sync        y-protocols sync: 0 step1 (state vector), 1 step2 (update), 2 update
 *     1 awareness   y-protocols awareness update (presence: name, colour)
 *     2 auth        server → client: 0 permission-denied + reason string, then (Lathe addition,
 *                   ignored by stock y-websocket) a varuint close code when the connection is refused
 *                   (4400/4401/4403) and is about to be closed: stop reconnecting. Without a code it is
 *                   the once-per-connection notice that a read-only connection's update was dropped.
 *     3 query-awareness
 *   100 state       client → server: empty body, "what do you hold?"; server → client: its state vector.
 *                   Lets a producer know the server has stored every update it sent (flush).
 *
 * `inspectFrame` reads a frame without applying it, so the server can refuse malformed frames and
 * read-only writes before they reach the shared doc.
 */
import * as decoding from 'lib0/decoding';
import * as encoding from 'lib0/encoding';
import * as Y from 'yjs';

export const MESSAGE_SYNC = 0;
export const MESSAGE_AWARENESS = 1;
export const MESSAGE_AUTH = 2;
export const MESSAGE_QUERY_AWARENESS = 3;
/** Lathe's state-vector query/answer (see module doc). */
export const MESSAGE_STATE = 100;

const SYNC_STEP1 = 0;
const SYNC_STEP2 = 1;
const SYNC_UPDATE = 2;

/** What a client frame is, as far as authorization cares. */
export type Frame =
  | { kind: 'sync-step1' }
  | { kind: 'update'; update: Uint8Array; empty: boolean }
  | { kind: 'awareness' }
  | { kind: 'query-awareness' }
  | { kind: 'state-query' }
  | { kind: 'unknown'; type: number };

/** A frame that does not decode. */
export class FrameError extends Error {}

/** Decodes a client frame far enough to authorize it; throws FrameError if it is malformed. */
export function inspectFrame(bytes: Uint8Array): Frame {
  try {
    const d = decoding.createDecoder(bytes);
    const type = decoding.readVarUint(d);
    switch (type) {
      case MESSAGE_SYNC: {
        const sub = decoding.readVarUint(d);
        const body = decoding.readVarUint8Array(d);
        if (sub === SYNC_STEP1) {
          Y.decodeStateVector(body);
          return { kind: 'sync-step1' };
        }
        if (sub === SYNC_STEP2 || sub === SYNC_UPDATE) {
          const u = Y.decodeUpdate(body);
          return { kind: 'update', update: body, empty: u.structs.length === 0 && u.ds.clients.size === 0 };
        }
        throw new FrameError(`unknown sync message ${sub}`);
      }
      case MESSAGE_AWARENESS: {
        checkAwareness(decoding.readVarUint8Array(d));
        return { kind: 'awareness' };
      }
      case MESSAGE_QUERY_AWARENESS:
        return { kind: 'query-awareness' };
      case MESSAGE_STATE:
        return { kind: 'state-query' };
      default:
        return { kind: 'unknown', type };
    }
  } catch (e) {
    if (e instanceof FrameError) throw e;
    throw new FrameError(`malformed frame (${(e as Error).message || String(e)})`);
  }
}

/** An awareness update: count, then per client its id, clock and a JSON state. */
function checkAwareness(body: Uint8Array): void {
  const d = decoding.createDecoder(body);
  const n = decoding.readVarUint(d);
  for (let i = 0; i < n; i++) {
    decoding.readVarUint(d);
    decoding.readVarUint(d);
    JSON.parse(decoding.readVarString(d));
  }
}

/**
 * `auth / permission-denied` with a reason, and the close code when it is a refusal. y-websocket
 * clients log the reason; Lathe clients surface it and, given a code, stop reconnecting (Jupyter's
 * proxy does not pass close codes on, so this frame is how a refusal reaches a browser).
 */
export function permissionDenied(reason: string, refusalCode?: number): Uint8Array {
  const e = encoding.createEncoder();
  encoding.writeVarUint(e, MESSAGE_AUTH);
  encoding.writeVarUint(e, 0);
  encoding.writeVarString(e, reason);
  if (refusalCode !== undefined) encoding.writeVarUint(e, refusalCode);
  return encoding.toUint8Array(e);
}

/** Reads a permission-denied body (after the message type): its reason and refusal code, if any. */
export function readPermissionDenied(d: decoding.Decoder): { reason: string; code?: number } {
  decoding.readVarUint(d);
  const reason = decoding.readVarString(d);
  return { reason, code: decoding.hasContent(d) ? decoding.readVarUint(d) : undefined };
}

/** The client's "what do you hold?" query. */
export function stateQuery(): Uint8Array {
  const e = encoding.createEncoder();
  encoding.writeVarUint(e, MESSAGE_STATE);
  return encoding.toUint8Array(e);
}

/** The server's answer: its doc's state vector. */
export function stateAnswer(doc: Y.Doc): Uint8Array {
  const e = encoding.createEncoder();
  encoding.writeVarUint(e, MESSAGE_STATE);
  encoding.writeVarUint8Array(e, Y.encodeStateVector(doc));
  return encoding.toUint8Array(e);
}

/** True if `server` holds everything `local` does (every client's clock at least as far). */
export function covers(server: Map<number, number>, local: Map<number, number>): boolean {
  for (const [client, clock] of local) if ((server.get(client) ?? 0) < clock) return false;
  return true;
}
