// Hostile and careless clients against a real `lathe worker` process (the built CLI): bounded sizes,
// file modes, connection limits and keepalive. Each probe checks that the process stays up and says
// what was wrong, naming the field.
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, readFile, stat, writeFile } from 'node:fs/promises';
import { createServer, Socket } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { connect } from '../src/dispatch/worker.js';
import { Recipe } from '../src/runs/recipe.js';
import { ConnectionLost, WorkerClient } from '../src/worker/client.js';
import { encodeBinary, PROTOCOL_VERSION } from '../src/worker/protocol.js';
import { ROOT, scratch, tallySlice, tinyRecipe } from './helpers.js';

const TOKEN = 'hardening-test-token-0123456789abcdef';
const SHA = 'a'.repeat(64);

const until = async (what: string, ok: () => boolean | Promise<boolean>, ms = 60_000) => {
  const deadline = Date.now() + ms;
  while (!(await ok())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
};

const children: ChildProcess[] = [];
afterAll(() => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
});

interface WorkerProc {
  child: ChildProcess;
  url: string;
  stderr: () => string;
  alive: () => boolean;
}

/** `lathe worker` as a child process, resolved once it listens. */
async function startWorker(dir: string, args: string[], name = 'url'): Promise<WorkerProc> {
  const announce = join(dir, name);
  let err = '';
  const child = spawn(
    process.execPath,
    [
      join(ROOT, 'bin', 'lathe.js'),
      'worker',
      '--token-file',
      join(dir, 'token'),
      '--backend',
      'cpu',
      '--announce',
      announce,
      ...args,
    ],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  children.push(child);
  child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  await until('the worker to listen', () => existsSync(announce) || child.exitCode !== null);
  if (child.exitCode !== null) throw new Error(`worker exited ${child.exitCode}: ${err}`);
  return {
    child,
    url: (await readFile(announce, 'utf8')).trim(),
    stderr: () => err,
    alive: () => child.exitCode === null && child.signalCode === null,
  };
}

/** A raw socket that collects the worker's text replies, for frames no well-behaved client sends. */
async function raw(
  url: string,
  opts: WebSocket.ClientOptions = {},
): Promise<{ ws: WebSocket; next(): Promise<Record<string, unknown>> }> {
  const ws = new WebSocket(url, { headers: { authorization: `Bearer ${TOKEN}` }, ...opts });
  const inbox: Record<string, unknown>[] = [];
  const waiters: ((m: Record<string, unknown>) => void)[] = [];
  ws.on('message', (d: Buffer, isBinary: boolean) => {
    if (isBinary) return;
    const m = JSON.parse(d.toString()) as Record<string, unknown>;
    const w = waiters.shift();
    if (w) w(m);
    else inbox.push(m);
  });
  await new Promise<void>((res, rej) => {
    ws.once('open', () => res());
    ws.once('error', rej);
  });
  return { ws, next: () => (inbox.length ? Promise.resolve(inbox.shift()!) : new Promise((r) => waiters.push(r))) };
}

/** What the worker answers an upgrade it refuses: status and body. */
function refusal(url: string, localAddress: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { headers: { authorization: `Bearer ${TOKEN}` }, localAddress });
    ws.once('open', () => reject(new Error(`connection from ${localAddress} was accepted`)));
    ws.once('error', () => {});
    ws.once('unexpected-response', (_req, res) => {
      let body = '';
      res.on('data', (d: Buffer) => (body += d.toString()));
      res.once('end', () => resolve({ status: res.statusCode!, body }));
    });
  });
}

/** The built CLI, without blocking this process (its clients must keep answering pings). */
function latheAsync(args: string[]): Promise<{ status: number | null; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [join(ROOT, 'bin', 'lathe.js'), ...args], {
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    children.push(child);
    let stderr = '';
    child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    child.once('close', (code) => resolve({ status: code, stderr }));
  });
}

/** Connects once the worker has a slot (a connection closed by an earlier step may still be counted). */
async function connectWhenFree(url: string): Promise<WorkerClient> {
  let c: WorkerClient | undefined;
  await until('a free connection slot', async () => {
    c = await WorkerClient.connect(url, { token: TOKEN, reconnect: false }).catch(() => undefined);
    return c !== undefined;
  });
  return c!;
}

