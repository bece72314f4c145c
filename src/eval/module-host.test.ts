import { mkdir, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { scratch } from '../../test/helpers.js';
import { LatheError } from '../errors.js';
import { ModuleHost, type ModuleHostOptions } from './module-host.js';

let dir: string;
const open = (file: string, o: Partial<ModuleHostOptions> = {}) =>
  ModuleHost.open({
    path: join(dir, file),
    export: 'f',
    label: `reward.module: ${join(dir, file)}`,
    callTimeoutMs: 2000,
    ...o,
  });

beforeAll(async () => {
  dir = await scratch();
});

describe('the module host', () => {
  it('runs the module in another process; one that kills that process costs the call, not the caller', async () => {
    await writeFile(
      join(dir, 'kill.mjs'),
      'export function f(x) {\n  if (x === "die") process.kill(process.pid, "SIGKILL");\n  return process.pid;\n}\n',
    );
    const h = await open('kill.mjs');
    const first = await h.call('hi');
    expect(first).toMatchObject({ value: expect.any(Number) });
    expect((first as { value: number }).value).not.toBe(process.pid);
    expect(await h.call('die')).toMatchObject({ error: 'crashed', message: expect.stringMatching(/SIGKILL/) });
    // The next call starts a fresh process.
    expect(await h.call('again')).toMatchObject({ value: expect.any(Number) });
    expect(h.errors).toEqual({ threw: 0, timeout: 0, crashed: 1 });
    await h.close();
  });

  it('limits loading: a top-level endless loop is a clear error within loadTimeoutMs', async () => {
    await writeFile(join(dir, 'spin-load.mjs'), 'for (;;) {}\nexport const f = () => 1;\n');
    const t0 = performance.now();
    const e = await open('spin-load.mjs', { loadTimeoutMs: 500 }).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(LatheError);
    expect((e as Error).message).toMatch(/^reward\.module: .*spin-load\.mjs did not load within 500 ms/);
    expect(performance.now() - t0).toBeLessThan(5000);
  });

  it('limits memory: a module that allocates past memoryMb is killed and the call counted as crashed', async () => {
    await writeFile(
      join(dir, 'hog.mjs'),
      'const keep = [];\nexport function f() {\n  for (;;) keep.push(Buffer.alloc(16 << 20, 1));\n}\n',
    );
    const h = await open('hog.mjs', { memoryMb: 128, callTimeoutMs: 20_000 });
    const t0 = performance.now();
    expect(await h.call()).toMatchObject({ error: 'crashed' });
    expect(performance.now() - t0).toBeLessThan(15_000);
    await h.close();
  });

  it('counts throws (with the module line), and times out endless calls, restarting the process', async () => {
    await writeFile(
      join(dir, 'faults.mjs'),
      'export function f(kind) {\n  if (kind === "throw") throw new TypeError("bad input");\n  if (kind === "spin") for (;;) {}\n  return 1;\n}\n',
    );
    const h = await open('faults.mjs', { callTimeoutMs: 300 });
    expect(await h.call('throw')).toEqual({
      error: 'threw',
      message: expect.stringMatching(/^TypeError: bad input \(at .*faults\.mjs:2:\d+\)$/),
    });
    expect(await h.call('spin')).toMatchObject({ error: 'timeout', message: 'timed out after 300 ms' });
    expect(await h.call('ok')).toEqual({ value: 1 });
    expect(h.errors).toEqual({ threw: 1, timeout: 1, crashed: 0 });
    await h.close();
  });
});

describe('confined modules (a worker sets LATHE_MODULE_CONFINE)', () => {
  const saved = process.env.LATHE_MODULE_CONFINE;
  afterEach(() => {
    if (saved === undefined) delete process.env.LATHE_MODULE_CONFINE;
    else process.env.LATHE_MODULE_CONFINE = saved;
  });

  it('read only the module, the data root and the job folder: no other file, no child process, no worker thread, no network', async () => {
    const data = join(dir, 'data-root');
    const job = join(dir, 'job');
    const state = join(dir, 'state');
    for (const d of [data, job, state]) await mkdir(d, { recursive: true });
    await writeFile(join(data, 'ok.txt'), 'data');
    await writeFile(join(job, 'rows.txt'), 'job');
    await writeFile(join(state, 'secret.txt'), 'secret');
    const server = createServer((s) => s.end('hello'));
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
    const port = (server.address() as { port: number }).port;
    await writeFile(
      join(job, 'probe.mjs'),
      [
        "import { readFileSync, readdirSync } from 'node:fs';",
        "import { execSync } from 'node:child_process';",
        "import { Worker } from 'node:worker_threads';",
        "import { connect } from 'node:net';",
        'const tryIt = async (g) => { try { return "ok: " + String(await g()); } catch (e) { return "refused: " + (e.code || e.message); } };',
        'export async function f(what, arg) {',
        '  if (what === "read") return tryIt(() => readFileSync(arg, "utf8"));',
        '  if (what === "list") return tryIt(() => readdirSync(arg).join(","));',
        '  if (what === "spawn") return tryIt(() => execSync("echo hi").toString().trim());',
        '  if (what === "thread") return tryIt(() => { new Worker("1", { eval: true }).terminate(); return "started"; });',
        '  if (what === "net") return tryIt(() => new Promise((res, rej) => { const s = connect(arg, "127.0.0.1");',
        '    s.on("data", (d) => { res(String(d)); s.destroy(); }); s.on("error", rej); }));',
        '}',
      ].join('\n'),
    );
    process.env.LATHE_MODULE_CONFINE = JSON.stringify({ read: [data], network: false });
    const h = await ModuleHost.open({
      path: join(job, 'probe.mjs'),
      export: 'f',
      label: 'reward.module',
      callTimeoutMs: 5000,
      readable: [job],
    });
    const ask = async (...args: unknown[]) => ((await h.call(...args)) as { value: string }).value;
    try {
      expect(await ask('read', join(data, 'ok.txt'))).toBe('ok: data');
      expect(await ask('read', join(job, 'rows.txt'))).toBe('ok: job');
      expect(await ask('read', join(state, 'secret.txt'))).toBe('refused: ERR_ACCESS_DENIED');
      expect(await ask('read', '/etc/hostname')).toBe('refused: ERR_ACCESS_DENIED');
      expect(await ask('list', state)).toBe('refused: ERR_ACCESS_DENIED');
      expect(await ask('spawn')).toBe('refused: ERR_ACCESS_DENIED');
      expect(await ask('thread')).toBe('refused: ERR_ACCESS_DENIED');
      expect(await ask('net', port)).toMatch(/^refused: (ENETUNREACH|ECONNREFUSED)/);
    } finally {
      await h.close();
    }
    // Unconfined (this machine, not a worker), the same module reaches the server.
    delete process.env.LATHE_MODULE_CONFINE;
    const free = await ModuleHost.open({
      path: join(job, 'probe.mjs'),
      export: 'f',
      label: 'reward.module',
      callTimeoutMs: 5000,
    });
    expect(((await free.call('net', port)) as { value: string }).value).toBe('ok: hello');
    await free.close();
    server.close();
  });
});
