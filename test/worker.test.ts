import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, readFile, realpath, symlink, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { localExecutor } from '../src/runs/local.js';
import { connect, type WorkerExecutor } from '../src/dispatch/worker.js';
import { Pipeline, Recipe } from '../src/runs/recipe.js';
import type { Run } from '../src/runs/run.js';
import type { Metric } from '../src/runs/rundir.js';
import { TIMING_KEYS } from '../src/runs/rundir.js';
import { isFinal, WorkerClient } from '../src/worker/client.js';
import { WorkerServer } from '../src/worker/server.js';
import { lathe, ROOT, scratch, tallySlice, tinyRecipe } from './helpers.js';

const TOKEN = 'worker-test-token-0123456789abcdef';

/** Metrics without their timing fields (what reproduce compares). */
const strip = (ms: Metric[]) =>
  ms.map((m) => Object.fromEntries(Object.entries(m).filter(([k]) => !TIMING_KEYS.has(k))));
/** The first step whose metrics differ (-1: none), so a failure says where a run parted. */
const firstDiff = (a: Metric[], b: Metric[]) => {
  const [x, y] = [strip(a), strip(b)];
  const i = x.findIndex((m, k) => JSON.stringify(m) !== JSON.stringify(y[k]));
  return i < 0 ? -1 : (x[i]!.step as number);
};
const readJsonl = async (p: string) =>
  (await readFile(p, 'utf8'))
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l));
const until = async (what: string, ok: () => boolean | Promise<boolean>, ms = 120_000) => {
  const deadline = Date.now() + ms;
  while (!(await ok())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
};

/** Complete lines in a file that is being appended to (a torn last line is not counted). */
const completeLines = async (p: string) => (existsSync(p) ? (await readFile(p, 'utf8')).split('\n').length - 1 : 0);

/**
 * The built CLI as a child process, without blocking this process (an in-process worker must keep
 * serving). A process still alive after `ms` is killed and reported with status null, so a CLI that
 * does not exit by itself fails the test instead of hanging it. `quietMs` is how long it took to
 * exit after its last output.
 */
function latheAsync(
  args: string[],
  opts: { env?: Record<string, string>; ms?: number } = {},
): Promise<{ status: number | null; stdout: string; stderr: string; quietMs: number }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [join(ROOT, 'bin', 'lathe.js'), ...args], {
      cwd: ROOT,
      env: { ...process.env, ...opts.env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    children.push(child);
    let stdout = '';
    let stderr = '';
    let last = Date.now();
    child.stdout!.on('data', (d: Buffer) => ((stdout += d.toString()), (last = Date.now())));
    child.stderr!.on('data', (d: Buffer) => ((stderr += d.toString()), (last = Date.now())));
    const timer = setTimeout(() => {
      stderr += `\n[test] still running after ${opts.ms ?? 300_000} ms: killed`;
      child.kill('SIGKILL');
    }, opts.ms ?? 300_000);
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ status: signal ? null : code, stdout, stderr, quietMs: Date.now() - last });
    });
  });
}

async function freePort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', () => r()));
  const port = (s.address() as { port: number }).port;
  await new Promise((r) => s.close(r));
  return port;
}