const closed = (ws: WebSocket) =>
  ws.readyState === WebSocket.CLOSED
    ? Promise.resolve()
    : new Promise<void>((r) => {
        ws.once('close', () => r());
        ws.close();
      });

describe('worker hardening (a real lathe worker process)', () => {
  let dir: string;
  let worker: WorkerProc;

  beforeAll(async () => {
    dir = await scratch('lathe-whard-');
    await writeFile(join(dir, 'token'), TOKEN + '\n', { mode: 0o600 });
    worker = await startWorker(dir, [
      '--listen',
      '127.0.0.1:0',
      '--state-dir',
      join(dir, 'state'),
      '--chunk-bytes',
      '1024',
      '--max-connections-per-client',
      '2',
      '--max-connections',
      '3',
      '--keepalive-ms',
      '1000',
    ]);
  });

  it('one hostile upload.begin (or any other oversized field) cannot kill the worker: each is refused naming its field, and the process stays up', async () => {
    const c = await raw(worker.url);
    const text = (m: Record<string, unknown>) => JSON.stringify({ v: PROTOCOL_VERSION, id: 7, ...m });
    const cases: [string | Buffer, string, RegExp][] = [
      // The report's message: one chunk entry per byte of a 500 MB file.
      [
        text({ type: 'upload.begin', sha256: SHA, bytes: 5e8, chunkBytes: 1 }),
        'bad-message',
        /^upload\.begin: field "chunkBytes": .*>=1024/,
      ],
      [text({ type: 'upload.begin', sha256: SHA, bytes: 2 ** 50 }), 'bad-message', /^upload\.begin: field "bytes"/],
      [text({ type: 'upload.begin', sha256: SHA, bytes: 1e300 }), 'bad-message', /^upload\.begin: field "bytes"/],
      [text({ type: 'upload.begin', sha256: SHA, bytes: -1 }), 'bad-message', /^upload\.begin: field "bytes"/],
      // Within the byte limit, but too many of this worker's 1 KiB chunks.
      [
        text({ type: 'upload.begin', sha256: SHA, bytes: 2 ** 30 + 1024 }),
        'bad-message',
        /^upload\.begin: field "bytes": 1073742848 bytes in chunks of 1024 bytes make 1048577 chunks; an upload has at most 1048576/,
      ],
      [
        encodeBinary(
          { v: PROTOCOL_VERSION, id: 7, type: 'upload.chunk', sha256: SHA, index: 2 ** 40, chunkSha256: SHA },
          Buffer.from('x'),
        ),
        'bad-message',
        /^upload\.chunk: field "index"/,
      ],
      [
        text({ type: 'submit', lock: {}, files: [{ path: '/data/a\u0000b.jsonl', sha256: SHA, bytes: 3 }] }),
        'bad-message',
        /^submit: field "files\[0\]\.path": must not contain a NUL byte/,
      ],
      [
        text({ type: 'submit', lock: {}, files: [{ path: '/data/a.jsonl', sha256: SHA, bytes: 2 ** 50 }] }),
        'bad-message',
        /^submit: field "files\[0\]\.bytes"/,
      ],
      [
        text({ type: 'lock', recipe: {}, baseDir: '/x\u0000', backend: 'cpu', files: [] }),
        'bad-message',
        /^lock: field "baseDir": must not contain a NUL byte/,
      ],
      [
        text({ type: 'lock', recipe: {}, baseDir: `/${'x'.repeat(5000)}`, backend: 'cpu', files: [] }),
        'bad-message',
        /^lock: field "baseDir"/,
      ],
      [
        `{"v":${PROTOCOL_VERSION},"id":7,"type":"submit","files":[],"lock":${'{"a":'.repeat(100_000)}1${'}'.repeat(100_000)}}`,
        'bad-message',
        /^submit: field "lock": nested deeper than 32 levels/,
      ],
      [text({ type: 'watch', job: 'j', metrics: 1e300 }), 'bad-message', /^watch: field "metrics"/],
      [text({ type: 'hello', client: 'x'.repeat(1000) }), 'bad-message', /^hello: field "client"/],
    ];
    for (const [frame, code, message] of cases) {
      c.ws.send(frame);
      const r = await c.next();
      expect(r, String(frame).slice(0, 80)).toMatchObject({ type: 'error', re: 7, code });
      expect(r.message).toMatch(message);
      expect(worker.alive()).toBe(true);
    }
    // The same connection still works, and nothing was logged as an internal fault.
    c.ws.send(text({ type: 'hello' }));
    expect(await c.next()).toMatchObject({ type: 'welcome', protocol: PROTOCOL_VERSION, chunkBytes: 1024 });
    await closed(c.ws);
    expect(worker.stderr()).not.toMatch(/internal error|\n\s+at /);
    expect(worker.alive()).toBe(true);
  });

  it('caps connections per client address and in total, with a refusal that says which limit; the worker keeps serving', async () => {
    const a = await connectWhenFree(worker.url);
    const b = await connectWhenFree(worker.url);
    await expect(WorkerClient.connect(worker.url, { token: TOKEN, reconnect: false })).rejects.toThrow(
      /refused the connection \(429\): too many connections from 127\.0\.0\.1: 2 open, the limit is 2 \(lathe worker --max-connections-per-client\)/,
    );
    // The CLI says the same, and exits 2.
    const cli = await latheAsync(['jobs', '--worker', worker.url, '--token-file', join(dir, 'token')]);
    expect(cli.status).toBe(2);
    expect(cli.stderr).toMatch(/too many connections from 127\.0\.0\.1: 2 open, the limit is 2/);
    // Another address may still connect, up to the total.
    const other = await raw(worker.url, { localAddress: '127.0.0.2' });
    expect(await refusal(worker.url, '127.0.0.3')).toEqual({
      status: 503,
      body: 'lathe worker: too many connections: 3 open, the limit is 3 (lathe worker --max-connections); retry later\n',
    });
    await until('the refusal in the log', () =>
      /refused connection from 127\.0\.0\.3:\d+: 3 connections already \(the limit\)/.test(worker.stderr()),
    );
    // A slot freed is a slot taken.
    a.close();
    const again = await connectWhenFree(worker.url);
    expect(await again.jobs()).toEqual([]);
    again.close();
    expect(await b.jobs()).toEqual([]);
    b.close();
    await closed(other.ws);
    expect(worker.alive()).toBe(true);
  });

  // The worker pings every second (generous, so a busy test process is not taken for a dead one); the
  // client behind the proxy pings every 300 ms.
  it('keepalive: a client that answers no ping is dropped by the worker; a client behind a connection gone silent reports ConnectionLost', async () => {
    // A client whose socket answers no ping (as a half-open one would not): the worker drops it.
    let mute!: Awaited<ReturnType<typeof raw>>;
    await until('a free connection slot', () =>
      raw(worker.url, { autoPong: false }).then(
        (r) => ((mute = r), true),
        () => false,
      ),
    );
    const healthy = await connectWhenFree(worker.url);
    const t0 = Date.now();
    await new Promise<void>((r) => mute.ws.once('close', () => r()));
    const dropAfter = Date.now() - t0;
    expect(dropAfter).toBeLessThan(5_000);
    await until('the drop in the log', () =>
      /client 127\.0\.0\.1:\d+ answered no ping for 1000 ms; dropping it/.test(worker.stderr()),
    );
    // A client that answers stays, through several ping rounds.
    await new Promise((r) => setTimeout(r, 2_500));
    expect(healthy.connected).toBe(true);
    expect(await healthy.jobs()).toEqual([]);
    healthy.close();

    // The other direction: a proxy that stops forwarding without closing (a half-open path).
    const sockets: Socket[] = [];
    let frozen = false;
    const target = new URL(worker.url);
    const proxy = createServer((inbound) => {
      const outbound = new Socket();
      outbound.connect(Number(target.port), target.hostname);
      sockets.push(inbound, outbound);
      inbound.on('data', (d) => !frozen && outbound.write(d));
      outbound.on('data', (d) => !frozen && inbound.write(d));
      inbound.on('error', () => {});
      outbound.on('error', () => {});
    });
    await new Promise<void>((r) => proxy.listen(0, '127.0.0.1', () => r()));
    const port = (proxy.address() as { port: number }).port;
    const c = await WorkerClient.connect(`ws://127.0.0.1:${port}`, {
      token: TOKEN,
      reconnect: false,
      keepaliveMs: 300,
    });
    expect(await c.jobs()).toEqual([]);
    const lost = new Promise<Error>((r) => c.once('lost', r));
    frozen = true;
    const t1 = Date.now();
    const pending = c.jobs().then(
      () => undefined,
      (e: Error) => e,
    );
    expect(await pending).toBeInstanceOf(ConnectionLost);
    expect(await lost).toBeInstanceOf(ConnectionLost);
    expect(Date.now() - t1).toBeLessThan(2_000);
    // The worker noticed its side too (its pings went unanswered): its log says it dropped a client.
    await until(
      'the worker to drop the silent client',
      () => (worker.stderr().match(/answered no ping for 1000 ms; dropping it/g) ?? []).length >= 2,
      10_000,
    );
    for (const s of sockets) s.destroy();
    await new Promise((r) => proxy.close(r));
    expect(worker.alive()).toBe(true);
  });
});

