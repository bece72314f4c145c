/**
 * The producer: mirrors a Run (metrics, events, evals, status) into its room. A kernel or a worker
 * calls `publishRun(run, { url, token })`; with env LATHE_ROOMS_URL set, auto.ts does it for every run.
 *
 * No point lost: everything goes into a local Y.Doc first; yjs keeps what the server has not
 * acknowledged and sends it in the sync exchange of every (re)connection, so points made while the
 * server is down or restarting arrive when it is back.
 * No point duplicated: a metric's `seq` is its position in the run's stream and an event's `key` is
 * its identity; nothing is written before the first sync with the room, and then only entries the room
 * does not already hold, so a reconnect, a second producer or a resumed run cannot repeat a point.
 */
import { LatheError } from '../errors.js';
import type { Run } from '../runs/run.js';
import type { Metric, RunEvent, RunSummary } from '../runs/rundir.js';
import { colourFor, localUser, RoomClient } from './client.js';
import {
  eventKey,
  roomForRun,
  ROOM_SCHEMA,
  type CancelRequest,
  type EvalEntry,
  type EventEntry,
  type MetricEntry,
} from './schema.js';

/** Metric entries per yjs item (see appendMetric). */
const METRICS_CHUNK = 256;

/** Options of {@link publishRun}. */
export interface PublishOptions {
  /**
   * Room server base URL (`ws://127.0.0.1:1234`), or a function asked before each connection attempt
   * until it returns one (e.g. reading server.json of a server that Jupyter starts on demand).
   */
  url: string | (() => string | undefined);
  /** Write token for the room, or a function that mints one (called again before every reconnect). */
  token: string | (() => string);
  /** Room name. Default `run:<run id>`. */
  room?: string;
  /** Who started the run (recorded in meta.startedBy and the `started` event). Default localUser(). */
  user?: string;
  /** Extra handshake headers / query parameters (e.g. Jupyter's token when publishing through its proxy). */
  headers?: Record<string, string>;
  params?: Record<string, string>;
  /** After the run ends, wait this long for the server to hold everything before closing. Default 30 s. */
  flushTimeoutMs?: number;
  /** Close the connection once the run ended and was flushed. Default true. */
  closeWhenDone?: boolean;
  /** Honour `control.cancel` requests from write-token holders in the room. Default true. */
  acceptCancel?: boolean;
  /** Warnings (server refused, gave up flushing). Default stderr. */
  log?: (line: string) => void;
  /** Reconnect backoff ceiling, ms. Default 2500. */
  maxBackoffMs?: number;
}

/** A run being mirrored into its room. */
export class RunPublisher {
  readonly run: Run;
  readonly room: string;
  /** The connection, once the server URL is known. */
  client?: RoomClient;
  /** Resolves when the run ended and its room holds everything (true), or flushing gave up (false). */
  readonly done: Promise<boolean>;
  private readonly opts: PublishOptions;
  private readonly user: string;
  private readonly log: (line: string) => void;
  /** Writes waiting for the first sync (before it we cannot know which seqs the room already holds). */
  private pending: (() => void)[] = [];
  private ready = false;
  private stopped = false;
  private seenSeq = new Set<number>();
  private seenKey = new Set<string>();
  private metricCount = 0;
  private cancelBy?: string;
  private unsubscribe: (() => void)[] = [];
  private pollTimer?: NodeJS.Timeout;
  private warnedRefused = false;
  private pushed = 0;

  constructor(run: Run, opts: PublishOptions) {
    this.run = run;
    this.opts = opts;
    this.room = opts.room ?? roomForRun(run.id);
    this.user = opts.user ?? localUser();
    this.log = opts.log ?? ((line) => process.stderr.write(`lathe rooms: ${line}\n`));

    // Subscribe before reading history, in the same tick, so no metric falls between the two.
    const history = run.metricsSoFar;
    this.metricCount = history.length;
    history.forEach((m, i) => this.write(() => this.appendMetric(m, i)));
    this.unsubscribe.push(
      run.onMetric((m) => {
        const seq = this.metricCount++;
        this.write(() => this.appendMetric(m, seq));
      }),
    );
    // events.jsonl holds what happened before this publisher (a resumed run's earlier events); live
    // events wait for it so the room keeps the file's order.
    const early: RunEvent[] = [...run.events];
    let eventsReady = false;
    this.unsubscribe.push(run.onEvent((e) => (eventsReady ? this.write(() => this.appendEvent(e)) : early.push(e))));
    this.write(() => this.writeStart());
    const fileEvents = run.dir.readEvents().catch(() => [] as RunEvent[]);
    void fileEvents.then((evs) => {
      for (const e of [...evs, ...early]) this.write(() => this.appendEvent(e));
      eventsReady = true;
    });

    this.done = this.finish(fileEvents);
    this.connect();
  }

