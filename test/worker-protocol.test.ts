import { createHash } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket, { WebSocketServer } from 'ws';
import { WorkerClient, WorkerError } from '../src/worker/client.js';
import { encodeBinary, PROTOCOL_VERSION, type JobInfo } from '../src/worker/protocol.js';
import { WorkerServer } from '../src/worker/server.js';
import { scratch } from './helpers.js';

const TOKEN = 'protocol-test-token-0123456789';

/** A raw socket that collects the worker's replies, for frames no well-behaved client would send. */
async function raw(url: string, token = TOKEN): Promise<{ ws: WebSocket; next(): Promise<Record<string, unknown>> }> {
  const ws = new WebSocket(url, { headers: { authorization: `Bearer ${token}` } });
  const inbox: Record<string, unknown>[] = [];
  const waiters: ((m: Record<string, unknown>) => void)[] = [];
  ws.on('message', (d: Buffer) => {
    const m = JSON.parse(d.toString());
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

describe('worker protocol', () => {
  let server: WorkerServer;
  const logs: string[] = [];
  let dir: string;

  beforeAll(async () => {
    dir = await scratch('lathe-wproto-');
    server = await WorkerServer.start({
      token: TOKEN,
      stateDir: join(dir, 'state'),
      backend: 'cpu',
      maxFrameBytes: 64 * 1024,
      chunkBytes: 1024,
      log: (l) => logs.push(l),
    });
  });
  afterAll(() => server.close());

  it('refuses a wrong or missing token with 401, logs the refusal without the token, and keeps serving', async () => {
    await expect(WorkerClient.connect(server.url, { token: 'not-the-token-at-all', reconnect: false })).rejects.toThrow(
      /refused the token \(401\)/,
    );
    const noAuth = new WebSocket(server.url);
    const status = await new Promise<number>((r) =>
      noAuth.once('unexpected-response', (_q, res) => r(res.statusCode!)),
    );
    expect(status).toBe(401);
    expect(logs.filter((l) => /refused connection from .*: wrong token/.test(l))).toHaveLength(1);
    expect(logs.filter((l) => /refused connection from .*: no bearer token/.test(l))).toHaveLength(1);
    expect(logs.join('\n')).not.toContain('not-the-token-at-all');
    const ok = await WorkerClient.connect(server.url, { token: TOKEN, reconnect: false });
    expect(ok.hello).toMatchObject({ protocol: PROTOCOL_VERSION, backend: 'cpu', dataRoot: false });
    expect(ok.hello.backends.webgpu).toMatch(/not enabled/);
    ok.close();
  });

  it('answers bad frames with an error naming the fault, and the connection stays healthy', async () => {
    const c = await raw(server.url);
    const cases: [string | Buffer, string, RegExp][] = [
      ['{not json', 'bad-frame', /not JSON/],
      [
        JSON.stringify({ v: PROTOCOL_VERSION, id: 1, type: 'launch-missiles' }),
        'unknown-type',
        /unknown message type "launch-missiles"/,
      ],
      [
        JSON.stringify({ v: 0, id: 2, type: 'hello' }),
        'version',
        /protocol version 0 is not supported; this worker speaks version 1/,
      ],
      [
        JSON.stringify({ v: PROTOCOL_VERSION, id: 3, type: 'upload.begin', sha256: 'xyz', bytes: 1 }),
        'bad-message',
        /upload.begin: field "sha256": expected a lowercase hex sha256/,
      ],
      [JSON.stringify({ v: PROTOCOL_VERSION, id: 4, type: 'watch', job: 'nope' }), 'not-found', /no job "nope"/],
      [JSON.stringify([1, 2]), 'bad-message', /JSON object/],
      [Buffer.from([0, 0, 0, 99, 1]), 'bad-frame', /header length 99 runs past the frame/],
      ['x'.repeat(64 * 1024 + 1), 'frame-too-large', /65537 bytes is over this worker's limit of 65536/],
    ];
    for (const [frame, code, message] of cases) {
      c.ws.send(frame);
      const r = await c.next();
      expect(r.type, String(frame).slice(0, 40)).toBe('error');
      expect(r.code, String(frame).slice(0, 40)).toBe(code);
      expect(r.message).toMatch(message);
    }
    // The id of a well-formed but refused request comes back as `re`.
    c.ws.send(JSON.stringify({ v: 7, id: 42, type: 'jobs' }));
    expect(await c.next()).toMatchObject({ type: 'error', code: 'version', re: 42 });
    c.ws.send(JSON.stringify({ v: PROTOCOL_VERSION, id: 5, type: 'hello' }));
    expect(await c.next()).toMatchObject({ type: 'welcome', re: 5, protocol: PROTOCOL_VERSION });
    c.ws.close();
  });

  it('uploads resume after an interruption, sending only the missing chunks; bad hashes are refused', async () => {
    const path = join(dir, 'data.bin');
    const bytes = Buffer.alloc(20 * 1024 + 333);
    for (let i = 0; i < bytes.length; i++) bytes[i] = (i * 31 + (i >> 7)) & 255;
    await writeFile(path, bytes);
    const sha256 = createHash('sha256').update(bytes).digest('hex');
    const file = { path, sha256, bytes: bytes.length };
    const client = await WorkerClient.connect(server.url, { token: TOKEN });
    // One chunk in flight at a time; the connection drops once 7 chunks were acknowledged.
    let acked = 0;
    await expect(
      client.upload(file, {
        window: 1,
        onChunk: () => {
          if (++acked === 7) client.drop();
        },
      }),
    ).rejects.toThrow(/lost the connection/);
    await client.ready();
    const again = await client.upload(file, { window: 3 });
    expect(again).toEqual({ sha256, sent: 21 - 7, skipped: 7, bytes: bytes.length });
    expect(server.store.has(sha256)).toBe(true);
    // A third upload sends nothing: the worker has the file.
    expect(await client.upload(file)).toMatchObject({ sent: 0 });

    // A file whose content does not match the hash it claims is refused and discarded at the end.
    const liar = join(dir, 'liar.bin');
    await writeFile(liar, Buffer.from('not what the hash says'));
    const claimed = createHash('sha256').update('something else').digest('hex');
    await expect(client.upload({ path: liar, sha256: claimed, bytes: 22 })).rejects.toThrow(
      /upload.end: the uploaded file has sha256 .* not .*; it was discarded/,
    );
    expect(server.store.has(claimed)).toBe(false);
    // A chunk whose bytes do not match its own sha256 is refused.
    await client.request({ type: 'upload.begin', sha256: claimed, bytes: 22 });
    const ws = (client as unknown as { ws: WebSocket }).ws;
    const reply = new Promise<Record<string, unknown>>((r) =>
      ws.once('message', (d: Buffer) => r(JSON.parse(d.toString()))),
    );
    ws.send(
      encodeBinary(
        { v: PROTOCOL_VERSION, id: 999, type: 'upload.chunk', sha256: claimed, index: 0, chunkSha256: claimed },
        Buffer.from('not what the hash says'),
      ),
    );
    expect(await reply).toMatchObject({
      re: 999,
      code: 'sha-mismatch',
      message: expect.stringMatching(/chunk 0 .* has sha256/),
    });
    await expect(client.request({ type: 'jobs' })).resolves.toMatchObject({ type: 'jobs' });
    client.close();
  });

  it('WorkerError carries the code', () => {
    expect(new WorkerError('not-found', 'x').code).toBe('not-found');
  });
});

describe('replies are validated on the client', () => {
  type Msg = Record<string, unknown> & { id: number; type: string };
  /** A fake worker: `answer` says what to send back for each request. */
  async function fakeWorker(answer: { fn: (m: Msg) => object[] }): Promise<{ url: string; close(): void }> {
    const wss = new WebSocketServer({ port: 0, host: '127.0.0.1' });
    await new Promise((r) => wss.once('listening', r));
    wss.on('connection', (ws) =>
      ws.on('message', (d: Buffer) => {
        for (const r of answer.fn(JSON.parse(d.toString()) as Msg))
          ws.send(Buffer.isBuffer(r) ? r : JSON.stringify({ v: PROTOCOL_VERSION, ...r }));
      }),
    );
    return { url: `ws://127.0.0.1:${(wss.address() as { port: number }).port}`, close: () => wss.close() };
  }
  const hello = {
    worker: 'fake',
    lathe: '0.0.0',
    protocol: PROTOCOL_VERSION,
    backend: 'cpu',
    backends: { cpu: 'ok', wasm: 'not here', webgpu: 'not here' },
    dataRoot: false,
    maxFrameBytes: 65536,
    chunkBytes: 1024,
  };
  const job: JobInfo = {
    id: 'j1',
    name: 'tiny',
    status: 'running',
    stage: 'pretrain',
    backend: 'cpu',
    lockId: 'abc',
    step: 1,
    steps: 3,
    createdAt: '2026-01-01T00:00:00.000Z',
    restarts: 0,
  };

  it('a reply or push that breaks the protocol fails as bad-reply naming the field, and is never used; the connection goes on', async () => {
    const answer = { fn: (m: Msg): object[] => [{ type: 'welcome', re: m.id, ...hello }] };
    const fake = await fakeWorker(answer);
    const c = await WorkerClient.connect(fake.url, { token: TOKEN, reconnect: false });
    expect(c.hello).toEqual(hello);
    try {
      answer.fn = (m) => [{ type: 'jobs', re: m.id, jobs: [{ id: 'j1', name: 'x' }] }];
      const bad = await c.jobs().catch((e: unknown) => e);
      expect(bad).toBeInstanceOf(WorkerError);
      expect(bad).toMatchObject({
        code: 'bad-reply',
        message: expect.stringMatching(/^worker: broke the protocol: jobs: field "jobs\[0\]\.status"/),
      });
      answer.fn = (m) => [{ type: 'requeued', re: m.id, job }];
      await expect(c.jobs()).rejects.toThrow(/broke the protocol: answered requeued, expected jobs/);
      // Pushes: a malformed one is reported and dropped, the good ones arrive in order.
      const errors: Error[] = [];
      c.on('worker-error', (e: Error) => errors.push(e));
      const seen: [number, number][] = [];
      answer.fn = (m) =>
        m.type === 'watch'
          ? [
              { type: 'watching', re: m.id, job },
              { type: 'metric', job: 'j1', seq: 'zero', metric: { step: 1, stage: 'pretrain' } },
              { type: 'metric', job: 'j1', seq: 0, metric: { step: 1, stage: 'pretrain', loss: 2.5 } },
            ]
          : [];
      c.watch('j1', { metric: (mm, seq) => seen.push([seq, mm.step]) });
      for (let i = 0; i < 200 && !seen.length; i++) await new Promise((r) => setTimeout(r, 10));
      expect(seen).toEqual([[0, 1]]);
      expect(errors.map((e) => e.message)).toEqual([
        expect.stringMatching(/^worker: broke the protocol: metric: field "seq": /),
      ]);
      // A fetched file outside the run directory fails the fetch; nothing is written there.
      const dir = await scratch('lathe-wfake-');
      const into = join(dir, 'fetched', 'run');
      answer.fn = (m) => [
        encodeBinary(
          { v: PROTOCOL_VERSION, re: m.id, type: 'file.chunk', path: '../escape.txt', offset: 0 },
          Buffer.from('x'),
        ),
      ];
      await expect(c.fetch('j1', into)).rejects.toThrow(
        /worker sent a file outside the run directory: \.\.\/escape\.txt/,
      );
      expect(existsSync(join(dir, 'fetched', 'escape.txt'))).toBe(false);
      // A NaN loss travels as null and reads back as absent.
      answer.fn = (m) => [{ type: 'jobs', re: m.id, jobs: [{ ...job, loss: null }] }];
      expect(await c.jobs()).toEqual([job]);
    } finally {
      c.close();
      fake.close();
    }
  });

  it('a welcome that breaks the protocol fails the connect, naming the field', async () => {
    const { backends: _b, ...partial } = hello;
    const fake = await fakeWorker({ fn: (m) => [{ type: 'welcome', re: m.id, ...partial }] });
    try {
      await expect(WorkerClient.connect(fake.url, { token: TOKEN, reconnect: false })).rejects.toThrow(
        /broke the protocol: welcome: field "backends"/,
      );
    } finally {
      fake.close();
    }
  });
});

describe('worker over TLS', () => {
  it('serves wss:// with a certificate and key; a client trusting the CA connects, one that does not is refused', async () => {
    const dir = await scratch('lathe-wtls-');
    const key = join(dir, 'key.pem');
    const cert = join(dir, 'cert.pem');
    const r = spawnSync(
      'openssl',
      [
        'req',
        '-x509',
        '-newkey',
        'rsa:2048',
        '-nodes',
        '-keyout',
        key,
        '-out',
        cert,
        '-days',
        '1',
        '-subj',
        '/CN=127.0.0.1',
        '-addext',
        'subjectAltName=IP:127.0.0.1',
      ],
      { encoding: 'utf8' },
    );
    expect(r.status, r.stderr).toBe(0);
    const server = await WorkerServer.start({
      token: TOKEN,
      stateDir: join(dir, 'state'),
      backend: 'cpu',
      tls: { cert: await readFile(cert), key: await readFile(key) },
      log: () => {},
    });
    try {
      expect(server.url).toMatch(/^wss:\/\/127\.0\.0\.1:\d+$/);
      const c = await WorkerClient.connect(server.url, { token: TOKEN, ca: await readFile(cert), reconnect: false });
      expect(await c.jobs()).toEqual([]);
      c.close();
      await expect(WorkerClient.connect(server.url, { token: TOKEN, reconnect: false })).rejects.toThrow(
        /self-signed certificate/,
      );
      await expect(
        WorkerClient.connect(server.url.replace('wss', 'ws'), { token: TOKEN, reconnect: false }),
      ).rejects.toThrow(/cannot reach the worker|socket hang up|HTTP/);
    } finally {
      await server.close();
    }
  });
});