describe('worker state on disk (a real lathe worker process, killed and restarted)', () => {
  it('a partial upload left by a killed worker resumes after the restart; state, job and upload folders are 0700, blobs 0400', async () => {
    const dir = await scratch('lathe-wperm-');
    await writeFile(join(dir, 'token'), TOKEN + '\n', { mode: 0o600 });
    const state = join(dir, 'state');
    const args = ['--listen', '127.0.0.1:0', '--state-dir', state, '--chunk-bytes', '1024'];
    const first = await startWorker(dir, args, 'url1');

    const data = await tallySlice(dir, 120);
    const bytes = await readFile(data);
    const file = { path: data, sha256: createHash('sha256').update(bytes).digest('hex'), bytes: bytes.length };
    const chunks = Math.ceil(bytes.length / 1024);
    expect(chunks).toBeGreaterThan(6);
    const c1 = await WorkerClient.connect(first.url, { token: TOKEN, reconnect: false });
    let acked = 0;
    const cut = c1.upload(file, {
      window: 1,
      onChunk: () => {
        if (++acked === 4) c1.drop();
      },
    });
    await expect(cut).rejects.toThrow(/lost the connection/);
    // The worker dies with the upload unfinished (kill -9: nothing is tidied up).
    const exited = new Promise((r) => first.child.once('exit', r));
    first.child.kill('SIGKILL');
    await exited;
    expect(existsSync(join(state, 'uploads', `${file.sha256}.part`))).toBe(true);

    const second = await startWorker(dir, args, 'url2');
    const c2 = await WorkerClient.connect(second.url, { token: TOKEN, reconnect: false });
    expect(await c2.upload(file)).toEqual({ sha256: file.sha256, sent: chunks - 4, skipped: 4, bytes: file.bytes });
    const blob = join(state, 'blobs', file.sha256);
    expect(
      createHash('sha256')
        .update(await readFile(blob))
        .digest('hex'),
    ).toBe(file.sha256);
    const mode = async (p: string) => (await stat(p)).mode & 0o777;
    expect(await mode(blob)).toBe(0o400);
    for (const d of [state, join(state, 'blobs'), join(state, 'uploads'), join(state, 'jobs')])
      expect(await mode(d), d).toBe(0o700);
    c2.close();

    // A job: its folder is 0700 from the start, and its inputs are the blobs themselves (0400).
    const w = await connect(second.url, { token: TOKEN, reconnect: false });
    const run = await new Recipe(
      tinyRecipe(data, { train: { steps: 1, batchSize: 2, warmupSteps: 0, checkpointEvery: 1 } }),
      { baseDir: dir },
    ).run({ on: w, out: join(dir, 'mirror') });
    expect(run.summary!.status).toBe('completed');
    const jobDir = join(state, 'jobs', w.lastJob!.id);
    expect(await mode(jobDir)).toBe(0o700);
    expect(await mode(join(jobDir, 'inputs', 'tally.jsonl'))).toBe(0o400);
    w.close();
    second.child.kill('SIGTERM');
    await new Promise((r) => second.child.once('exit', r));
  });
});