  /** After the run ends: final status, then wait for the server to hold everything, then close. */
  private async finish(fileEvents: Promise<unknown>): Promise<boolean> {
    const summary = await this.run.done.catch(() => undefined);
    await fileEvents;
    this.write(() => this.writeEnd(summary));
    // Wait long for a server we have synced with (it may be restarting), briefly for one never reached,
    // not at all when no server was found, so a CLI run does not hang on exit.
    const limit = this.opts.flushTimeoutMs ?? 30_000;
    const ok = await this.flush(this.ready ? limit : this.client ? Math.min(limit, 5000) : 0);
    const keep = this.opts.closeWhenDone === false;
    if (!ok && !this.stopped)
      this.log(
        `room ${this.room}: the server does not hold the whole run yet (unreachable?); ${keep ? 'still trying' : 'giving up, the run directory has everything'}`,
      );
    if (!keep) this.close();
    return ok;
  }

  /** Resolves true once the server holds everything published so far; false after timeoutMs. */
  async flush(timeoutMs = 10_000): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    while (!this.ready || !this.client) {
      if (Date.now() >= deadline || this.stopped) return false;
      await new Promise((r) => setTimeout(r, 50));
    }
    return this.client.flush(Math.max(0, deadline - Date.now()));
  }

  /** Stops publishing and closes the connection (unsynced writes are dropped). */
  close(): void {
    if (this.stopped) return;
    this.stopped = true;
    clearTimeout(this.pollTimer);
    for (const u of this.unsubscribe) u();
    this.client?.close();
  }

  private connect(): void {
    if (this.stopped) return;
    const url = typeof this.opts.url === 'function' ? this.opts.url() : this.opts.url;
    if (!url) {
      // A server started on demand (by Jupyter's proxy) may appear later: keep asking.
      this.pollTimer = setTimeout(() => this.connect(), 1000);
      return;
    }
    const client = new RoomClient(url, {
      room: this.room,
      token: this.opts.token,
      headers: this.opts.headers,
      params: this.opts.params,
      presence: { name: this.user, color: colourFor(this.user), role: 'producer' },
      maxBackoffMs: this.opts.maxBackoffMs,
    });
    this.client = client;
    client.provider.on('sync', (synced: boolean) => {
      if (synced && !this.ready) this.firstSync();
    });
    client.provider.on('closed', (e: { code: number; reason: string }) => {
      const reason = client.denied ?? e.reason;
      if (typeof this.opts.token === 'function' && e.code === 4401) {
        // A minted token may just have expired: the next attempt carries a fresh one.
        if (!this.warnedRefused)
          this.log(`room ${this.room}: refused (${e.code}): ${reason}; retrying with a fresh token`);
        this.warnedRefused = true;
        setTimeout(() => {
          if (this.stopped) return;
          client.closed = undefined;
          client.provider.connect();
        }, 1000);
        return;
      }
      this.log(`room ${this.room}: refused (${e.code}): ${reason}; not publishing this run`);
    });
    if (typeof this.opts.url === 'function') {
      // The on-demand server may come back on another port: look it up again before reconnecting.
      const resolve = this.opts.url;
      client.provider.on('connection-close', () => {
        const next = resolve();
        if (next) client.provider.serverUrl = next.replace(/^http(s?):\/\//, 'ws$1://').replace(/\/+$/, '');
      });
    }
  }

  private firstSync(): void {
    const shared = this.client!.shared;
    for (const m of shared.metrics) this.seenSeq.add(m.seq);
    for (const e of shared.events) this.seenKey.add(e.key);
    for (const e of shared.evals) this.seenKey.add(`eval|${e.key}`);
    if (this.opts.acceptCancel !== false) {
      const onControl = () => this.onCancelRequest(shared.control.get('cancel') as CancelRequest | undefined);
      shared.control.observe(onControl);
      this.unsubscribe.push(() => shared.control.unobserve(onControl));
    }
    this.ready = true;
    const work = this.pending.splice(0);
    this.client!.doc.transact(() => work.forEach((w) => w()));
  }

  /** Runs a write now if the room is synced, else after the first sync. */
  private write(fn: () => void): void {
    if (this.stopped) return;
    if (this.ready) this.client!.doc.transact(fn);
    else this.pending.push(fn);
  }

  private appendMetric(m: Metric, seq: number): void {
    if (this.seenSeq.has(seq)) return;
    this.seenSeq.add(seq);
    const shared = this.client!.shared;
    shared.metrics.push([{ ...m, seq } as MetricEntry]);
    // yjs merges consecutive appends of one client into one item and copies its whole array on each
    // merge (quadratic on every peer); a meta write every CHUNK points breaks the chain, so items hold
    // at most CHUNK points and an append stays O(CHUNK + n / CHUNK).
    if (++this.pushed % METRICS_CHUNK === 0) shared.meta.set('points', shared.metrics.length);
    // Held-out evaluation points also go to evals, so an evals panel needs only that array.
    const key = `metric|${seq}`;
    if (typeof m.eval_loss === 'number' && !this.seenKey.has(`eval|${key}`)) {
      this.seenKey.add(`eval|${key}`);
      shared.evals.push([
        {
          key,
          time: new Date().toISOString(),
          step: m.step,
          stage: m.stage,
          eval_loss: m.eval_loss,
          message: `eval_loss ${m.eval_loss.toFixed(4)}`,
        },
      ]);
    }
  }

  private appendEvent(e: RunEvent): void {
    const key = eventKey(e);
    const shared = this.client!.shared;
    if (!this.seenKey.has(key)) {
      this.seenKey.add(key);
      const entry: EventEntry = { ...e, key };
      if (e.type === 'started') entry.by = (shared.meta.get('startedBy') as string | undefined) ?? this.user;
      if (e.type === 'resumed') entry.by = this.user;
      if (e.type === 'cancelled') entry.by = this.cancelBy ?? this.user;
      shared.events.push([entry]);
    }
    if (e.type === 'eval' && !this.seenKey.has(`eval|${key}`)) {
      this.seenKey.add(`eval|${key}`);
      shared.evals.push([{ ...e, key } as EvalEntry]);
    }
    if (e.type === 'cancelled') {
      shared.meta.set('cancelledBy', this.cancelBy ?? this.user);
      shared.meta.set('cancelledAt', e.time);
    }
  }

  private writeStart(): void {
    const { meta } = this.client!.shared;
    const lock = this.run.lock as {
      id?: string;
      backend?: string;
      recipe?: { name?: string; stage?: string; train?: { steps?: number } };
    };
    const fields: Record<string, unknown> = {
      schema: ROOM_SCHEMA,
      runId: this.run.id,
      room: this.room,
      recipe: lock.recipe?.name ?? lock.recipe?.stage,
      stage: lock.recipe?.stage,
      steps: lock.recipe?.train?.steps,
      lockId: lock.id,
      backend: lock.backend,
      dir: this.run.dir.path,
      status: this.run.status,
    };
    for (const [k, v] of Object.entries(fields)) if (v !== undefined && meta.get(k) !== v) meta.set(k, v);
    // The first publisher of a room records who started the run (the executor's `started` event gets
    // `by` too); a resumed run keeps it and its `resumed` event names who resumed.
    if (meta.get('startedBy') === undefined) {
      meta.set('startedBy', this.user);
      meta.set('startedAt', new Date().toISOString());
    }
  }

  private writeEnd(summary: RunSummary | undefined): void {
    const { meta } = this.client!.shared;
    meta.set('status', summary?.status ?? 'failed');
    if (summary) meta.set('summary', JSON.parse(JSON.stringify(summary)) as RunSummary);
    let count = this.metricCount;
    for (const s of this.seenSeq) if (s + 1 > count) count = s + 1;
    meta.set('metricCount', count);
    meta.set('points', this.client!.shared.metrics.length);
    meta.set('endedAt', new Date().toISOString());
  }

  /** Cancels the run on behalf of `by` (a collaborator), recorded as meta.cancelledBy and on the event. */
  cancelAs(by: string): void {
    this.onCancelRequest({ by, at: new Date().toISOString() } as CancelRequest);
  }

  private onCancelRequest(req: CancelRequest | undefined): void {
    if (!req?.by || this.cancelBy || this.run.status !== 'running') return;
    this.cancelBy = String(req.by);
    this.log(`room ${this.room}: cancel requested by ${this.cancelBy}`);
    this.run.cancel();
  }
}

/** Mirrors a run into its room until it ends; see {@link PublishOptions}. */
export function publishRun(run: Run, opts: PublishOptions): RunPublisher {
  if (!opts?.url) throw new LatheError('publishRun needs the room server url (e.g. ws://127.0.0.1:1234)');
  if (!opts.token)
    throw new LatheError(
      'publishRun needs a write token for the room (lathe rooms token --room run:<id> --role write)',
    );
  return new RunPublisher(run, opts);
}
