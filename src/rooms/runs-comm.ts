// The `lathe.runs` comm: the Jupyter comm through which the Runs panel lists a kernel's runs, follows
// one (snapshot, then metrics and events as they come, then done) and cancels or interrupts one.
// Every message, both ways, is declared here once and checked on arrival at either end.
//
// Where it lives, and why: both ends import this file, built, by a relative path to the library's
// dist/ (the kernel: kernel/src/runs-comm.ts; the extension: extension/src/kernel-runs.ts). The kernel
// already compiles against that build (its tsconfig maps `lathe` there), and set-up builds the
// library before the kernel and the extension. It sits in rooms/ beside the run room, the other way a
// browser follows a run, whose RoomRef a RunInfo carries. The extension's webpack bundles it for the
// browser, so it holds no value imports (a test checks): only types, plain data and pure checks.
import type { Metric, RunEvent, RunStatus, RunSummary } from '../runs/rundir.js';
import type { RoomRef } from './index.js';

/** The comm target name the kernel registers and the frontend opens. */
export const RUNS_TARGET = 'lathe.runs';

/** What the Runs panel shows for one of the kernel's runs. */
export interface RunInfo {
  id: string;
  /** The run's room name, `run:<id>`. */
  room: string;
  /** The run directory, absolute, on the kernel's machine. */
  dir: string;
  /** The recipe's name, if it has one. */
  name: string | null;
  stage: string;
  status: RunStatus;
  step: number;
  steps: number;
  loss: number | null;
  /** Whether the run is training now (status `running`). */
  live: boolean;
  /** How a browser joins the run's room (a read token), when run rooms are on. */
  roomRef?: RoomRef;
  /** Ranks of a run over several processes (torch.distributed), and their parallelism. */
  world?: { ranks: number; parallel: string };
}

// ---- frontend → kernel -------------------------------------------------------------------------

/** Asks for the list of runs (answered with `runs`). */
export interface ListRequest {
  type: 'list';
}
/** Follows a run: a `snapshot`, then its `metric` and `event` messages, then `done`. */
export interface FollowRequest {
  type: 'follow';
  id: string;
}
/** Stops following a run (answered with `ack`). */
export interface UnfollowRequest {
  type: 'unfollow';
  id: string;
}
/** Cancels a run; `by` names who asked (recorded in the run's room when it has one). */
export interface CancelRequest {
  type: 'cancel';
  id: string;
  by?: string;
}
/** Interrupts a run: it stops at the next step boundary with a checkpoint, and can resume. */
export interface InterruptRequest {
  type: 'interrupt';
  id: string;
}
/** Every message the frontend sends on `lathe.runs`. */
export type RunsFrontendMessage = ListRequest | FollowRequest | UnfollowRequest | CancelRequest | InterruptRequest;

// ---- kernel → frontend -------------------------------------------------------------------------

/** The kernel's runs, live first: sent when the comm opens and in answer to `list`. */
export interface RunsListMessage {
  type: 'runs';
  runs: RunInfo[];
}
/** A run started in the kernel (pushed to every open comm). */
export interface RunStartedMessage {
  type: 'started';
  run: RunInfo;
}
/** A followed run so far (metric values that were NaN arrive as null, as JSON has no NaN). */
export interface RunSnapshotMessage {
  type: 'snapshot';
  id: string;
  run: RunInfo;
  metrics: Metric[];
  events: RunEvent[];
}
/** One new metrics line of a followed run. */
export interface RunMetricMessage {
  type: 'metric';
  id: string;
  metric: Metric;
}
/** One new event of a followed run. */
export interface RunEventMessage {
  type: 'event';
  id: string;
  event: RunEvent;
}
/** A followed run ended (or had ended when followed); `summary` is null if it wrote none. */
export interface RunDoneMessage {
  type: 'done';
  id: string;
  summary: RunSummary | null;
  run: RunInfo;
}
/** An `unfollow`, `cancel` or `interrupt` was done. */
export interface RunsAckMessage {
  type: 'ack';
  request: 'unfollow' | 'cancel' | 'interrupt';
  id: string;
}
/** A request failed: an unknown run, or a malformed message (`field` names what was wrong with it). */
export interface RunsErrorMessage {
  type: 'error';
  /** The request's `type`, when it had one. */
  request: string | null;
  id?: string | null;
  field?: string;
  message: string;
}
/** Every message the kernel sends on `lathe.runs`. */
export type RunsKernelMessage =
  | RunsListMessage
  | RunStartedMessage
  | RunSnapshotMessage
  | RunMetricMessage
  | RunEventMessage
  | RunDoneMessage
  | RunsAckMessage
  | RunsErrorMessage;

