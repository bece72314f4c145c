/**
 * The run room: one Y.Doc per run, synced by the room server to every collaborator.
 *
 * Top-level shared types (names are the contract the browser extension reads):
 *
 * | key       | type                  | written by            | what                                                        |
 * | --------- | --------------------- | --------------------- | ----------------------------------------------------------- |
 * | `meta`    | `Y.Map`               | producer              | {@link RoomMeta}: run id, recipe, stage, status, who started/cancelled |
 * | `metrics` | `Y.Array<MetricEntry>`| producer, append-only | one entry per metrics.jsonl line, `{ seq, step, stage, loss?, … }` |
 * | `events`  | `Y.Array<EventEntry>` | producer, append-only | one entry per events.jsonl line plus `key` (and `by` for started/resumed/cancelled) |
 * | `evals`   | `Y.Array<EvalEntry>`  | producer, append-only | eval suite results (`eval` events) and held-out points (metrics with `eval_loss`) |
 * | `control` | `Y.Map`               | any write-token holder| `cancel: { by, at }` asks the producer to cancel the run     |
 *
 * Arrays are append-only: nobody deletes or reorders. Identity, so a reconnect or a restarted producer
 * can never duplicate a point: a metric's `seq` is its 0-based position in the run's metric stream (gap
 * free for one producer); an event's `key` is `time|type|step|message`; an eval's key is its event's
 * key or `metric|<seq>`. Producers skip entries whose seq/key the room already holds; readers
 * ({@link readCurve}, {@link readKeyed}) still sort by seq and drop repeats, in case two producers raced.
 */
import { createHash } from 'node:crypto';
import { resolve } from 'node:path';
import * as Y from 'yjs';
import { LatheError } from '../errors.js';
import type { Metric, RunEvent, RunSummary } from '../runs/rundir.js';

/** Version of this layout, stored as `meta.schema`. */
export const ROOM_SCHEMA = 1;

/** One point of the curve: a metrics.jsonl line plus its position in the run's metric stream. */
export interface MetricEntry extends Metric {
  seq: number;
}

/** One run event, with its identity key and, for started/resumed/cancelled, who did it. */
export interface EventEntry extends RunEvent {
  key: string;
  by?: string;
}

/**
 * One evaluation result: an `eval` event (key = its event key; suites, message) or a held-out point
 * from the metrics (key `metric|<seq>`, with `eval_loss`).
 */
export interface EvalEntry {
  key: string;
  time: string;
  step?: number;
  message: string;
  [key: string]: unknown;
}

/** The `meta` map's fields. All optional: a room may be seen before its producer wrote them. */
export interface RoomMeta {
  schema?: number;
  runId?: string;
  room?: string;
  recipe?: string;
  stage?: string;
  steps?: number;
  lockId?: string;
  backend?: string;
  dir?: string;
  status?: RunSummary['status'];
  startedBy?: string;
  startedAt?: string;
  cancelledBy?: string;
  cancelledAt?: string;
  endedAt?: string;
  /** Number of metric entries the producer published in all (set when the run ends). */
  metricCount?: number;
  /** Entries in `metrics` so far, refreshed every 256 points and at the end (cheap progress for a UI). */
  points?: number;
  summary?: RunSummary;
  [key: string]: unknown;
}

/** A cancel request in `control.cancel`. */
export interface CancelRequest {
  by: string;
  at: string;
}

/** The shared types of a run room, created on first access. */
export interface RunRoom {
  doc: Y.Doc;
  meta: Y.Map<unknown>;
  metrics: Y.Array<MetricEntry>;
  events: Y.Array<EventEntry>;
  evals: Y.Array<EvalEntry>;
  control: Y.Map<unknown>;
}

/** Everything in a room as plain JSON (what GET on a room URL returns). */
export interface RoomSnapshot {
  room?: string;
  meta: RoomMeta;
  metrics: MetricEntry[];
  events: EventEntry[];
  evals: EvalEntry[];
}

/** Binds the room layout onto a Y.Doc. */
export function runRoom(doc: Y.Doc): RunRoom {
  return {
    doc,
    meta: doc.getMap('meta'),
    metrics: doc.getArray<MetricEntry>('metrics'),
    events: doc.getArray<EventEntry>('events'),
    evals: doc.getArray<EvalEntry>('evals'),
    control: doc.getMap('control'),
  };
}

/**
 * The room a run publishes to. The kernel's run MIME bundle carries the same name. With the run's
 * directory, the name also carries a hash of its absolute path: run ids are directory names, and the
 * same recipe run in two folders would otherwise share (and mix) one room.
 */
export function roomForRun(runId: string, dir?: string): string {
  return checkRoomName(
    dir ? `run:${runId}~${createHash('sha256').update(resolve(dir)).digest('hex').slice(0, 8)}` : `run:${runId}`,
  );
}

const ROOM_NAME = /^[A-Za-z0-9._:~-]{1,200}$/;

/** Returns the name if it is a valid room name (letters, digits, `. _ : ~ -`, at most 200), else throws. */
export function checkRoomName(name: string): string {
  if (!ROOM_NAME.test(name) || name === '.' || name === '..') {
    throw new LatheError(
      `room name "${name.slice(0, 80)}" is not valid: use 1-200 letters, digits or . _ : ~ - (e.g. run:<run id>)`,
    );
  }
  return name;
}

/** Identity of an event in a room: stable across producers, reconnects and restarts. */
export function eventKey(e: Pick<RunEvent, 'time' | 'type' | 'step' | 'message'>): string {
  return `${e.time}|${e.type}|${e.step ?? ''}|${e.message}`;
}

/** The curve: metric entries sorted by seq, each seq once (the first copy wins). */
export function readCurve(metrics: Y.Array<MetricEntry> | MetricEntry[]): MetricEntry[] {
  const all = Array.isArray(metrics) ? metrics : metrics.toArray();
  const seen = new Set<number>();
  const out: MetricEntry[] = [];
  for (const m of all) {
    if (typeof m?.seq !== 'number' || seen.has(m.seq)) continue;
    seen.add(m.seq);
    out.push(m);
  }
  return out.sort((a, b) => a.seq - b.seq);
}

/** Entries with a key, in room order, each key once. */
export function readKeyed<T extends { key: string }>(arr: Y.Array<T> | T[]): T[] {
  const all = Array.isArray(arr) ? arr : arr.toArray();
  const seen = new Set<string>();
  return all.filter((e) => typeof e?.key === 'string' && !seen.has(e.key) && (seen.add(e.key), true));
}

/** The room's content as plain JSON, deduplicated. */
export function snapshot(doc: Y.Doc, room?: string): RoomSnapshot {
  const r = runRoom(doc);
  return {
    room,
    meta: r.meta.toJSON() as RoomMeta,
    metrics: readCurve(r.metrics),
    events: readKeyed(r.events),
    evals: readKeyed(r.evals),
  };
}

/** True once the producer marked the run ended (completed, interrupted, cancelled or failed). */
export function isEnded(meta: RoomMeta): boolean {
  return meta.status !== undefined && meta.status !== 'running';
}
