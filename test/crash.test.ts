import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { lathe, ROOT, scratch, tallySlice, tinyRecipe } from './helpers.js';

const strip = (text: string) =>
  text
    .trim()
    .split('\n')
    .map((l) => {
      const { tokens_per_s: _a, gflops: _b, step_ms: _c, ...rest } = JSON.parse(l);
      return rest;
    });

describe('crash safety', () => {
  it('after kill -9 mid-run, resume continues from the last intact checkpoint and matches an uninterrupted run to the bit', async () => {
    const dir = await scratch();
    const data = await tallySlice(dir, 400);
    await writeFile(
      join(dir, 'r.json'),
      JSON.stringify(tinyRecipe(data, { train: { steps: 30, batchSize: 4, warmupSteps: 3, checkpointEvery: 5 } })),
    );
    const straight = lathe(['train', join(dir, 'r.json'), '--out', join(dir, 'straight')]);
    expect(straight.status, straight.stderr).toBe(0);

    const run = join(dir, 'crashed');
    const child = spawn(process.execPath, [join(ROOT, 'bin', 'lathe.js'), 'train', join(dir, 'r.json'), '--out', run], {
      stdio: 'ignore',
    });
    const deadline = Date.now() + 120_000;
    while (!existsSync(join(run, 'checkpoints', '10', 'state.json'))) {
      if (Date.now() > deadline) throw new Error('no checkpoint at step 10 within 2 minutes');
      await new Promise((r) => setTimeout(r, 50));
    }
    child.kill('SIGKILL');
    await new Promise((r) => child.once('exit', r));
    // A crash in the middle of writing a checkpoint leaves a temp folder and no state.json.
    await mkdir(join(run, 'checkpoints', '.tmp-35-1'), { recursive: true });
    await writeFile(join(run, 'checkpoints', '.tmp-35-1', 'model.safetensors'), 'partial');
    await mkdir(join(run, 'checkpoints', '40'), { recursive: true });

    const resumed = lathe(['resume', run]);
    expect(resumed.status, resumed.stderr).toBe(0);
    const events = (await readFile(join(run, 'events.jsonl'), 'utf8'))
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l));
    const res = events.find((e) => e.type === 'resumed');
    expect(res.step).toBeGreaterThanOrEqual(10);
    expect(res.step % 5).toBe(0);
    expect(strip(await readFile(join(run, 'metrics.jsonl'), 'utf8'))).toEqual(
      strip(await readFile(join(dir, 'straight', 'metrics.jsonl'), 'utf8')),
    );
  });

  it('Ctrl-C (SIGINT) during lathe train stops at the next step with a checkpoint', async () => {
    const dir = await scratch();
    const data = await tallySlice(dir, 400);
    await writeFile(
      join(dir, 'r.json'),
      JSON.stringify(tinyRecipe(data, { train: { steps: 400, batchSize: 4, warmupSteps: 3, checkpointEvery: 0 } })),
    );
    const run = join(dir, 'interrupted');
    const child = spawn(process.execPath, [join(ROOT, 'bin', 'lathe.js'), 'train', join(dir, 'r.json'), '--out', run], {
      stdio: 'ignore',
    });
    const deadline = Date.now() + 120_000;
    const metricLines = async () =>
      (await readFile(join(run, 'metrics.jsonl'), 'utf8').catch(() => '')).trim().split('\n').filter(Boolean).length;
    while ((await metricLines()) < 3) {
      if (Date.now() > deadline) throw new Error('training did not start within 2 minutes');
      await new Promise((r) => setTimeout(r, 50));
    }
    child.kill('SIGINT');
    const code = await new Promise((r) => child.once('exit', r));
    expect(code).toBe(0);
    const events = (await readFile(join(run, 'events.jsonl'), 'utf8'))
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l));
    const last = events.at(-1);
    expect(last.type).toBe('interrupted');
    expect(last.step).toBeLessThan(400);
    expect(existsSync(join(run, 'checkpoints', String(last.step), 'state.json'))).toBe(true);
  });
});
