// Run rooms behind Jupyter: a real `jupyter lab` with jupyter-server-proxy and the repository's
// jupyter-config/jupyter_server_config.json, which starts `lathe rooms serve` on demand at
// <base_url>lathe-rooms/. Checks that the rooms sync through Jupyter's own authentication and that
// nothing gets through without it. Skipped when the venv lacks jupyter-server-proxy (npm run setup).
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import type { AnyLock } from '../src/recipe/lock.js';
import {
  followRun,
  loadSecret,
  mintToken,
  publishRun,
  readServerInfo,
  roomRef,
  type MetricEntry,
} from '../src/rooms/index.js';
import { Run } from '../src/runs/run.js';
import { RunDir, type RunSummary } from '../src/runs/rundir.js';
import { ROOT, scratch } from './helpers.js';

const JUPYTER = join(ROOT, '.venv', 'bin', 'jupyter');
const hasProxy =
  existsSync(JUPYTER) &&
  spawnSync(join(ROOT, '.venv', 'bin', 'python'), ['-c', 'import jupyter_server_proxy']).status === 0;
const TOKEN = 'jupyter-test-token';

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

describe.skipIf(!hasProxy)('run rooms through Jupyter (jupyter-server-proxy)', () => {
  let jupyter: ChildProcess;
  let base: string;
  let dataDir: string;
  let log = '';

  beforeAll(async () => {
    if (!existsSync(join(ROOT, 'dist', 'src', 'cli', 'rooms.js')))
      throw new Error('dist/ is missing the rooms CLI: run npm run build');
    const dir = await scratch('lathe-rooms-jupyter-');
    dataDir = join(dir, 'rooms');
    const port = await freePort();
    base = `http://127.0.0.1:${port}/`;
    jupyter = spawn(
      JUPYTER,
      [
        'lab',
        '--no-browser',
        `--port=${port}`,
        '--ip=127.0.0.1',
        `--IdentityProvider.token=${TOKEN}`,
        '--allow-root',
        '--config=jupyter-config/jupyter_server_config.json',
        `--ServerApp.root_dir=${ROOT}`,
      ],
      {
        cwd: ROOT,
        env: {
          ...process.env,
          JUPYTER_PATH: join(ROOT, '.venv', 'share', 'jupyter'),
          LATHE_ROOMS_DIR: dataDir,
          JUPYTER_CONFIG_DIR: join(dir, 'jupyter-config-dir'),
        },
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    jupyter.stdout!.on('data', (d) => (log += d));
    jupyter.stderr!.on('data', (d) => (log += d));
    for (let i = 0; ; i++) {
      const ok = await fetch(`${base}api/status?token=${TOKEN}`).then(
        (r) => r.ok,
        () => false,
      );
      if (ok) break;
      if (i > 120 || jupyter.exitCode !== null) throw new Error(`jupyter lab did not start:\n${log}`);
      await new Promise((r) => setTimeout(r, 250));
    }
  });

  afterAll(async () => {
    if (!jupyter || jupyter.exitCode !== null) return;
    const exited = new Promise((r) => jupyter.once('exit', r));
    jupyter.kill('SIGTERM');
    await exited;
  });

  it("refuses the rooms without Jupyter's token, even with a valid room token", async () => {
    // The room server is not even started by an unauthenticated request.
    const res = await fetch(`${base}lathe-rooms/healthz`, { redirect: 'manual' });
    expect([302, 403]).toContain(res.status);
    const status = await fetch(`${base}lathe-rooms/healthz`, { headers: { Authorization: `token ${TOKEN}` } });
    expect(status.status).toBe(200);
    expect(await status.json()).toMatchObject({ ok: true, service: 'lathe rooms' });
    const roomToken = mintToken(loadSecret({ dataDir }).secret, { room: 'run:*', role: 'write' });
    const code = await new Promise<number>((resolve) => {
      const ws = new WebSocket(`${base.replace('http', 'ws')}lathe-rooms/run:nope?room_token=${roomToken}`);
      ws.on('unexpected-response', (_req, r) => resolve(r.statusCode ?? 0));
      ws.on('open', () => resolve(101));
      ws.on('error', () => resolve(-1));
    });
    expect(code).toBe(403);
  });

  it("syncs a run room through the proxy: producer and viewers, the kernel's roomRef, refusals", async () => {
    // The server Jupyter started runs on our data dir and recorded its loopback address.
    const info = readServerInfo(dataDir);
    expect(info?.url).toMatch(/^ws:\/\/127\.0\.0\.1:\d+$/);
    const jupyterAuth = { Authorization: `token ${TOKEN}` };
    const roomsBase = `${base}lathe-rooms`;

    // A producer publishing through the proxy (as a worker on another machine would).
    const rd = new RunDir(join(dataDir, '..', 'jrun'));
    const lock = {
      id: 'lock-j',
      backend: 'cpu',
      recipe: { name: 'j', stage: 'pretrain', train: { steps: 30 } },
    } as unknown as AnyLock;
    let finish!: (s: RunSummary) => void;
    const run = new Run(rd, lock, new Promise<RunSummary>((r) => (finish = r)));
    const write = mintToken(loadSecret({ dataDir }).secret, { room: 'run:jrun', role: 'write' });
    const pub = publishRun(run, { url: roomsBase, token: write, headers: jupyterAuth, user: 'ada' });

    // A viewer the way the browser extension connects: the kernel's roomRef gives path + read token.
    const ref = roomRef('jrun', { dataDir });
    expect(ref).toMatchObject({ name: 'run:jrun', path: 'lathe-rooms/run%3Ajrun', param: 'room_token', role: 'read' });
    const viewer = followRun(`${base}${ref.path}?${ref.param}=${ref.token}`, {
      params: { token: TOKEN },
      presence: { name: 'Vic' },
    });
    for (let i = 1; i <= 30; i++) run.pushMetric({ step: i, stage: 'pretrain', loss: 10 / i });
    await viewer.whenSynced();
    await viewer.waitFor((f) => f.curve().length === 30, 15_000, '30 points through Jupyter');
    expect(viewer.curve().map((m) => m.loss)).toEqual([...Array(30).keys()].map((i) => 10 / (i + 1)));
    await viewer.waitFor(
      (f) => f.presence().some((p) => p.name === 'ada' && p.role === 'producer'),
      5000,
      'producer presence',
    );
    // The viewer's token is read-only: its write is refused, the producer never sees it.
    const denied = viewer.nextDenied();
    viewer.shared.metrics.push([{ seq: 500, step: 500, stage: 'pretrain' }]);
    expect(await denied).toMatch(/read-only/);
    finish({
      id: 'jrun',
      lockId: 'lock-j',
      stage: 'pretrain',
      status: 'completed',
      step: 30,
      steps: 30,
      tokens: 0,
      seconds: 1,
      backend: 'cpu',
      lathe: 'test',
    });
    expect(await pub.done).toBe(true);
    await viewer.waitFor((f) => f.meta().status === 'completed', 10_000, 'completed');
    viewer.close();

    // A wrong room token through the proxy: the refusal and its reason still reach the client.
    const bad = followRun(`${roomsBase}/run:jrun`, {
      token: mintToken('some-other-secret-0123', { room: '*', role: 'read' }),
      headers: jupyterAuth,
    });
    await expect(bad.whenSynced(10_000)).rejects.toThrow(/signature is wrong/);
    expect(bad.closed?.code).toBe(4401);
    bad.close();

    // GET through Jupyter answers the room as JSON (what a share link opens).
    const snap = await fetch(`${roomsBase}/run:jrun?room_token=${ref.token}`, { headers: jupyterAuth });
    expect(snap.status).toBe(200);
    const body = (await snap.json()) as { metrics: MetricEntry[] };
    expect(body.metrics.map((m) => m.seq)).toEqual([...Array(30).keys()]);
  });
});