/** A checked message, or what is wrong with it: `field` is its path (`run.status`, `runs[2].step`). */
export type Parsed<T> = { ok: true; message: T } | { ok: false; field: string; error: string };

// ---- checks ------------------------------------------------------------------------------------

// A check returns undefined when the value fits, else where it does not and what was expected there.
// The phantom type ties a check to the type it guards, so `object<T>` needs a check for every field of T.
interface Issue {
  field: string;
  expected: string;
  got: unknown;
}
type AnyCheck = (v: unknown, field: string) => Issue | undefined;
type Check<T> = AnyCheck & { readonly _type?: (t: T) => T };

function check<T>(expected: string, ok: (v: unknown) => boolean): Check<T> {
  return (v, field) => (ok(v) ? undefined : { field, expected, got: v });
}

function shown(v: unknown): string {
  if (v === undefined) return 'nothing';
  if (v === null || typeof v === 'number' || typeof v === 'boolean') return String(v);
  if (typeof v === 'string') return JSON.stringify(v.length > 40 ? `${v.slice(0, 40)}…` : v);
  return Array.isArray(v) ? 'an array' : typeof v === 'object' ? 'an object' : `a ${typeof v}`;
}

const join = (field: string, key: string | number) =>
  typeof key === 'number' ? `${field}[${key}]` : field ? `${field}.${key}` : key;
const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
const anObject = check<Record<string, unknown>>('an object', isObject);
const string = check<string>('a string', (v) => typeof v === 'string');
const runId = check<string>('a run id (a non-empty string)', (v) => typeof v === 'string' && v.length > 0);
const number = check<number>('a number', (v) => typeof v === 'number' && Number.isFinite(v));
const boolean = check<boolean>('true or false', (v) => typeof v === 'boolean');

function oneOf<const T extends string>(values: readonly T[]): Check<T> {
  return check<T>(`one of ${values.join(', ')}`, (v) => (values as readonly unknown[]).includes(v));
}
function nullable<T>(c: Check<T>): Check<T | null> {
  return (v, field) => (v === null ? undefined : c(v, field));
}
function optional<T>(c: Check<T>): Check<T | undefined> {
  return (v, field) => (v === undefined ? undefined : c(v, field));
}
function array<T>(c: Check<T>): Check<T[]> {
  return (v, field) => {
    if (!Array.isArray(v)) return { field, expected: 'an array', got: v };
    for (const [i, item] of v.entries()) {
      const issue = c(item, join(field, i));
      if (issue) return issue;
    }
    return undefined;
  };
}
/** Checks the named fields; other fields are let through (a newer peer may send more). */
function object<T>(fields: { [K in keyof T]-?: Check<T[K]> }): Check<T> {
  return fieldsOf<T>(fields as Record<string, AnyCheck>);
}
/** Checks some fields (for types with an index signature: metrics, events, summaries), and the rest with `rest`. */
function fieldsOf<T>(fields: Record<string, AnyCheck>, rest?: AnyCheck): Check<T> {
  return (v, field) => {
    if (!isObject(v)) return anObject(v, field);
    for (const [key, c] of Object.entries(fields)) {
      const issue = c(v[key], join(field, key));
      if (issue) return issue;
    }
    if (rest)
      for (const [key, value] of Object.entries(v)) {
        const issue = key in fields ? undefined : rest(value, join(field, key));
        if (issue) return issue;
      }
    return undefined;
  };
}

/** Every RunStatus, for checking; the type below fails to compile if RunStatus gains a member. */
export const RUN_STATUSES = ['running', 'completed', 'interrupted', 'cancelled', 'failed'] as const;
type MissingStatus = Exclude<RunStatus, (typeof RUN_STATUSES)[number]>;
const _allStatuses: [MissingStatus] extends [never] ? true : MissingStatus = true;
void _allStatuses;

