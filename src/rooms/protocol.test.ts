import * as encoding from 'lib0/encoding';
import { describe, expect, it } from 'vitest';
import * as syncProtocol from 'y-protocols/sync';
import * as awarenessProtocol from 'y-protocols/awareness';
import * as Y from 'yjs';
import { covers, FrameError, inspectFrame, MESSAGE_AWARENESS, MESSAGE_SYNC, stateAnswer } from './protocol.js';
import { readCurve } from './schema.js';

function syncFrame(write: (e: encoding.Encoder) => void): Uint8Array {
  const e = encoding.createEncoder();
  encoding.writeVarUint(e, MESSAGE_SYNC);
  write(e);
  return encoding.toUint8Array(e);
}

describe('frame inspection', () => {
  it('classifies the frames a y-websocket client sends', () => {
    const doc = new Y.Doc();
    expect(inspectFrame(syncFrame((e) => syncProtocol.writeSyncStep1(e, doc)))).toEqual({ kind: 'sync-step1' });
    // A client with nothing new answers the server's step1 with an empty step2: not a write.
    expect(inspectFrame(syncFrame((e) => syncProtocol.writeSyncStep2(e, doc, Y.encodeStateVector(doc))))).toMatchObject(
      { kind: 'update', empty: true },
    );
    doc.getArray('metrics').push([{ seq: 0 }]);
    expect(inspectFrame(syncFrame((e) => syncProtocol.writeUpdate(e, Y.encodeStateAsUpdate(doc))))).toMatchObject({
      kind: 'update',
      empty: false,
    });
    const aw = new awarenessProtocol.Awareness(doc);
    aw.setLocalState({ user: { name: 'Ada' } });
    const e = encoding.createEncoder();
    encoding.writeVarUint(e, MESSAGE_AWARENESS);
    encoding.writeVarUint8Array(e, awarenessProtocol.encodeAwarenessUpdate(aw, [doc.clientID]));
    expect(inspectFrame(encoding.toUint8Array(e))).toEqual({ kind: 'awareness' });
    expect(inspectFrame(new Uint8Array([100]))).toEqual({ kind: 'state-query' });
    expect(inspectFrame(new Uint8Array([42]))).toEqual({ kind: 'unknown', type: 42 });
    aw.destroy();
  });

  it('throws FrameError on malformed frames', () => {
    expect(() => inspectFrame(new Uint8Array([]))).toThrow(FrameError);
    expect(() => inspectFrame(new Uint8Array([0, 2, 200, 1, 7]))).toThrow(/malformed/);
    expect(() => inspectFrame(new Uint8Array([0, 9, 0]))).toThrow(/unknown sync message 9/);
    expect(() => inspectFrame(new Uint8Array([1, 5, 1, 2]))).toThrow(FrameError);
  });

  it('answers state queries with a state vector that covers what the client sent', () => {
    const a = new Y.Doc();
    const b = new Y.Doc();
    a.getArray('metrics').push([1, 2, 3]);
    const local = Y.decodeStateVector(Y.encodeStateVector(a));
    expect(covers(Y.decodeStateVector(Y.encodeStateVector(b)), local)).toBe(false);
    Y.applyUpdate(b, Y.encodeStateAsUpdate(a));
    const answer = stateAnswer(b);
    expect(answer[0]).toBe(100);
    expect(covers(Y.decodeStateVector(answer.subarray(2)), local)).toBe(true);
  });

  it('reads a curve sorted by seq with repeats dropped', () => {
    const c = readCurve([
      { seq: 2, step: 3, stage: 's' },
      { seq: 0, step: 1, stage: 's' },
      { seq: 2, step: 99, stage: 's' },
      { seq: 1, step: 2, stage: 's' },
    ]);
    expect(c.map((m) => [m.seq, m.step])).toEqual([
      [0, 1],
      [1, 2],
      [2, 3],
    ]);
  });
});
