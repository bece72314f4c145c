// Run rooms without a browser: a real `lathe rooms serve` process (dist/, built by npm run build) and
// several yjs clients in this process, each over its own WebSocket (BroadcastChannel is off, so
// nothing travels around the server).
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import * as Y from 'yjs';
import type { AnyLock } from '../src/recipe/lock.js';
import {
  connectRoom,
  followRun,
  loadSecret,
  mintToken,
  publishRun,
  RoomStore,
  roomForRun,
  runRoom,
  shareLink,
  type MetricEntry,
  type RoomClient,
  type RunPublisher,
} from '../src/rooms/index.js';
import { awarenessFrame } from '../src/rooms/presence.js';
import { Run } from '../src/runs/run.js';
import { RunDir, type Metric, type RunEvent, type RunSummary } from '../src/runs/rundir.js';
import { lathe, ROOT, scratch, tallySlice, tinyRecipe } from './helpers.js';

const LATHE = join(ROOT, 'bin', 'lathe.js');

/** A `lathe rooms serve` child process. */
interface ServerProc {
  proc: ChildProcess;
  port: number;
  url: string;
  http: string;
  stderr: () => string;
}

/** Every server a test started, so a failing test cannot leave one running. */
const spawned: ChildProcess[] = [];

async function startServer(dataDir: string, port = 0): Promise<ServerProc> {
  const proc = spawn(process.execPath, [LATHE, 'rooms', 'serve', '--port', String(port), '--data-dir', dataDir], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  spawned.push(proc);
  let out = '';
  let err = '';
  proc.stderr!.on('data', (d) => (err += d));
  const url = await new Promise<string>((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`room server did not start: ${err}`)), 20_000);
    proc.stdout!.on('data', (d) => {
      out += d;
      const m = /serving (ws:\/\/[^/\s]+)/.exec(out);
      if (m) {
        clearTimeout(t);
        resolve(m[1]!);
      }
    });
    proc.once('exit', (code) => reject(new Error(`room server exited ${code}: ${err}`)));
  });
  return { proc, url, port: Number(new URL(url).port), http: url.replace('ws://', 'http://'), stderr: () => err };
}

async function stopServer(s: ServerProc, signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
  if (s.proc.exitCode !== null || s.proc.signalCode !== null) return;
  const exited = new Promise((r) => s.proc.once('exit', r));
  s.proc.kill(signal);
  await exited;
}

/** A real Run driven by the test: push metrics and events, then end it with a status. */
function fakeRun(dir: string, id: string, steps = 1000) {
  const rd = new RunDir(join(dir, id));
  const lock = {
    id: `lock-${id}`,
    backend: 'cpu',
    recipe: { name: 'rooms-test', stage: 'pretrain', train: { steps } },
  } as unknown as AnyLock;
  let finish!: (s: RunSummary) => void;
  const exec = new Promise<RunSummary>((r) => (finish = r));
  let n = 0;
  const summary = (status: RunSummary['status']): RunSummary => ({
    id,
    lockId: lock.id,
    stage: 'pretrain',
    status,
    step: n,
    steps,
    tokens: n * 8,
    seconds: 1,
    backend: 'cpu',
    lathe: 'test',
  });
  const event = (type: RunEvent['type'], message: string): void =>
    run.pushEvent({ time: new Date().toISOString(), type, step: n, message });
  const run: Run = new Run(rd, lock, exec, {
    interrupt: () => {},
    cancel: () => {
      event('cancelled', `cancelled at step ${n}`);
      finish(summary('cancelled'));
    },
  });
  return {
    run,
    /** Pushes metric number n+1 (step n+1, loss a known function of the step). */
    metric(): Metric {
      n++;
      const m: Metric = { step: n, stage: 'pretrain', loss: lossAt(n), lr: 0.01 };
      if (n % 50 === 0) m.eval_loss = lossAt(n) + 0.1;
      run.pushMetric(m);
      return m;
    },
    event,
    end(status: RunSummary['status'] = 'completed') {
      event(status === 'completed' ? 'completed' : 'failed', `${status} at step ${n}`);
      finish(summary(status));
    },
  };
}

const lossAt = (step: number) => 6 / Math.sqrt(step);

/** The curve is exactly steps 1..n, in order, each once, with the losses the producer sent. */
function expectCompleteCurve(curve: MetricEntry[], n: number): void {
  expect(curve.length).toBe(n);
  expect(curve.map((m) => m.seq)).toEqual([...Array(n).keys()]);
  expect(curve.map((m) => m.step)).toEqual([...Array(n).keys()].map((i) => i + 1));
  for (const m of curve) expect(m.loss).toBeCloseTo(lossAt(m.step), 12);
}

