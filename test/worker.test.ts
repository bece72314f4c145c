import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, readFile, realpath, symlink, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { localExecutor } from '../src/dispatch/local.js';
import { connect, type WorkerExecutor } from '../src/dispatch/worker.js';
import { Pipeline, Recipe } from '../src/recipe/recipe.js';
import type { Run } from '../src/runs/run.js';
import type { Metric } from '../src/runs/rundir.js';
import { TIMING_KEYS } from '../src/runs/rundir.js';
import { WorkerServer } from '../src/worker/server.js';
import { lathe, ROOT, scratch, tallySlice, tinyRecipe } from './helpers.js';

const TOKEN = 'worker-test-token-0123456789abcdef';

/** Metrics without their timing fields (what reproduce compares). */
const strip = (ms: Metric[]) => ms.map((m) => Object.fromEntries(Object.entries(m).filter(([k]) => !TIMING_KEYS.has(k))));
const readJsonl = async (p: string) => (await readFile(p, 'utf8')).trim().split('\n').map((l) => JSON.parse(l));
const until = async (what: string, ok: () => boolean | Promise<boolean>, ms = 120_000) => {
  const deadline = Date.now() + ms;
  while (!(await ok())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
};

async function freePort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', () => r()));
  const port = (s.address() as { port: number }).port;
  await new Promise((r) => s.close(r));
  return port;
}