/** `lathe worker` as a child process (the built CLI), resolved once it listens. */
async function startWorkerProcess(
  args: string[],
  announce: string,
): Promise<{ child: ChildProcess; url: string; stderr: () => string }> {
  let err = '';
  const child = spawn(process.execPath, [join(ROOT, 'bin', 'lathe.js'), 'worker', ...args, '--announce', announce], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  await until('the worker to listen', () => existsSync(announce) || child.exitCode !== null, 60_000);
  if (child.exitCode !== null) throw new Error(`worker exited ${child.exitCode}: ${err}`);
  return { child, url: (await readFile(announce, 'utf8')).trim(), stderr: () => err };
}

const children: ChildProcess[] = [];
afterAll(() => {
  for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
});

describe('worker', () => {
  it('a job killed with -9 resumes by itself when the worker restarts on its state dir, equal to an uninterrupted run to the bit; the queue survives; a dropped client catches up', async () => {
    const dir = await scratch('lathe-wkill-');
    const data = await tallySlice(dir, 300);
    const tokenFile = join(dir, 'token');
    await writeFile(tokenFile, TOKEN + '\n', { mode: 0o600 });
    const recipe = new Recipe(
      tinyRecipe(data, { train: { steps: 16, batchSize: 4, warmupSteps: 2, checkpointEvery: 4 } }),
      { baseDir: dir },
    );
    const small = new Recipe(
      tinyRecipe(data, {
        name: 'small',
        seed: 5,
        train: { steps: 3, batchSize: 4, warmupSteps: 1, checkpointEvery: 3 },
      }),
      { baseDir: dir },
    );

    // The uninterrupted reference, in this process.
    const straight = await localExecutor.start(await recipe.lock({ backend: 'cpu' }), { out: join(dir, 'straight') });
    await straight.done;

    const port = await freePort();
    const state = join(dir, 'state');
    const args = ['--listen', `127.0.0.1:${port}`, '--token-file', tokenFile, '--state-dir', state, '--backend', 'cpu'];
    const first = await startWorkerProcess(args, join(dir, 'url1'));
    children.push(first.child);
    const w = await connect(first.url, { token: TOKEN });
    const a = await recipe.start({ on: w, out: join(dir, 'mirror-a') });
    const jobA = w.lastJob!.id;
    const b = await small.start({ on: w, out: join(dir, 'mirror-b') });
    const jobB = w.lastJob!.id;
    expect(w.lastUpload).toEqual([expect.objectContaining({ sent: 0 })]); // the data went up with job A
    const jobDir = join(state, 'jobs', jobA);
    await until('a checkpoint at step 8', () => existsSync(join(jobDir, 'run', 'checkpoints', '8', 'state.json')));
    first.child.kill('SIGKILL');
    await new Promise((r) => first.child.once('exit', r));
    const cut = (await readJsonl(join(jobDir, 'run', 'metrics.jsonl'))).length;
    expect(cut).toBeGreaterThanOrEqual(8);
    expect(cut).toBeLessThan(16);
    expect(JSON.parse(await readFile(join(jobDir, 'job.json'), 'utf8')).status).toBe('running');
    expect(JSON.parse(await readFile(join(state, 'jobs', jobB, 'job.json'), 'utf8')).status).toBe('queued');

    // Same state dir, same address: the job resumes by itself and the client reconnects by itself.
    const second = await startWorkerProcess(args, join(dir, 'url2'));
    children.push(second.child);
    const [sa, sb] = await Promise.all([a.done, b.done]);
    expect(sa.status).toBe('completed');
    expect(sb.status).toBe('completed');

    const remote = await readJsonl(join(jobDir, 'run', 'metrics.jsonl'));
    const reference = await readJsonl(join(dir, 'straight', 'metrics.jsonl'));
    expect(remote).toHaveLength(16);
    expect(strip(remote)).toEqual(strip(reference));
    // The client saw every point once: the pre-crash ones, then the rest (same values, computed again).
    expect(a.metricsSoFar.map((m) => m.step)).toEqual(remote.map((m: Metric) => m.step));
    expect(strip(a.metricsSoFar)).toEqual(strip(reference));
    const events = await readJsonl(join(jobDir, 'run', 'events.jsonl'));
    const resumed = events.find((e) => e.type === 'resumed');
    expect(resumed.step % 4).toBe(0);
    expect(resumed.step).toBeGreaterThanOrEqual(8);
    expect(a.events.map((e) => e.type)).toEqual(events.map((e) => e.type));
    // The mirror holds the downloaded run: final checkpoint, tokenizer, summary naming the worker.
    expect(existsSync(join(dir, 'mirror-a', 'checkpoints', '16', 'model.safetensors'))).toBe(true);
    expect(existsSync(join(dir, 'mirror-a', 'checkpoints', '8'))).toBe(false);
    expect(existsSync(join(dir, 'mirror-a', 'data', 'tokenizer.json'))).toBe(true);
    expect(JSON.parse(await readFile(join(dir, 'mirror-a', 'summary.json'), 'utf8'))).toMatchObject({
      id: 'mirror-a',
      status: 'completed',
      worker: { job: jobA },
    });
    const jobs = await w.jobs();
    expect(jobs.map((j) => [j.id, j.status, j.restarts])).toEqual([
      [jobA, 'completed', 1],
      [jobB, 'completed', 0],
    ]);
    expect(await readFile(join(jobDir, 'job.log'), 'utf8')).toMatch(
      /resuming after the worker stopped, from the checkpoint at step \d+/,
    );
    // The job's log outlived the worker: a watch from line 0 replays all of it, across the restart, once.
    const replayed: [number, string][] = [];
    await new Promise<void>((resolve) => {
      const wa = w.client.watch(jobA, {
        log: (l, seq) => replayed.push([seq, l]),
        state: (j) => isFinal(j.status) && (wa.close(), resolve()),
      });
    });
    const logA = (await readFile(join(jobDir, 'job.log'), 'utf8')).trimEnd().split('\n');
    expect(replayed).toEqual(logA.map((l, i) => [i, l]));
    const restartedAt = logA.findIndex((l) =>
      l.endsWith('the worker restarted while this job was running; it resumes from its last checkpoint'),
    );
    expect(logA.findIndex((l) => l.endsWith('training on cpu'))).toBeLessThan(restartedAt);
    expect(logA.at(-1)).toMatch(/completed at step 16\/16/);

    // The CLI against the same worker: submit --wait downloads the run; jobs; cancel of an unknown job.
    const recipeFile = join(dir, 'r.json');
    await writeFile(
      recipeFile,
      JSON.stringify(tinyRecipe(data, { train: { steps: 3, batchSize: 4, warmupSteps: 1, checkpointEvery: 3 } })),
    );
    const sub = lathe([
      'submit',
      recipeFile,
      '--worker',
      second.url,
      '--token-file',
      tokenFile,
      '--steps',
      '2',
      '--out',
      join(dir, 'cli-run'),
      '--wait',
    ]);
    expect(sub.status, sub.stderr).toBe(0);
    expect(sub.stdout).toMatch(/^job \S+ on ws:\/\/127\.0\.0\.1:\d+ \(lock \w+, backend cpu\)/);
    expect(sub.stdout).toMatch(/completed at step 2\/2/);
    expect(existsSync(join(dir, 'cli-run', 'checkpoints', '2', 'model.safetensors'))).toBe(true);
    const listed = lathe(['jobs', '--worker', second.url, '--token-file', tokenFile, '--json']);
    expect(listed.status, listed.stderr).toBe(0);
    expect(JSON.parse(listed.stdout).map((j: { status: string }) => j.status)).toEqual([
      'completed',
      'completed',
      'completed',
    ]);
    const table = lathe(['jobs', '--worker', second.url, '--token-file', tokenFile]);
    expect(table.stdout).toMatch(new RegExp(`${jobA}\\s+completed`));
    const nope = lathe(['cancel', 'no-such-job', '--worker', second.url, '--token-file', tokenFile]);
    expect(nope.status).toBe(2);
    expect(nope.stderr).toMatch(/cancel: no job "no-such-job" on this worker/);
    const wrong = join(dir, 'wrong-token');
    await writeFile(wrong, 'x'.repeat(32));
    const refused = lathe(['jobs', '--worker', second.url, '--token-file', wrong]);
    expect(refused.status).toBe(2);
    expect(refused.stderr).toMatch(/refused the token \(401\)/);
    // The refusal is logged (the worker's stderr arrives through a pipe, so wait for it).
    await until(
      'the refusal in the log',
      () => /refused connection from 127\.0\.0\.1:\d+: wrong token/.test(second.stderr()),
      10_000,
    );
    expect(second.stderr()).not.toContain('x'.repeat(32));

    w.close();
    second.child.kill('SIGTERM');
    expect(await new Promise((r) => second.child.once('exit', r))).toBe(0);
    expect(existsSync(join(state, 'worker.pid'))).toBe(false);
  });

  it('with --engine torch: a job killed with -9 resumes by itself when the worker restarts, equal to an uninterrupted torch run to the bit', async () => {
    const dir = await scratch('lathe-wtorch-');
    const data = await tallySlice(dir, 600);
    const tokenFile = join(dir, 'token');
    await writeFile(tokenFile, TOKEN + '\n', { mode: 0o600 });
    // Big enough that the run outlasts the wait for its first checkpoints.
    const recipe = new Recipe(
      tinyRecipe(data, {
        model: { dim: 128, layers: 2, heads: 4, context: 64 },
        train: { steps: 120, batchSize: 8, warmupSteps: 4, checkpointEvery: 10 },
        eval: { every: 0, batches: 1 },
      }),
      { baseDir: dir },
    );
    const straight = await localExecutor.start(await recipe.lock({ engine: 'torch' }), { out: join(dir, 'straight') });
    await straight.done;
    const port = await freePort();
    const state = join(dir, 'state');
    const args = [
      '--listen',
      `127.0.0.1:${port}`,
      '--token-file',
      tokenFile,
      '--state-dir',
      state,
      '--engine',
      'torch',
    ];
    const first = await startWorkerProcess(args, join(dir, 'url1'));
    children.push(first.child);
    const w = await connect(first.url, { token: TOKEN });
    // The recipe names no engine: the worker's (torch) is taken, and recorded in the lock.
    const a = await recipe.start({ on: w, out: join(dir, 'mirror') });
    expect(a.lock.engine).toMatchObject({ kind: 'torch', device: 'cpu', dtype: 'fp32' });
    const jobDir = join(state, 'jobs', w.lastJob!.id);
    await until('a checkpoint at step 20', () => existsSync(join(jobDir, 'run', 'checkpoints', '20', 'state.json')));
    first.child.kill('SIGKILL');
    await new Promise((r) => first.child.once('exit', r));
    const cut = (await readJsonl(join(jobDir, 'run', 'metrics.jsonl'))).length;
    expect(cut).toBeLessThan(120);
    const second = await startWorkerProcess(args, join(dir, 'url2'));
    children.push(second.child);
    expect((await a.done).status).toBe('completed');
    const remote = await readJsonl(join(jobDir, 'run', 'metrics.jsonl'));
    expect(remote).toHaveLength(120);
    const straightMetrics = await readJsonl(join(dir, 'straight', 'metrics.jsonl'));
    expect(firstDiff(remote, straightMetrics), 'the first step that differs').toBe(-1);
    expect(strip(remote)).toEqual(strip(straightMetrics));
    const resumed = (await readJsonl(join(jobDir, 'run', 'events.jsonl'))).find((e) => e.type === 'resumed');
    expect(resumed.step).toBeGreaterThanOrEqual(20);
    w.close();
    second.child.kill('SIGTERM');
    await new Promise((r) => second.child.once('exit', r));
  }, 300_000);

  it('training goes on while a client is away; a client that drops catches up without losing or repeating a point; cancel stops a job', async () => {
    const dir = await scratch('lathe-wdrop-');
    const data = await tallySlice(dir, 300);
    const server = await WorkerServer.start({
      token: TOKEN,
      stateDir: join(dir, 'state'),
      backend: 'cpu',
      log: () => {},
    });
    try {
      const w = await connect(server.url, { token: TOKEN });
      const r = new Recipe(
        tinyRecipe(data, { train: { steps: 10, batchSize: 4, warmupSteps: 1, checkpointEvery: 5 } }),
        { baseDir: dir },
      );
      const run = await r.start({ on: w, out: join(dir, 'mirror') });
      const job = w.lastJob!.id;
      let drops = 0;
      run.onMetric((m) => {
        // Drop the connection twice, mid-run; the worker trains on meanwhile.
        if ((m.step === 3 || m.step === 6) && drops < 2) {
          drops++;
          w.client.drop();
        }
      });
      const s = await run.done;
      expect(drops).toBe(2);
      expect(s.status).toBe('completed');
      const remote = await readJsonl(join(server.queue.runDir(job), 'metrics.jsonl'));
      expect(run.metricsSoFar).toEqual(remote);
      expect(await readJsonl(join(dir, 'mirror', 'metrics.jsonl'))).toEqual(remote);

      // Cancel: a running job stops at its next step with a checkpoint; a queued one at once.
      const long = r.with({ train: { steps: 400, checkpointEvery: 0 } });
      const running = await long.start({ on: w, out: join(dir, 'long') });
      const runningJob = w.lastJob!.id;
      const queued = await long.start({ on: w, out: join(dir, 'queued') });
      const queuedJob = w.lastJob!.id;
      await until('two steps', () => running.metricsSoFar.length >= 2);
      expect((await w.cancel(queuedJob)).job.status).toBe('cancelled');
      const c = await w.cancel(runningJob);
      expect(c.was).toBe('running');
      expect(c.job.status).toBe('cancelled');
      expect(c.job.step).toBeLessThan(400);
      expect((await running.done).status).toBe('cancelled');
      expect(existsSync(join(dir, 'long', 'checkpoints', String(c.job.step), 'model.safetensors'))).toBe(true);
      expect(await queued.done).toMatchObject({ status: 'cancelled', step: 0 });

      // Interrupt leaves a job resumable; the executor's resume queues it again and follows it from its checkpoint.
      const paused = await long.start({ on: w, out: join(dir, 'paused') });
      await until('two steps', () => paused.metricsSoFar.length >= 2);
      paused.interrupt();
      const ps = await paused.done;
      expect(ps.status).toBe('interrupted');
      const resumed = await w.resume(join(dir, 'paused'));
      await until('a step past the interrupt', () => resumed.metricsSoFar.length > ps.step);
      expect(resumed.metricsSoFar.slice(0, ps.step).map((m) => m.step)).toEqual(
        Array.from({ length: ps.step }, (_, i) => i + 1),
      );
      resumed.cancel();
      expect((await resumed.done).status).toBe('cancelled');
      expect(resumed.events.filter((e) => e.type === 'resumed').map((e) => e.step)).toEqual([ps.step]);
      w.close();
    } finally {
      await server.close();
    }
  });

  it('data under --data-root stays on the worker; recipes cannot climb out of it by .. or by symlinks', async () => {
    const dir = await scratch('lathe-wroot-');
    const root = join(dir, 'root');
    await mkdir(join(root, 'corpus'), { recursive: true });
    await tallySlice(join(root, 'corpus'), 120);
    const outside = await tallySlice(dir, 10);
    await symlink(outside, join(root, 'corpus', 'escape.jsonl'));
    const server = await WorkerServer.start({
      token: TOKEN,
      stateDir: join(dir, 'state'),
      dataRoot: root,
      backend: 'cpu',
      log: () => {},
    });
    try {
      const w: WorkerExecutor = await connect(server.url, { token: TOKEN });
      const rec = (path: string) =>
        new Recipe(tinyRecipe(path, { train: { steps: 2, batchSize: 4, warmupSteps: 1, checkpointEvery: 2 } }), {
          baseDir: join(dir, 'client'),
        });
      const run = await rec('worker:corpus/tally.jsonl').run({ on: w, out: join(dir, 'mirror') });
      expect(run.summary!.status).toBe('completed');
      expect(w.lastUpload).toEqual([]); // nothing was uploaded
      const lock = run.lock as { data: { files: { path: string; sha256: string }[] }[] };
      expect(lock.data[0]!.files[0]!.path).toBe('worker:corpus/tally.jsonl');
      const job = w.lastJob!.id;
      const workerLock = JSON.parse(await readFile(join(server.queue.runDir(job), 'recipe.lock.json'), 'utf8'));
      expect(workerLock.data[0].files[0].path).toBe(join(await realpath(root), 'corpus', 'tally.jsonl'));

      // Fetch just the latest checkpoint, or an HF export made on the worker.
      const ck = await w.client.fetch(job, join(dir, 'ck'), 'checkpoint');
      expect(ck.files).toBe(6); // lock, summary, tokenizer, and the checkpoint's model, optimizer and state
      expect(existsSync(join(dir, 'ck', 'checkpoints', '2', 'model.safetensors'))).toBe(true);
      expect(existsSync(join(dir, 'ck', 'metrics.jsonl'))).toBe(false);
      await w.client.fetch(job, join(dir, 'hf'), 'export');
      expect(JSON.parse(await readFile(join(dir, 'hf', 'config.json'), 'utf8')).architectures).toEqual([
        'LlamaForCausalLM',
      ]);
      expect(existsSync(join(dir, 'hf', 'model.safetensors'))).toBe(true);

      await expect(rec('worker:../tally.jsonl').start({ on: w })).rejects.toThrow(
        /data.sources\[0\].path: worker:..\/tally.jsonl leaves the worker's --data-root/,
      );
      await expect(rec('worker:/etc/passwd').start({ on: w })).rejects.toThrow(/not absolute/);
      await expect(rec('worker:corpus/escape.jsonl').start({ on: w })).rejects.toThrow(
        /worker:corpus\/escape.jsonl is a link that leaves the worker's --data-root/,
      );
      await expect(rec('worker:corpus/*.jsonl').start({ on: w })).rejects.toThrow(/is a link that leaves/);
      await expect(rec('worker:corpus/missing.jsonl').start({ on: w })).rejects.toThrow(/missing.jsonl does not exist/);

      // A hand-made lock cannot reach outside either: relative paths that climb, or data it never uploaded.
      const good = await rec('worker:corpus/tally.jsonl')
        .lock({ backend: 'cpu' })
        .catch(() => undefined);
      expect(good).toBeUndefined(); // the client cannot even lock worker: data itself
      const forged = structuredClone(run.lock) as unknown as Record<string, unknown> & {
        data: { files: { path: string }[] }[];
      };
      forged.data[0]!.files[0]!.path = '../../../etc/passwd';
      await expect(w.client.request({ type: 'submit', lock: forged, files: [] })).rejects.toThrow(
        /is not among the uploaded files/,
      );
      forged.data[0]!.files[0]!.path = outside;
      await expect(w.client.request({ type: 'submit', lock: forged, files: [] })).rejects.toThrow(
        /is not among the uploaded files/,
      );
      const climbing = structuredClone(run.lock) as unknown as { recipe: { eval: { suites: unknown[] } } };
      climbing.recipe.eval.suites = [{ name: 'x', path: '../../../../etc/passwd' }];
      await expect(
        w.client.request({ type: 'submit', lock: climbing as unknown as Record<string, unknown>, files: [] }),
      ).rejects.toThrow(/eval.suites\[0\].path: ..\/..\/..\/..\/etc\/passwd leaves the recipe's folder/);
      w.close();
    } finally {
      await server.close();
    }
  });

  it('runs a pipeline (pretrain → sft) on a worker: the files of every stage go up, later stages lock there, metrics equal a local run', async () => {
    const dir = await scratch('lathe-wpipe-');
    const data = await tallySlice(dir, 200);
    const chat: string[] = [];
    for (let i = 0; i < 40; i++)
      chat.push(
        JSON.stringify({
          messages: [
            { role: 'user', content: `let x = ${i}\nemit` },
            { role: 'assistant', content: `emit x` },
          ],
        }),
      );
    await mkdir(join(dir, 'sft'));
    await writeFile(join(dir, 'sft', 'chat.jsonl'), chat.join('\n') + '\n');
    const p = Pipeline.of(
      [
        new Recipe(tinyRecipe(data, { train: { steps: 3, batchSize: 4, warmupSteps: 1, checkpointEvery: 3 } }), {
          baseDir: dir,
        }),
        new Recipe(
          {
            stage: 'sft',
            data: { sources: [{ path: 'sft/chat.jsonl' }] },
            train: { steps: 2, batchSize: 4, warmupSteps: 1, checkpointEvery: 2 },
            eval: { every: 0, batches: 1 },
          },
          { baseDir: dir },
        ),
      ],
      { baseDir: dir, backend: 'cpu' },
    );
    const local = await p.run({ out: join(dir, 'local') });
    expect(local.summary!.status).toBe('completed');
    const server = await WorkerServer.start({
      token: TOKEN,
      stateDir: join(dir, 'state'),
      backend: 'cpu',
      log: () => {},
    });
    try {
      const w = await connect(server.url, { token: TOKEN });
      const remote = await p.run({ on: w, out: join(dir, 'remote') });
      expect(remote.summary!.status).toBe('completed');
      expect(w.lastUpload.map((u) => u.sent)).toEqual([1, 1]); // the corpus and the chat file
      expect(strip(remote.metricsSoFar)).toEqual(strip(await readJsonl(join(dir, 'local', 'metrics.jsonl'))));
      expect(existsSync(join(dir, 'remote', 'stages', '1-sft', 'checkpoints', '2', 'model.safetensors'))).toBe(true);
      w.close();
    } finally {
      await server.close();
    }
  });

  it('log lines are kept in job.log and replayed to a client that connects later, numbered like metrics: none lost, none repeated across drops', async () => {
    const dir = await scratch('lathe-wlog-');
    const data = await tallySlice(dir, 150);
    const server = await WorkerServer.start({
      token: TOKEN,
      stateDir: join(dir, 'state'),
      backend: 'cpu',
      log: () => {},
    });
    const jobLog = async (job: string) =>
      (await readFile(join(server.queue.jobDir(job), 'job.log'), 'utf8')).trimEnd().split('\n');
    try {
      const w = await connect(server.url, { token: TOKEN });
      const r = new Recipe(
        tinyRecipe(data, { name: 'logged', train: { steps: 3, batchSize: 4, warmupSteps: 1, checkpointEvery: 3 } }),
        { baseDir: dir },
      );
      await r.run({ on: w, out: join(dir, 'mirror') });
      const job = w.lastJob!.id;
      const lines = await jobLog(job);
      expect(lines[0]).toMatch(/^\d{4}-\d\d-\d\dT[\d:.]+Z queued logged \(pretrain, 3 steps, cpu, lock \w+\)$/);
      expect(lines[1]).toMatch(/Z training on cpu$/);
      expect(lines.at(-1)).toMatch(/Z completed at step 3\/3, loss \d+\.\d{4}$/);

      // A client that connects after the job ended gets every line, numbered from 0, before the final state.
      const late = await WorkerClient.connect(server.url, { token: TOKEN });
      const replay = async (from?: number) => {
        const got: [number, string][] = [];
        await new Promise<void>((resolve) => {
          const watch = late.watch(
            job,
            {
              log: (line, seq) => got.push([seq, line]),
              state: (j) => isFinal(j.status) && (watch.close(), resolve()),
            },
            { logs: from },
          );
        });
        return got;
      };
      expect(await replay()).toEqual(lines.map((l, i) => [i, l]));
      expect(await replay(2)).toEqual(lines.slice(2).map((l, i) => [i + 2, l]));
      expect(await replay(lines.length)).toEqual([]);
      late.close();

      // Live: lines written while the client listens arrive at once; lines written while it is away
      // arrive once it is back, from the line it stopped at.
      const long = r.with({ name: 'long', train: { steps: 400, checkpointEvery: 0 } });
      await long.start({ on: w, out: join(dir, 'long') });
      const lj = w.lastJob!.id;
      const c = await WorkerClient.connect(server.url, { token: TOKEN });
      const seen: [number, string][] = [];
      const ended = new Promise<void>((resolve) =>
        c.watch(lj, { log: (line, seq) => seen.push([seq, line]), state: (j) => isFinal(j.status) && resolve() }),
      );
      await until('training', () => seen.some(([, l]) => l.endsWith('training on cpu')));
      server.queue.log(lj, 'note while connected');
      await until('the note', () => seen.some(([, l]) => l.endsWith('note while connected')));
      for (let drop = 0; drop < 2; drop++) {
        const back = new Promise((resolve) => c.once('reconnected', resolve));
        c.drop();
        for (let i = 0; i < 3; i++) server.queue.log(lj, `note ${i} while away (${drop})`);
        await back;
        server.queue.log(lj, `note after reconnect ${drop}`);
      }
      // One entry is one line, even with newlines in it (a stack trace).
      server.queue.log(lj, 'first line\nsecond line');
      await server.queue.cancel(lj);
      await ended;
      const all = await jobLog(lj);
      expect(seen).toEqual(all.map((l, i) => [i, l]));
      expect(all.filter((l) => /note \d while away/.test(l))).toHaveLength(6);
      expect(all.find((l) => l.includes('first line'))).toMatch(/Z first line \u23ce second line$/);
      expect(all.at(-1)).toMatch(/cancelled at step \d+\/400/);
      c.close();
      w.close();
    } finally {
      await server.close();
    }
  });

  it('submit --attach follows a running job from its start (metrics, events, log lines) and downloads its run; also an ended one; bad combinations exit 2', async () => {
    const dir = await scratch('lathe-wattach-');
    const data = await tallySlice(dir, 200);
    const tokenFile = join(dir, 'token');
    await writeFile(tokenFile, TOKEN + '\n', { mode: 0o600 });
    const server = await WorkerServer.start({
      token: TOKEN,
      stateDir: join(dir, 'state'),
      backend: 'cpu',
      log: () => {},
    });
    const auth = ['--worker', server.url, '--token-file', tokenFile];
    try {
      // A job submitted by another client, which then went away: it trains on.
      const w = await connect(server.url, { token: TOKEN });
      const r = new Recipe(
        tinyRecipe(data, { name: 'long', train: { steps: 400, batchSize: 4, warmupSteps: 1, checkpointEvery: 0 } }),
        { baseDir: dir },
      );
      const first = await r.start({ on: w, out: join(dir, 'first') });
      const job = w.lastJob!.id;
      await until('3 steps', () => (server.queue.get(job)?.step ?? 0) >= 3);
      w.close();
      const firstLock = await readFile(join(dir, 'first', 'recipe.lock.json'), 'utf8');

      // Attach while it runs; it ends (cancelled here) while the CLI follows it.
      const before = server.queue.get(job)!.step;
      const attaching = latheAsync(['submit', '--attach', job, ...auth, '--out', join(dir, 'att')]);
      // Cancel once the mirror holds the history up to the attach and a few live points after it.
      await until(
        'the mirror to stream',
        async () => (await completeLines(join(dir, 'att', 'metrics.jsonl'))) >= before + 3,
      );
      await server.queue.cancel(job);
      const res = await attaching;
      expect(res.status, res.stderr).toBe(0);
      const k = server.queue.get(job)!.step;
      expect(res.stdout).toMatch(
        new RegExp(
          `^attached to job ${job} on ws://127\\.0\\.0\\.1:\\d+ \\(running, step \\d+/400, backend cpu\\); mirroring into ${join(dir, 'att')}\n`,
        ),
      );
      expect(res.stdout).toMatch(new RegExp(`run ${join(dir, 'att')}: cancelled at step ${k}/400`));
      const remote = await readJsonl(join(server.queue.runDir(job), 'metrics.jsonl'));
      expect(remote.map((m: Metric) => m.step)).toEqual(Array.from({ length: k }, (_, i) => i + 1));
      expect(await readJsonl(join(dir, 'att', 'metrics.jsonl'))).toEqual(remote);
      expect(await readJsonl(join(dir, 'att', 'events.jsonl'))).toEqual(
        await readJsonl(join(server.queue.runDir(job), 'events.jsonl')),
      );
      expect(existsSync(join(dir, 'att', 'checkpoints', String(k), 'model.safetensors'))).toBe(true);
      expect(JSON.parse(await readFile(join(dir, 'att', 'summary.json'), 'utf8'))).toMatchObject({
        id: 'att',
        status: 'cancelled',
        step: k,
        worker: { job },
      });
      expect(JSON.parse(await readFile(join(dir, 'att', 'worker.json'), 'utf8'))).toEqual({ url: server.url, job });
      // Its log from the first line (written before this client existed), each line once, on stderr.
      const log = (await readFile(join(server.queue.jobDir(job), 'job.log'), 'utf8')).trimEnd().split('\n');
      expect(log[0]).toMatch(/queued long/);
      expect(
        res.stderr
          .split('\n')
          .filter((l) => l.startsWith('worker: '))
          .map((l) => l.slice('worker: '.length)),
      ).toEqual(log);

      // Attach to the ended job, as JSON lines: the whole history once, then the summary.
      const again = await latheAsync(['submit', '--attach', job, ...auth, '--out', join(dir, 'att2'), '--json']);
      expect(again.status, again.stderr).toBe(0);
      const out = again.stdout
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l));
      expect(out.filter((o) => typeof o.step === 'number').map((o) => o.step)).toEqual(
        remote.map((m: Metric) => m.step),
      );
      expect(out.at(-1)).toMatchObject({ summary: { status: 'cancelled', step: k } });
      expect(await readJsonl(join(dir, 'att2', 'metrics.jsonl'))).toEqual(remote);
      expect(JSON.parse(await readFile(join(dir, 'att2', 'recipe.lock.json'), 'utf8')).id).toBe(first.lock.id);

      // Into the mirror the first client left half-done: brought up to date, its own lock kept.
      const update = await latheAsync(['submit', '--attach', job, ...auth, '--out', join(dir, 'first')]);
      expect(update.status, update.stderr).toBe(0);
      expect(await readJsonl(join(dir, 'first', 'metrics.jsonl'))).toEqual(remote);
      expect(await readFile(join(dir, 'first', 'recipe.lock.json'), 'utf8')).toBe(firstLock);
      expect(existsSync(join(dir, 'first', 'checkpoints', String(k), 'model.safetensors'))).toBe(true);

      // Bad combinations, each named.
      await mkdir(join(dir, 'other'));
      await writeFile(join(dir, 'other', 'recipe.lock.json'), '{}');
      const recipeFile = join(dir, 'r.json');
      await writeFile(recipeFile, JSON.stringify(tinyRecipe(data)));
      const bad: [string[], RegExp][] = [
        [
          ['submit', '--attach', 'no-such-job', ...auth],
          /--attach no-such-job: the worker at ws:\/\/127\.0\.0\.1:\d+ has no such job/,
        ],
        [['submit', recipeFile, '--attach', job, ...auth], /give a recipe or --attach \S+, not both/],
        [['submit', '--attach', job, '--steps', '3', ...auth], /--steps: not with --attach/],
        [['submit', ...auth], /missing the recipe file \(or --attach <job>/],
        [
          ['submit', '--attach', job, ...auth, '--out', join(dir, 'other')],
          /--out .*other: already holds a run, not job/,
        ],
      ];
      for (const [args, msg] of bad) {
        const b = await latheAsync(args);
        expect(b.status, args.join(' ')).toBe(2);
        expect(b.stderr).toMatch(msg);
      }
    } finally {
      await server.close();
    }
  }, 300_000);

  it('exits by itself after using the wasm backend: lathe train (threaded and single-threaded), and a --once worker when its client leaves', async () => {
    const dir = await scratch('lathe-wexit-');
    const data = await tallySlice(dir, 150);
    const recipeFile = join(dir, 'r.json');
    await writeFile(
      recipeFile,
      JSON.stringify(
        tinyRecipe(data, {
          train: { steps: 2, batchSize: 4, warmupSteps: 1, checkpointEvery: 2 },
          eval: { every: 0, batches: 1 },
        }),
      ),
    );
    for (const threads of ['1', '2']) {
      const t = await latheAsync(['train', recipeFile, '--backend', 'wasm', '--out', join(dir, `train-${threads}`)], {
        env: { LATHE_WASM_THREADS: threads },
        ms: 120_000,
      });
      expect(t.status, `LATHE_WASM_THREADS=${threads}: ${t.stderr}`).toBe(0);
      expect(t.stdout).toMatch(/backend wasm\)[\s\S]*completed at step 2\/2/);
      console.log(
        `lathe train --backend wasm (LATHE_WASM_THREADS=${threads}) exited ${t.quietMs} ms after its last output`,
      );
      expect(t.quietMs).toBeLessThan(10_000);
    }

    const tokenFile = join(dir, 'token');
    await writeFile(tokenFile, TOKEN + '\n', { mode: 0o600 });
    const worker = await startWorkerProcess(
      [
        '--listen',
        '127.0.0.1:0',
        '--token-file',
        tokenFile,
        '--state-dir',
        join(dir, 'state'),
        '--backend',
        'wasm',
        '--once',
      ],
      join(dir, 'url'),
    );
    children.push(worker.child);
    const exited = new Promise<number | null>((r) => worker.child.once('exit', (code) => r(code)));
    const w = await connect(worker.url, { token: TOKEN });
    expect(w.client.hello.backend).toBe('wasm');
    const r = new Recipe(tinyRecipe(data, { train: { steps: 2, batchSize: 4, warmupSteps: 1, checkpointEvery: 2 } }), {
      baseDir: dir,
    });
    const run = await r.run({ on: w, out: join(dir, 'remote'), backend: 'wasm' });
    expect(run.summary).toMatchObject({ status: 'completed', backend: 'wasm' });
    const left = Date.now();
    w.close();
    const code = await Promise.race([
      exited,
      new Promise<string>((r) => setTimeout(() => r('still running after 30 s'), 30_000)),
    ]);
    expect(code, worker.stderr()).toBe(0);
    console.log(`lathe worker --once --backend wasm exited ${Date.now() - left} ms after its client left`);
    expect(worker.stderr()).toMatch(/once: the job has ended and its clients have left; stopping/);
  });

  it('every worker verb has --help', () => {
    for (const verb of ['worker', 'submit', 'jobs', 'cancel']) {
      const r = lathe([verb, '--help']);
      expect(r.status, verb).toBe(0);
      expect(r.stdout).toMatch(new RegExp(`^Usage: lathe ${verb} `));
    }
    const help = lathe(['worker', '--help']).stdout;
    for (const flag of ['--max-connections <n>', '--max-connections-per-client <n>', '--keepalive-ms <ms>'])
      expect(help).toContain(flag);
    const bad = lathe(['worker', '--listen', 'nowhere', '--token-file', 'x']);
    expect(bad.status).toBe(2);
    expect(bad.stderr).toMatch(/--listen must be HOST:PORT/);
  });
});

export type { Run };