const status = oneOf<RunStatus>(RUN_STATUSES);
// A metric value: a number (null when it was NaN), a string, or a list of numbers.
const metricValue = check<unknown>(
  'a number, a string, null or a list of numbers',
  (v) =>
    v === null ||
    typeof v === 'number' ||
    typeof v === 'string' ||
    (Array.isArray(v) && v.every((x) => x === null || typeof x === 'number')),
);
const metric = fieldsOf<Metric>({ step: number, stage: string }, metricValue);
const event = fieldsOf<RunEvent>({ time: string, type: string, message: string, step: optional(number) });
const summary = fieldsOf<RunSummary>({ id: string, stage: string, status, step: number, steps: number });
const roomRef = object<RoomRef>({
  name: string,
  path: string,
  param: string,
  token: string,
  role: oneOf(['read', 'write']),
  expires: string,
  url: optional(string),
});
const runInfo = object<RunInfo>({
  id: runId,
  room: string,
  dir: string,
  name: nullable(string),
  stage: string,
  status,
  step: number,
  steps: number,
  loss: nullable(number),
  live: boolean,
  roomRef: optional(roomRef),
  world: optional(object<{ ranks: number; parallel: string }>({ ranks: number, parallel: string })),
});

// One check per message type: the mapped types make a missing type a compile error.
type ByType<U extends { type: string }> = { [K in U['type']]: Check<Extract<U, { type: K }>> };

const FRONTEND: ByType<RunsFrontendMessage> = {
  list: object<ListRequest>({ type: oneOf(['list']) }),
  follow: object<FollowRequest>({ type: oneOf(['follow']), id: runId }),
  unfollow: object<UnfollowRequest>({ type: oneOf(['unfollow']), id: runId }),
  cancel: object<CancelRequest>({ type: oneOf(['cancel']), id: runId, by: optional(string) }),
  interrupt: object<InterruptRequest>({ type: oneOf(['interrupt']), id: runId }),
};

const KERNEL: ByType<RunsKernelMessage> = {
  runs: object<RunsListMessage>({ type: oneOf(['runs']), runs: array(runInfo) }),
  started: object<RunStartedMessage>({ type: oneOf(['started']), run: runInfo }),
  snapshot: object<RunSnapshotMessage>({
    type: oneOf(['snapshot']),
    id: runId,
    run: runInfo,
    metrics: array(metric),
    events: array(event),
  }),
  metric: object<RunMetricMessage>({ type: oneOf(['metric']), id: runId, metric }),
  event: object<RunEventMessage>({ type: oneOf(['event']), id: runId, event }),
  done: object<RunDoneMessage>({ type: oneOf(['done']), id: runId, summary: nullable(summary), run: runInfo }),
  ack: object<RunsAckMessage>({
    type: oneOf(['ack']),
    request: oneOf(['unfollow', 'cancel', 'interrupt']),
    id: runId,
  }),
  error: object<RunsErrorMessage>({
    type: oneOf(['error']),
    request: nullable(string),
    id: optional(nullable(string)),
    field: optional(string),
    message: string,
  }),
};

/** The message types the frontend may send, in declaration order. */
export const FRONTEND_TYPES = Object.keys(FRONTEND) as RunsFrontendMessage['type'][];
/** The message types the kernel may send, in declaration order. */
export const KERNEL_TYPES = Object.keys(KERNEL) as RunsKernelMessage['type'][];

function parse<U extends { type: string }>(from: string, checks: ByType<U>, data: unknown): Parsed<U> {
  const types = Object.keys(checks) as U['type'][];
  const type = isObject(data) ? data.type : undefined;
  const known = typeof type === 'string' && (types as string[]).includes(type);
  const issue = !isObject(data)
    ? anObject(data, '')
    : known
      ? (checks as Record<string, AnyCheck>)[type]!(data, '')
      : oneOf(types)(type, 'type');
  if (!issue) return { ok: true, message: data as U };
  const what = known ? `${from} "${type}" message` : `${from} message`;
  const where = issue.field ? `${issue.field}: ` : '';
  return {
    ok: false,
    field: issue.field,
    error: `lathe.runs: bad ${what}: ${where}expected ${issue.expected}, got ${shown(issue.got)}`,
  };
}

/** Checks a message from the frontend (what the kernel receives). */
export function parseFrontendMessage(data: unknown): Parsed<RunsFrontendMessage> {
  return parse('frontend', FRONTEND, data);
}

/** Checks a message from the kernel (what the frontend receives). */
export function parseKernelMessage(data: unknown): Parsed<RunsKernelMessage> {
  return parse('kernel', KERNEL, data);
}