/** `lathe worker` as a child process (the built CLI), resolved once it listens. */
async function startWorkerProcess(args: string[], announce: string): Promise<{ child: ChildProcess; url: string; stderr: () => string }> {
  let err = '';
  const child = spawn(process.execPath, [join(ROOT, 'bin', 'lathe.js'), 'worker', ...args, '--announce', announce], { stdio: ['ignore', 'ignore', 'pipe'] });
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
    const recipe = new Recipe(tinyRecipe(data, { train: { steps: 16, batchSize: 4, warmupSteps: 2, checkpointEvery: 4 } }), { baseDir: dir });
    const small = new Recipe(tinyRecipe(data, { name: 'small', seed: 5, train: { steps: 3, batchSize: 4, warmupSteps: 1, checkpointEvery: 3 } }), { baseDir: dir });

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
    expect(JSON.parse(await readFile(join(dir, 'mirror-a', 'summary.json'), 'utf8'))).toMatchObject({ id: 'mirror-a', status: 'completed', worker: { job: jobA } });
    const jobs = await w.jobs();
    expect(jobs.map((j) => [j.id, j.status, j.restarts])).toEqual([
      [jobA, 'completed', 1],
      [jobB, 'completed', 0],
    ]);
    expect(await readFile(join(jobDir, 'job.log'), 'utf8')).toMatch(/resuming after the worker stopped, from the checkpoint at step \d+/);

    // The CLI against the same worker: submit --wait downloads the run; jobs; cancel of an unknown job.
    const recipeFile = join(dir, 'r.json');
    await writeFile(recipeFile, JSON.stringify(tinyRecipe(data, { train: { steps: 3, batchSize: 4, warmupSteps: 1, checkpointEvery: 3 } })));
    const sub = lathe(['submit', recipeFile, '--worker', second.url, '--token-file', tokenFile, '--steps', '2', '--out', join(dir, 'cli-run'), '--wait']);
    expect(sub.status, sub.stderr).toBe(0);
    expect(sub.stdout).toMatch(/^job \S+ on ws:\/\/127\.0\.0\.1:\d+ \(lock \w+, backend cpu\)/);
    expect(sub.stdout).toMatch(/completed at step 2\/2/);
    expect(existsSync(join(dir, 'cli-run', 'checkpoints', '2', 'model.safetensors'))).toBe(true);
    const listed = lathe(['jobs', '--worker', second.url, '--token-file', tokenFile, '--json']);
    expect(listed.status, listed.stderr).toBe(0);
    expect(JSON.parse(listed.stdout).map((j: { status: string }) => j.status)).toEqual(['completed', 'completed', 'completed']);
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
    await until('the refusal in the log', () => /refused connection from 127\.0\.0\.1:\d+: wrong token/.test(second.stderr()), 10_000);
    expect(second.stderr()).not.toContain('x'.repeat(32));

    w.close();
    second.child.kill('SIGTERM');
    expect(await new Promise((r) => second.child.once('exit', r))).toBe(0);
    expect(existsSync(join(state, 'worker.pid'))).toBe(false);
  });

  it('training goes on while a client is away; a client that drops catches up without losing or repeating a point; cancel stops a job', async () => {
    const dir = await scratch('lathe-wdrop-');
    const data = await tallySlice(dir, 300);
    const server = await WorkerServer.start({ token: TOKEN, stateDir: join(dir, 'state'), backend: 'cpu', log: () => {} });
    try {
      const w = await connect(server.url, { token: TOKEN });
      const r = new Recipe(tinyRecipe(data, { train: { steps: 10, batchSize: 4, warmupSteps: 1, checkpointEvery: 5 } }), { baseDir: dir });
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
      expect(resumed.metricsSoFar.slice(0, ps.step).map((m) => m.step)).toEqual(Array.from({ length: ps.step }, (_, i) => i + 1));
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
    const server = await WorkerServer.start({ token: TOKEN, stateDir: join(dir, 'state'), dataRoot: root, backend: 'cpu', log: () => {} });
    try {
      const w: WorkerExecutor = await connect(server.url, { token: TOKEN });
      const rec = (path: string) => new Recipe(tinyRecipe(path, { train: { steps: 2, batchSize: 4, warmupSteps: 1, checkpointEvery: 2 } }), { baseDir: join(dir, 'client') });
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
      expect(JSON.parse(await readFile(join(dir, 'hf', 'config.json'), 'utf8')).architectures).toEqual(['LlamaForCausalLM']);
      expect(existsSync(join(dir, 'hf', 'model.safetensors'))).toBe(true);

      await expect(rec('worker:../tally.jsonl').start({ on: w })).rejects.toThrow(/data.sources\[0\].path: worker:..\/tally.jsonl leaves the worker's --data-root/);
      await expect(rec('worker:/etc/passwd').start({ on: w })).rejects.toThrow(/not absolute/);
      await expect(rec('worker:corpus/escape.jsonl').start({ on: w })).rejects.toThrow(/worker:corpus\/escape.jsonl is a link that leaves the worker's --data-root/);
      await expect(rec('worker:corpus/*.jsonl').start({ on: w })).rejects.toThrow(/is a link that leaves/);
      await expect(rec('worker:corpus/missing.jsonl').start({ on: w })).rejects.toThrow(/missing.jsonl does not exist/);

      // A hand-made lock cannot reach outside either: relative paths that climb, or data it never uploaded.
      const good = await rec('worker:corpus/tally.jsonl').lock({ backend: 'cpu' }).catch(() => undefined);
      expect(good).toBeUndefined(); // the client cannot even lock worker: data itself
      const forged = structuredClone(run.lock) as unknown as Record<string, unknown> & { data: { files: { path: string }[] }[] };
      forged.data[0]!.files[0]!.path = '../../../etc/passwd';
      await expect(w.client.request({ type: 'submit', lock: forged, files: [] })).rejects.toThrow(/is not among the uploaded files/);
      forged.data[0]!.files[0]!.path = outside;
      await expect(w.client.request({ type: 'submit', lock: forged, files: [] })).rejects.toThrow(/is not among the uploaded files/);
      const climbing = structuredClone(run.lock) as unknown as { recipe: { eval: { suites: unknown[] } } };
      climbing.recipe.eval.suites = [{ name: 'x', path: '../../../../etc/passwd' }];
      await expect(w.client.request({ type: 'submit', lock: climbing as unknown as Record<string, unknown>, files: [] })).rejects.toThrow(/eval.suites\[0\].path: ..\/..\/..\/..\/etc\/passwd leaves the recipe's folder/);
      w.close();
    } finally {
      await server.close();
    }
  });

  it('runs a pipeline (pretrain → sft) on a worker: the files of every stage go up, later stages lock there, metrics equal a local run', async () => {
    const dir = await scratch('lathe-wpipe-');
    const data = await tallySlice(dir, 200);
    const chat: string[] = [];
    for (let i = 0; i < 40; i++) chat.push(JSON.stringify({ messages: [{ role: 'user', content: `let x = ${i}\nemit` }, { role: 'assistant', content: `emit x` }] }));
    await mkdir(join(dir, 'sft'));
    await writeFile(join(dir, 'sft', 'chat.jsonl'), chat.join('\n') + '\n');
    const p = Pipeline.of(
      [
        new Recipe(tinyRecipe(data, { train: { steps: 3, batchSize: 4, warmupSteps: 1, checkpointEvery: 3 } }), { baseDir: dir }),
        new Recipe({ stage: 'sft', data: { sources: [{ path: 'sft/chat.jsonl' }] }, train: { steps: 2, batchSize: 4, warmupSteps: 1, checkpointEvery: 2 }, eval: { every: 0, batches: 1 } }, { baseDir: dir }),
      ],
      { baseDir: dir, backend: 'cpu' },
    );
    const local = await p.run({ out: join(dir, 'local') });
    expect(local.summary!.status).toBe('completed');
    const server = await WorkerServer.start({ token: TOKEN, stateDir: join(dir, 'state'), backend: 'cpu', log: () => {} });
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

  it('every worker verb has --help', () => {
    for (const verb of ['worker', 'submit', 'jobs', 'cancel']) {
      const r = lathe([verb, '--help']);
      expect(r.status, verb).toBe(0);
      expect(r.stdout).toMatch(new RegExp(`^Usage: lathe ${verb} `));
    }
    const bad = lathe(['worker', '--listen', 'nowhere', '--token-file', 'x']);
    expect(bad.status).toBe(2);
    expect(bad.stderr).toMatch(/--listen must be HOST:PORT/);
  });
});

export type { Run };