/** Raw array entries (before any dedupe): every seq must appear once. */
function expectNoDuplicates(f: RoomClient): void {
  const seqs = f.shared.metrics.toArray().map((m) => m.seq);
  expect(new Set(seqs).size).toBe(seqs.length);
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('run rooms (real server process, Node yjs clients)', () => {
  let dir: string;
  let dataDir: string;
  let server: ServerProc;
  let secret: string;
  const clients: { close(): void }[] = [];
  const track = <T extends { close(): void }>(c: T): T => (clients.push(c), c);
  const writeToken = (room = 'run:*') => mintToken(secret, { room, role: 'write', ttl: '10m', sub: 'test' });
  const readToken = (room = 'run:*') => mintToken(secret, { room, role: 'read', ttl: '10m', sub: 'viewer' });

  beforeAll(async () => {
    if (!existsSync(join(ROOT, 'dist', 'src', 'cli', 'rooms.js')))
      throw new Error('dist/ is missing the rooms CLI: run npm run build');
    dir = await scratch('lathe-rooms-');
    dataDir = join(dir, 'rooms');
    server = await startServer(dataDir);
    secret = loadSecret({ dataDir }).secret;
  });

  afterAll(async () => {
    for (const c of clients) c.close();
    if (server) await stopServer(server);
    for (const p of spawned) if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL');
  });

  it('a late joiner gets the whole curve, and live points reach every client', async () => {
    const r = fakeRun(dir, 'late');
    const pub = track(publishRun(r.run, { url: server.url, token: writeToken(), user: 'ada' }));
    const early = track(followRun(`${server.url}/run:late`, { token: readToken(), presence: { name: 'early' } }));
    await early.whenSynced();
    for (let i = 0; i < 300; i++) r.metric();
    await early.waitFor((f) => f.curve().length === 300, 10_000, '300 points at the early follower');
    const late = track(followRun(`${server.url}/run:late?room_token=${readToken()}`));
    await late.whenSynced();
    expectCompleteCurve(late.curve(), 300);
    r.metric();
    await Promise.all([early, late].map((f) => f.waitFor((x) => x.curve().length === 301, 10_000, 'live point 301')));
    r.end();
    expect(await pub.done).toBe(true);
    for (const f of [early, late]) {
      await f.waitFor((x) => x.meta().status === 'completed', 10_000, 'completed');
      expectCompleteCurve(f.curve(), 301);
      expectNoDuplicates(f);
      expect(f.meta()).toMatchObject({
        runId: 'late',
        room: 'run:late',
        recipe: 'rooms-test',
        stage: 'pretrain',
        startedBy: 'ada',
        metricCount: 301,
        status: 'completed',
      });
      expect(f.evals().map((e) => e.step)).toEqual([50, 100, 150, 200, 250, 300]);
      expect(f.events().map((e) => e.type)).toEqual(['completed']);
    }
    // A second producer of the same run (a restarted kernel re-publishing it) adds nothing: every seq
    // and event key is already in the room.
    const again = track(publishRun(r.run, { url: server.url, token: writeToken(), user: 'bob' }));
    expect(await again.done).toBe(true);
    await sleep(50);
    expect(late.shared.metrics.length).toBe(301);
    expect(late.shared.events.length).toBe(1);
    expect(late.meta().startedBy).toBe('ada');
    // The async iterator yields the whole curve, then ends with the run.
    const seen: number[] = [];
    for await (const m of late) seen.push(m.seq);
    expect(seen).toEqual([...Array(301).keys()]);
    // GET on the room URL (the share link form) answers the same curve as JSON.
    const snap = (await (await fetch(shareLink(server.http, 'run:late', readToken('run:late')))).json()) as {
      metrics: MetricEntry[];
      meta: { status: string };
    };
    expectCompleteCurve(snap.metrics, 301);
    expect(snap.meta.status).toBe('completed');
  });

  it('a client that loses its connection catches up with no point lost or duplicated', async () => {
    const r = fakeRun(dir, 'flaky');
    const pub = track(publishRun(r.run, { url: server.url, token: writeToken() }));
    const f = track(followRun(`${server.url}/run:flaky`, { token: readToken(), maxBackoffMs: 200 }));
    await f.whenSynced();
    for (let i = 0; i < 50; i++) r.metric();
    await f.waitFor((x) => x.curve().length === 50);
    // Network loss: the socket dies under the client, which reconnects on its own.
    for (let round = 0; round < 3; round++) {
      for (let i = 0; i < 200 && !f.provider.wsconnected; i++) await sleep(10);
      const ws = f.provider.ws as unknown as { _socket: { destroy(): void } };
      ws._socket.destroy();
      for (let i = 0; i < 40; i++) r.metric();
      await sleep(20);
      for (let i = 0; i < 10; i++) r.metric();
    }
    // And a deliberate disconnect / reconnect.
    f.provider.disconnect();
    for (let i = 0; i < 25; i++) r.metric();
    f.provider.connect();
    await f.waitFor((x) => x.curve().length === 225, 15_000, 'catch-up to 225 points');
    r.end();
    expect(await pub.done).toBe(true);
    await f.waitFor((x) => x.meta().status === 'completed');
    expectCompleteCurve(f.curve(), 225);
    expectNoDuplicates(f);
  });

  it('killing (-9) and restarting the room server mid-run leaves the curve complete, without duplicates', async () => {
    const killDir = join(dir, 'rooms-kill');
    let s = await startServer(killDir);
    const port = s.port;
    const ksecret = loadSecret({ dataDir: killDir }).secret;
    const tok = (role: 'read' | 'write') => mintToken(ksecret, { room: 'run:*', role, ttl: '10m' });
    const r = fakeRun(dir, 'killed');
    const pub: RunPublisher = track(publishRun(r.run, { url: s.url, token: tok('write'), maxBackoffMs: 200 }));
    const f = track(followRun(`${s.url}/run:killed`, { token: tok('read'), maxBackoffMs: 200 }));
    await f.whenSynced();
    // Points keep coming every few ms, whatever the server does.
    let produced = 0;
    let producedWhileDown = 0;
    let down = false;
    const ticker = setInterval(() => {
      for (let i = 0; i < 5; i++) {
        r.metric();
        produced++;
        if (down) producedWhileDown++;
      }
    }, 5);
    try {
      await f.waitFor((x) => x.curve().length >= 150, 10_000, '150 points before the kill');
      s.proc.kill('SIGKILL');
      await new Promise((res) => s.proc.once('exit', res));
      down = true;
      await sleep(400);
      down = false;
      s = await startServer(killDir, port);
      await f.waitFor((x) => x.curve().length >= produced && produced > 400, 15_000, 'catch-up after restart');
    } finally {
      clearInterval(ticker);
    }
    expect(producedWhileDown).toBeGreaterThan(20);
    r.end();
    expect(await pub.done).toBe(true);
    await f.waitFor((x) => x.meta().status === 'completed', 10_000, 'completed after restart');
    expectCompleteCurve(f.curve(), produced);
    expectNoDuplicates(f);
    // With every client gone, kill -9 again: the restarted server alone (from its log) serves the whole
    // curve to a late joiner and over GET.
    f.close();
    await sleep(100);
    s.proc.kill('SIGKILL');
    await new Promise((res) => s.proc.once('exit', res));
    s = await startServer(killDir, port);
    const late = track(followRun(`${s.url}/run:killed`, { token: tok('read') }));
    await late.whenSynced();
    expectCompleteCurve(late.curve(), produced);
    expectNoDuplicates(late);
    expect(late.meta().status).toBe('completed');
    const snap = (await (await fetch(`${s.http}/run:killed?room_token=${tok('read')}`)).json()) as {
      metrics: MetricEntry[];
    };
    expectCompleteCurve(snap.metrics, produced);
    late.close();
    await sleep(100);
    await stopServer(s);
    const state = new RoomStore(join(killDir, 'logs')).state('run:killed')!;
    const doc = new Y.Doc();
    Y.applyUpdate(doc, state);
    const raw = runRoom(doc).metrics.toArray();
    expect(raw.length).toBe(produced);
    expect(new Set(raw.map((m) => m.seq)).size).toBe(produced);
    expect(s.stderr()).not.toMatch(/internal error/);
  });

  it('a producer started while the server is down buffers and syncs everything once it is up', async () => {
    const downDir = join(dir, 'rooms-down');
    const first = await startServer(downDir);
    const port = first.port;
    await stopServer(first);
    const dsecret = loadSecret({ dataDir: downDir }).secret;
    const r = fakeRun(dir, 'early-bird');
    const pub = track(
      publishRun(r.run, {
        url: first.url,
        token: mintToken(dsecret, { room: 'run:*', role: 'write' }),
        maxBackoffMs: 200,
      }),
    );
    for (let i = 0; i < 40; i++) r.metric();
    await sleep(300);
    for (let i = 0; i < 10; i++) r.metric();
    const s = await startServer(downDir, port);
    const f = track(
      followRun(`${s.url}/run:early-bird`, { token: mintToken(dsecret, { room: 'run:early-bird', role: 'read' }) }),
    );
    await f.waitFor((x) => x.curve().length === 50, 10_000, '50 buffered points');
    r.end();
    expect(await pub.done).toBe(true);
    expectCompleteCurve(f.curve(), 50);
    expectNoDuplicates(f);
    f.close();
    await stopServer(s);
  });

  it('refuses wrong, expired, missing and other-room tokens with a clear reason, and stays up', async () => {
    const other = loadSecret({ secret: 'a-different-secret-of-enough-length' }).secret;
    const cases: { token?: string; code: number; reason: RegExp }[] = [
      { token: mintToken(other, { room: 'run:*', role: 'write' }), code: 4401, reason: /signature is wrong/ },
      {
        token: mintToken(secret, { room: 'run:*', role: 'write', ttl: 60, now: Math.floor(Date.now() / 1000) - 120 }),
        code: 4401,
        reason: /expired at/,
      },
      { token: undefined, code: 4401, reason: /no token/ },
      { token: 'not-a-token', code: 4401, reason: /malformed token/ },
      { token: mintToken(secret, { room: 'run:other', role: 'write' }), code: 4403, reason: /is for room "run:other"/ },
    ];
    for (const c of cases) {
      const f = track(connectRoom(`${server.url}/run:guarded`, { token: c.token }));
      await expect(f.whenSynced(5000)).rejects.toThrow(c.reason);
      expect(f.closed?.code).toBe(c.code);
      expect(f.denied).toMatch(c.reason);
      expect(f.doc.getArray('metrics').length).toBe(0);
    }
    // Bad frames close that connection only.
    const tok = writeToken();
    const closeOf = (send: (ws: WebSocket) => void) =>
      new Promise<number>((resolve) => {
        const ws = new WebSocket(`${server.url}/run:guarded?room_token=${tok}`);
        ws.on('open', () => send(ws));
        ws.on('close', (code) => resolve(code));
      });
    expect(await closeOf((ws) => ws.send('hello'))).toBe(1003);
    expect(await closeOf((ws) => ws.send(new Uint8Array([0, 2, 200, 1, 7])))).toBe(1007);
    expect(await closeOf((ws) => ws.send(new Uint8Array([1, 5, 1, 2])))).toBe(1007);
    // A room whose log on disk is not a room log is refused (1011); the others carry on.
    await writeFile(join(dataDir, 'logs', `${encodeURIComponent('run:corrupt')}.ylog`), 'not a log');
    const corrupt = await new Promise<number>((resolve) => {
      const ws = new WebSocket(`${server.url}/run:corrupt?room_token=${tok}`);
      ws.on('close', (code) => resolve(code));
    });
    expect(corrupt).toBe(1011);
    // GET refuses too, with 401 / 403.
    expect((await fetch(`${server.http}/run:guarded?room_token=nope`)).status).toBe(401);
    expect(
      (await fetch(`${server.http}/run:guarded?room_token=${mintToken(secret, { room: 'run:x', role: 'read' })}`))
        .status,
    ).toBe(403);
    // The server is still up and serving.
    const ok = track(connectRoom(`${server.url}/run:guarded`, { token: tok }));
    await ok.whenSynced();
    expect(server.proc.exitCode).toBe(null);
    expect(server.stderr()).toMatch(/refused run:guarded from .*expired at/);
    expect(server.stderr()).toMatch(/bad frame/);
    expect(server.stderr()).toMatch(/room run:corrupt: cannot open: .*not a lathe room log/);
  });

  it('a read-only token syncs and shows presence but cannot write', async () => {
    const r = fakeRun(dir, 'readonly');
    const pub = track(publishRun(r.run, { url: server.url, token: writeToken() }));
    for (let i = 0; i < 20; i++) r.metric();
    const reader = track(
      followRun(`${server.url}/run:readonly`, { token: readToken('run:readonly'), presence: { name: 'viewer-vic' } }),
    );
    const writer = track(followRun(`${server.url}/run:readonly`, { token: writeToken('run:readonly') }));
    await Promise.all([reader.whenSynced(), writer.whenSynced()]);
    await reader.waitFor((x) => x.curve().length === 20);
    const denied = reader.nextDenied();
    reader.shared.metrics.push([{ seq: 9999, step: 9999, stage: 'pretrain', loss: -1 }]);
    reader.shared.meta.set('status', 'failed');
    expect(await denied).toMatch(/read-only/);
    for (let i = 0; i < 5; i++) r.metric();
    await writer.waitFor((x) => x.curve().length === 25);
    await reader.waitFor((x) => x.curve().length >= 25);
    expect(writer.curve().some((m) => m.seq === 9999)).toBe(false);
    expect(writer.meta().status).toBe('running');
    // The viewer's presence still reached the writer.
    await writer.waitFor((x) => x.presence().some((p) => p.name === 'viewer-vic'), 5000, 'viewer presence');
    r.end();
    await pub.done;
    const snap = (await (await fetch(`${server.http}/run:readonly?room_token=${readToken()}`)).json()) as {
      metrics: MetricEntry[];
      meta: { status: string };
    };
    expect(snap.metrics.map((m) => m.seq)).toEqual([...Array(25).keys()]);
    expect(snap.meta.status).toBe('completed');
  });

  it('presence (names and colours) propagates and leaves with its client', async () => {
    const ada = track(
      connectRoom(`${server.url}/run:presence`, { token: writeToken(), presence: { name: 'Ada', color: '#ff0000' } }),
    );
    const bob = track(
      connectRoom(`${server.url}/run:presence`, { token: readToken(), presence: { name: 'Bob', color: '#00ff00' } }),
    );
    await Promise.all([ada.whenSynced(), bob.whenSynced()]);
    const cy = track(followRun(`${server.url}/run:presence`, { token: readToken(), presence: { name: 'Cy' } }));
    await cy.whenSynced();
    const hasBoth = () => ['Ada', 'Bob'].every((n) => cy.presence().some((p) => p.name === n));
    for (let i = 0; i < 100 && !hasBoth(); i++) await sleep(20);
    expect(cy.presence().find((p) => p.name === 'Ada')).toMatchObject({ color: '#ff0000', role: 'viewer' });
    expect(cy.presence().find((p) => p.name === 'Bob')).toMatchObject({ color: '#00ff00' });
    // Ada's later change reaches Cy; when Ada leaves, the server removes her.
    ada.awareness.setLocalStateField('user', { name: 'Ada L.', color: '#ff0000' });
    for (let i = 0; i < 100 && !cy.presence().some((p) => p.name === 'Ada L.'); i++) await sleep(20);
    expect(cy.presence().some((p) => p.name === 'Ada L.')).toBe(true);
    ada.close();
    for (let i = 0; i < 100 && cy.presence().some((p) => p.name.startsWith('Ada')); i++) await sleep(20);
    expect(
      cy
        .presence()
        .map((p) => p.name)
        .sort(),
    ).toEqual(['Bob', 'Cy']);
  });

  it("a read token cannot forge another client's presence: the server drops it, and stamps presence with the token's identity", async () => {
    const adaToken = mintToken(secret, { room: 'run:forge', role: 'write', ttl: '10m', sub: 'ada' });
    const ada = track(
      connectRoom(`${server.url}/run:forge`, {
        token: adaToken,
        presence: { name: 'Ada', color: '#ff0000', role: 'producer' },
      }),
    );
    const cy = track(followRun(`${server.url}/run:forge`, { token: readToken(), presence: { name: 'Cy' } }));
    await Promise.all([ada.whenSynced(), cy.whenSynced()]);
    // Presence is awareness, not the doc: poll for it.
    const presently = async (ok: () => boolean, what: string) => {
      for (let i = 0; i < 250 && !ok(); i++) await sleep(20);
      expect(ok(), what).toBe(true);
    };
    await presently(() => cy.presence().some((p) => p.name === 'Ada'), "Ada's presence");
    const adaId = ada.doc.clientID;
    // Mallory holds a read token and speaks raw y-websocket.
    const mallory = new WebSocket(`${server.url}/run:forge?room_token=${readToken()}`);
    await new Promise((r) => mallory.once('open', r));
    const forged = { user: { name: 'Ada', color: '#000000' }, lathe: { role: 'producer', note: 'forged' } };
    mallory.send(awarenessFrame([{ clientId: adaId, clock: 1000, state: forged }]));
    mallory.send(awarenessFrame([{ clientId: adaId, clock: 1001, state: null }]));
    // Her own presence, claiming to be the producer and someone else's token.
    mallory.send(
      awarenessFrame([
        {
          clientId: 4242,
          clock: 1,
          state: { user: { name: 'Mallory' }, lathe: { role: 'producer', sub: 'ada', access: 'write' } },
        },
      ]),
    );
    await presently(() => cy.presence().some((p) => p.name === 'Mallory'), "Mallory's presence");
    const byId = (id: number) => cy.presence().find((p) => p.clientId === id);
    expect(byId(adaId)).toEqual({
      clientId: adaId,
      name: 'Ada',
      color: '#ff0000',
      role: 'producer',
      sub: 'ada',
      access: 'write',
    });
    // Ada's own view of herself was not rewritten either.
    expect(ada.presence().find((p) => p.clientId === adaId)).toMatchObject({ name: 'Ada', color: '#ff0000' });
    expect(byId(4242)).toMatchObject({ name: 'Mallory', role: 'viewer', sub: 'viewer', access: 'read' });
    const logged = new RegExp(
      `room run:forge: dropped presence viewer@127\\.0\\.0\\.1 sent for client ids it does not hold \\(${adaId}\\)`,
    );
    await presently(() => logged.test(server.stderr()), 'the forgery in the server log');
    // When Mallory leaves, her presence goes with her, and only hers.
    mallory.close();
    await presently(() => !cy.presence().some((p) => p.name === 'Mallory'), 'Mallory to leave');
    expect(byId(adaId)).toMatchObject({ name: 'Ada', sub: 'ada' });
  });

  it('a cancel request in the room cancels the run and records who cancelled it', async () => {
    const r = fakeRun(dir, 'cancel');
    const pub = track(publishRun(r.run, { url: server.url, token: writeToken(), user: 'ada' }));
    for (let i = 0; i < 10; i++) r.metric();
    const grace = track(followRun(`${server.url}/run:cancel`, { token: writeToken('run:cancel') }));
    await grace.waitFor((x) => x.curve().length === 10);
    grace.requestCancel('grace');
    expect((await r.run.done).status).toBe('cancelled');
    await pub.done;
    await grace.waitFor((x) => x.meta().status === 'cancelled');
    expect(grace.meta()).toMatchObject({ startedBy: 'ada', cancelledBy: 'grace', metricCount: 10 });
    expect(grace.events().find((e) => e.type === 'cancelled')).toMatchObject({ by: 'grace', step: 10 });
  });

  it('lathe train with LATHE_ROOMS_URL publishes the real run: the room holds metrics.jsonl exactly', async () => {
    const data = await tallySlice(dir, 400);
    await writeFile(
      join(dir, 'tiny.json'),
      JSON.stringify(
        tinyRecipe(data, {
          train: { steps: 12, batchSize: 4, warmupSteps: 2, checkpointEvery: 0 },
          eval: { every: 4, batches: 2 },
        }),
      ),
    );
    const out = join(dir, 'tiny-run');
    const t = lathe(['train', join(dir, 'tiny.json'), '--out', out], {
      env: { LATHE_ROOMS_URL: server.url, LATHE_ROOMS_DIR: dataDir, LATHE_USER: 'trainer' },
    });
    expect(t.status, t.stderr).toBe(0);
    const metrics = (await readFile(join(out, 'metrics.jsonl'), 'utf8'))
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as Metric);
    const events = (await readFile(join(out, 'events.jsonl'), 'utf8'))
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as RunEvent);
    // The CLI has exited: what the room holds was flushed before exit.
    // Auto-published rooms carry a hash of the run dir (the same recipe in two folders gets two rooms).
    const res = await fetch(`${server.http}/${roomForRun('tiny-run', out)}?room_token=${readToken()}`);
    expect(res.status).toBe(200);
    const snap = (await res.json()) as {
      metrics: MetricEntry[];
      events: RunEvent[];
      evals: { step: number }[];
      meta: Record<string, unknown>;
    };
    expect(snap.metrics.map(({ seq, ...m }) => (expect(seq).toBe(m.step - 1), m))).toEqual(metrics);
    expect(snap.events.map((e) => e.message)).toEqual(events.map((e) => e.message));
    expect(snap.events.find((e) => e.type === 'started')).toMatchObject({ by: 'trainer' });
    expect(snap.evals.map((e) => e.step)).toEqual(metrics.filter((m) => m.eval_loss !== undefined).map((m) => m.step));
    expect(snap.meta).toMatchObject({
      runId: 'tiny-run',
      status: 'completed',
      startedBy: 'trainer',
      metricCount: 12,
      steps: 12,
    });
  });
});
