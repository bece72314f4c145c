// One run over several ranks as a user runs it (torch engine, CPU ranks on gloo): the data each rank
// reads over an epoch, resume on another world size, a rank killed -9 and brought back, a hung rank
// caught by the timeout, and the ranks' throughput in metrics and events.
import { writeFileSync } from 'node:fs';
import { mkdir, readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { resume } from '../src/runs/index.js';
import { Recipe } from '../src/runs/recipe.js';
import type { Metric } from '../src/runs/rundir.js';
import { lathe, scratch, tallySlice, tinyRecipe } from './helpers.js';
import { untimed } from './post-helpers.js';

let dir: string;
let data: string;
beforeAll(async () => {
  dir = await scratch('lathe-dist-');
  data = await tallySlice(dir, 300);
});

const rel = (a: number, b: number) => Math.abs(a - b) / Math.max(Math.abs(a), Math.abs(b), 1e-12);
const model = { dim: 32, layers: 2, heads: 4, kvHeads: 2, context: 32 };
const recipe = (train: Record<string, unknown>, over: Record<string, unknown> = {}) =>
  new Recipe(
    tinyRecipe(data, {
      engine: 'torch',
      model,
      train: { batchSize: 6, lr: 0.01, minLr: 0.001, warmupSteps: 2, ...train },
      eval: { every: 0, batches: 1 },
      ...over,
    }),
    { baseDir: dir },
  );
const losses = (ms: Metric[]) => ms.filter((m) => m.step > 0 && typeof m.loss === 'number');

/** The windows a pretrain run reads: its token file cut into seq+1 tokens at stride seq. */
async function windows(runDir: string, seq: number): Promise<string[]> {
  const bin = await readFile(join(runDir, 'data', '0.train.bin'));
  const t = new Uint16Array(bin.buffer, bin.byteOffset, bin.byteLength / 2);
  const out: string[] = [];
  for (let w = 0; (w + 1) * seq < t.length; w++) out.push([...t.subarray(w * seq, w * seq + seq + 1)].join(' '));
  return out;
}

/** What LATHE_TRACE_ROWS wrote: per rank, the rows it trained on, by optimizer step. */
async function traced(folder: string): Promise<Map<number, { step: number; row: string }[]>> {
  const out = new Map<number, { step: number; row: string }[]>();
  for (const f of (await readdir(folder)).sort()) {
    const rank = Number(/rank(\d+)\.txt/.exec(f)![1]);
    const lines = (await readFile(join(folder, f), 'utf8')).trim().split('\n');
    out.set(
      rank,
      lines.map((l) => ({ step: Number(l.slice(0, l.indexOf(' '))), row: l.slice(l.indexOf(' ') + 1) })),
    );
  }
  return out;
}

describe('one run over several ranks (torch.distributed on gloo)', () => {
  it('over an epoch every sequence is read once, by one rank, in the same order with 1, 2 and 3 ranks', async () => {
    const seq = model.context;
    const probe = await recipe({ steps: 1, warmupSteps: 0, checkpointEvery: 0 }).run({ out: join(dir, 'probe') });
    const all = await windows(probe.dir.path, seq);
    const steps = Math.ceil(all.length / 6);
    expect(all.length).toBeGreaterThan(12);
    const reads: string[][] = [];
    for (const gpus of [1, 2, 3]) {
      const trace = join(dir, `trace-${gpus}`);
      await mkdir(trace);
      process.env.LATHE_TRACE_ROWS = trace;
      const run = await recipe({ steps, checkpointEvery: 0 })
        .run({ out: join(dir, `epoch-${gpus}`), gpus })
        .finally(() => delete process.env.LATHE_TRACE_ROWS);
      expect(run.summary!.status, run.summary!.error).toBe('completed');
      const byRank = await traced(trace);
      expect([...byRank.keys()]).toEqual([...Array(gpus).keys()]);
      // Each rank reads its own share of every step (6 rows over the ranks), no more.
      for (const rows of byRank.values()) expect(rows.length).toBe(steps * (6 / gpus));
      // The global order: by step, then rank, then row within the rank's shard.
      const order: string[] = [];
      for (let s = 1; s <= steps; s++)
        for (const rows of byRank.values()) order.push(...rows.filter((x) => x.step === s).map((x) => x.row));
      reads.push(order);
    }
    // The first epoch is every window once; the rest of the last step starts the next epoch.
    for (const order of reads) expect([...order.slice(0, all.length)].sort()).toEqual([...all].sort());
    expect(reads[1]).toEqual(reads[0]);
    expect(reads[2]).toEqual(reads[0]);
  }, 600_000);

  it('a run saved on 2 ranks (DDP) resumes on 3 (FSDP) and on 1; losses follow the uninterrupted run within 1e-5', async () => {
    const r = recipe({ steps: 10, checkpointEvery: 5 });
    const straight = await r.run({ out: join(dir, 'straight2'), gpus: 2 });
    expect(straight.summary!.status, straight.summary!.error).toBe('completed');
    const ms = await straight.dir.readMetrics();
    expect(ms.find((m) => m.step === 3)?.rank_tokens_per_s).toHaveLength(2);
    const events = (await readFile(join(straight.dir.path, 'events.jsonl'), 'utf8')).trim().split('\n');
    expect(events.some((l) => /torch\.distributed: 2 ranks \(ddp, 1 node × 2\)/.test(l))).toBe(true);
    for (const [gpus, parallel] of [
      [3, 'fsdp'],
      [1, 'ddp'],
    ] as const) {
      const part = await r.run({ out: join(dir, `moved-${gpus}`), gpus: 2, stopAfter: 5 });
      expect(part.summary).toMatchObject({ status: 'interrupted', step: 5 });
      const moved = await resume(part.dir.path, { resources: { gpus, parallel } });
      await moved.done;
      expect(moved.summary!.status, moved.summary!.error).toBe('completed');
      expect(
        JSON.parse(await readFile(join(part.dir.path, 'recipe.lock.json'), 'utf8')).recipe.resources,
      ).toMatchObject({ gpus, parallel });
      const [a, b] = [losses(ms), losses(await moved.dir.readMetrics())];
      expect(b.map((m) => m.step)).toEqual(a.map((m) => m.step));
      const worst = Math.max(...a.map((m, i) => rel(m.loss as number, b[i]!.loss as number)));
      console.log(
        `[distributed] saved on 2 ranks, resumed on ${gpus} (${parallel}): worst loss difference ${worst.toExponential(2)}`,
      );
      expect(worst).toBeLessThanOrEqual(1e-5);
    }
  }, 600_000);

  it('kill -9 of one rank mid-run (FSDP, checkpoints sharded through DCP): the run comes back from its last checkpoint and ends with the same metrics', async () => {
    const r = recipe({ steps: 12, checkpointEvery: 4 }, { resources: { gpus: 2, parallel: 'fsdp', restarts: 1 } });
    const straight = await r.run({ out: join(dir, 'uninterrupted') });
    expect(straight.summary!.status, straight.summary!.error).toBe('completed');
    const run = await r.start({ out: join(dir, 'killed') });
    let rank1: number | undefined;
    run.onEvent((e) => {
      const m = /rank 1 pid (\d+)/.exec(e.message);
      if (m) rank1 = Number(m[1]);
    });
    let killed = false;
    run.onMetric((m) => {
      if (m.step === 6 && !killed && rank1) {
        killed = true;
        process.kill(rank1, 'SIGKILL');
      }
    });
    await run.done;
    expect(killed).toBe(true);
    expect(run.summary!.status, run.summary!.error).toBe('completed');
    const events = (await readFile(join(run.dir.path, 'events.jsonl'), 'utf8'))
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l));
    const restart = events.find((e) => /restarting from the last checkpoint/.test(e.message));
    expect(restart?.message).toMatch(/rank 1 on \S+ killed by signal 9/);
    // Steps 5 and 6 ran twice; metrics.jsonl keeps the redone ones, equal to the bit.
    expect(untimed(await run.dir.readMetrics())).toEqual(untimed(await straight.dir.readMetrics()));
  }, 600_000);

  it('a rank that hangs is caught by the timeout with a clear message; nothing is left running', async () => {
    const r = recipe({ steps: 40, checkpointEvery: 2 }, { resources: { gpus: 2, timeoutSeconds: 25 } });
    const run = await r.start({ out: join(dir, 'hung') });
    let pids: number[] = [];
    run.onEvent((e) => {
      if (/torch\.distributed/.test(e.message)) pids = [...e.message.matchAll(/pid (\d+)/g)].map((m) => Number(m[1]));
    });
    let stopped = false;
    run.onMetric((m) => {
      if (m.step === 3 && !stopped) {
        stopped = true;
        process.kill(pids[1]!, 'SIGSTOP');
      }
    });
    const t0 = Date.now();
    const why = await run.done.then(
      () => undefined,
      (e: Error) => e.stack,
    );
    expect(stopped).toBe(true);
    // A failed run's done rejects with the error; its summary is on disk.
    const summary = await run.dir.readSummary();
    expect(summary?.status, why).toBe('failed');
    expect(summary!.error).toMatch(
      /no reply to forward_backward within 25 s: a rank hangs \(resources\.timeoutSeconds\)/,
    );
    expect(Date.now() - t0).toBeLessThan(120_000);
    const alive = () =>
      pids.filter((p) => {
        try {
          process.kill(p, 0);
          return true;
        } catch {
          return false;
        }
      });
    // SIGKILL lands at once; the orphaned ranks are reaped by init a moment later.
    for (let i = 0; i < 50 && alive().length; i++) await new Promise((r) => setTimeout(r, 100));
    expect(alive()).toEqual([]);
  }, 300_000);

  it('asking for what is not there is an exit-2 error before anything starts', () => {
    const file = join(dir, 'r.json');
    const write = (o: Record<string, unknown>) =>
      writeFileSync(file, JSON.stringify(tinyRecipe(data, { train: { steps: 2, warmupSteps: 0 }, ...o })));
    write({});
    const tfjs = lathe(['train', file, '--gpus', '2', '--out', join(dir, 'no-1')]);
    expect(tfjs.status).toBe(2);
    expect(tfjs.stderr).toMatch(/resources: 2 × 1 ranks need the torch engine \(--engine torch\)/);
    const cuda = lathe([
      'train',
      file,
      '--engine',
      'torch',
      '--device',
      'cuda',
      '--gpus',
      '4',
      '--out',
      join(dir, 'no-2'),
    ]);
    expect(cuda.status).toBe(2);
    expect(cuda.stderr).toMatch(/device cuda: torch .* sees no CUDA device/);
    write({ resources: { gpus: 0 } });
    const bad = lathe(['validate', file]);
    expect(bad.status).not.toBe(0);
    expect(bad.stderr).toMatch(/resources\.gpus/);
  });
});