describe('user modules on a worker (a real lathe worker process)', () => {
  it('a reward module cannot read outside its job and the data root, list the state folder, start processes or reach the network; one that kills its process or never loads fails its job, not the worker', async () => {
    const dir = await scratch('lathe-wmod-');
    await writeFile(join(dir, 'token'), TOKEN + '\n', { mode: 0o600 });
    const root = join(dir, 'root');
    const state = join(dir, 'state');
    await mkdir(root, { recursive: true });
    await writeFile(join(root, 'shared.txt'), 'data');
    const secret = join(dir, 'secret.txt');
    await writeFile(secret, 'secret');
    const server = createServer((s) => s.end('hello'));
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
    const port = (server.address() as { port: number }).port;
    const worker = await startWorker(dir, ['--listen', '127.0.0.1:0', '--state-dir', state, '--data-root', root]);
    const client = join(dir, 'client');
    await mkdir(client, { recursive: true });
    // The reward is a bit mask of what the module managed: 0 means every escape was refused.
    await writeFile(
      join(client, 'probe.mjs'),
      [
        "import { readFileSync, readdirSync } from 'node:fs';",
        "import { execSync } from 'node:child_process';",
        "import { connect } from 'node:net';",
        'const ok = (f) => { try { f(); return true; } catch { return false; } };',
        `const reach = () => new Promise((res) => { const s = connect(${port}, '127.0.0.1');`,
        "  s.on('data', () => { s.destroy(); res(true); }); s.on('error', () => res(false)); });",
        'export default async function reward() {',
        `  if (!ok(() => readFileSync(${JSON.stringify(join(root, 'shared.txt'))}))) return -1;`,
        `  return (ok(() => readFileSync(${JSON.stringify(secret)})) ? 1 : 0) +`,
        `    (ok(() => readdirSync(${JSON.stringify(state)})) ? 2 : 0) +`,
        "    (ok(() => execSync('true')) ? 4 : 0) +",
        '    ((await reach()) ? 8 : 0);',
        '}',
      ].join('\n'),
    );
    await writeFile(join(client, 'die.mjs'), "export default () => process.kill(process.pid, 'SIGKILL');\n");
    await writeFile(join(client, 'spin.mjs'), 'for (;;) {}\nexport default () => 1;\n');
    await writeFile(
      join(client, 'prompts.jsonl'),
      Array.from({ length: 8 }, (_, i) => JSON.stringify({ prompt: `let px = ${i}\nemit` })).join('\n') + '\n',
    );
    const grpo = (module: string, extra: Record<string, unknown> = {}) =>
      new Recipe(
        {
          stage: 'grpo',
          seed: 1,
          tokenizer: { vocabSize: 300 },
          model: { dim: 16, layers: 1, heads: 2, context: 32 },
          data: { sources: [{ path: 'prompts.jsonl' }], valFraction: 0 },
          reward: { module, timeoutMs: 5000, ...extra },
          train: { steps: 1, batchSize: 2, groupSize: 2, maxNewTokens: 2, warmupSteps: 0, checkpointEvery: 1 },
        },
        { baseDir: client },
      );
    const w = await connect(worker.url, { token: TOKEN });
    try {
      const probed = await grpo('probe.mjs').run({ on: w, out: join(dir, 'probe') });
      expect(probed.summary!.status, probed.summary!.error).toBe('completed');
      const [m] = await probed.dir.readMetrics();
      expect(m!.reward_errors).toBe(0);
      expect(m!.reward_mean).toBe(0);

      // The job fails cleanly (a checkpoint, a summary, the reason); the worker does not.
      const died = await grpo('die.mjs').start({ on: w, out: join(dir, 'die') });
      await expect(died.done).rejects.toThrow(
        /reward\.module .*die\.mjs#default: its process died \(SIGKILL\) at step 1; stopped with a checkpoint at step 0/,
      );

      const spun = await grpo('spin.mjs', { loadTimeoutMs: 1000 }).start({ on: w, out: join(dir, 'spin') });
      await expect(spun.done).rejects.toThrow(/spin\.mjs did not load within 1000 ms/);
      expect(worker.alive()).toBe(true);
      // Still serving: the same module that probed runs again.
      const again = await grpo('probe.mjs').run({ on: w, out: join(dir, 'again') });
      expect(again.summary!.status).toBe('completed');
    } finally {
      w.close();
      server.close();
      worker.child.kill('SIGTERM');
    }
  }, 300_000);
});
