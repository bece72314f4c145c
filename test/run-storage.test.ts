// What a crash, a full disk or a bit-flip can do to a run directory, and what Lathe does about it:
// lost metric lines, checkpoint retention and orphans, checksums, private run directories.
import { existsSync } from 'node:fs';
import { mkdir, readFile, readdir, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { exportHf } from '../src/export/hf.js';
import { resume } from '../src/runs/index.js';
import { Recipe } from '../src/runs/recipe.js';
import type { Metric, RunEvent } from '../src/runs/rundir.js';
import { lathe, scratch, tallySlice, tinyRecipe } from './helpers.js';
import { untimed } from './post-helpers.js';

let dir: string;
let data: string;
beforeAll(async () => {
  dir = await scratch('lathe-storage-');
  data = await tallySlice(dir, 300);
});

const recipe = (over: Record<string, unknown> = {}) => new Recipe(tinyRecipe(data, over), { baseDir: dir });
const train = { steps: 10, batchSize: 4, lr: 0.01, minLr: 0.001, warmupSteps: 2, checkpointEvery: 2 };
const lines = async (runDir: string) => (await readFile(join(runDir, 'metrics.jsonl'), 'utf8')).split('\n');
const notices = async (runDir: string) =>
  (await readFile(join(runDir, 'events.jsonl'), 'utf8'))
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as RunEvent)
    .filter((e) => e.type === 'notice')
    .map((e) => e.message);

describe('metrics.jsonl after a crash', () => {
  let straight: Metric[];
  beforeAll(async () => {
    const run = await recipe({ train }).run({ out: join(dir, 'straight') });
    straight = await run.dir.readMetrics();
  });

  it('a torn last line (checkpoint present) is restored from the checkpoint on resume', async () => {
    const run = await recipe({ train }).run({ out: join(dir, 'torn'), stopAfter: 6 });
    const l = await lines(run.dir.path);
    // The line of step 6 cut mid-write, as a crash leaves it.
    l[5] = l[5]!.slice(0, 20);
    await writeFile(run.dir.metricsPath, l.join('\n').trimEnd());
    const again = await resume(run.dir.path);
    await again.done;
    expect(untimed(await again.dir.readMetrics())).toEqual(untimed(straight));
    expect(await notices(run.dir.path)).toContain('metrics.jsonl: restored the lines of step 6 from the checkpoints');
    expect(await readFile(run.dir.corruptMetricsPath, 'utf8')).toMatch(/metrics\.jsonl:6: \{"step":6,/);
  });

  it('a garbage line in the middle is kept aside with an event, never deleted; the lost line is restored', async () => {
    const run = await recipe({ train }).run({ out: join(dir, 'garbage'), stopAfter: 6 });
    const l = await lines(run.dir.path);
    l.splice(2, 1, 'x\u0000garbage{');
    await writeFile(run.dir.metricsPath, l.join('\n'));
    const again = await resume(run.dir.path);
    await again.done;
    expect(untimed(await again.dir.readMetrics())).toEqual(untimed(straight));
    expect(await readFile(run.dir.corruptMetricsPath, 'utf8')).toBe(`${run.dir.metricsPath}:3: x\u0000garbage{\n`);
    const said = await notices(run.dir.path);
    expect(said).toContain(`metrics.jsonl: line 3 did not parse; kept in ${run.dir.corruptMetricsPath}`);
    expect(said).toContain('metrics.jsonl: restored the lines of step 3 from the checkpoints');
  });

  it('says which lines it could not restore once their checkpoints are gone', async () => {
    const run = await recipe({ train, checkpoints: { keep: 1, keepBest: false } }).run({
      out: join(dir, 'gone'),
      stopAfter: 8,
    });
    const l = await lines(run.dir.path);
    l.splice(0, 1, '{"step": 1, "stage": "pre');
    await writeFile(run.dir.metricsPath, l.join('\n'));
    const again = await resume(run.dir.path);
    await again.done;
    expect(await notices(run.dir.path)).toContain(
      'metrics.jsonl: the lines of step 1 are lost and could not be restored (their checkpoints are gone)',
    );
  });

  it('reproduce reports the steps metrics.jsonl is missing, not a divergence', async () => {
    const run = await recipe({ train }).run({ out: join(dir, 'repro') });
    const l = await lines(run.dir.path);
    l.splice(6, 1, 'not json');
    await writeFile(run.dir.metricsPath, l.join('\n'));
    const r = lathe(['reproduce', run.dir.path, '--out', join(dir, 'repro-again')]);
    expect(r.status).toBe(1);
    expect(r.stdout).toMatch(
      /metrics\.jsonl is missing steps 7; lines 7 of it do not parse: it cannot be compared there/,
    );
    expect(r.stdout).not.toMatch(/diverged/);
  });
});

describe('checkpoints', () => {
  it('keep the last N, the milestones and the best by eval loss; resume and export still work; orphans are cleaned up', async () => {
    const over = { train: { ...train, steps: 20 }, eval: { every: 4, batches: 2 } };
    const plain = await recipe(over).run({ out: join(dir, 'keep-default') });
    const steps = await plain.dir.checkpointSteps();
    // Default: the last 3, plus the best held-out loss (it falls with training: the last one here).
    expect(steps).toEqual([16, 18, 20]);
    const milestones = await recipe({ ...over, checkpoints: { keep: 2, keepEvery: 5, keepBest: false } }).run({
      out: join(dir, 'keep-milestones'),
    });
    expect(await milestones.dir.checkpointSteps()).toEqual([10, 18, 20]);
    // The best by eval loss survives the last-N window: at this learning rate step 14 evaluates
    // better than step 16 (fixed seed), so keep 1 leaves both.
    const worse = await recipe({
      train: { ...train, steps: 16, lr: 0.6, minLr: 0.6, warmupSteps: 0, gradClip: 0 },
      eval: { every: 2, batches: 2 },
      checkpoints: { keep: 1 },
    }).run({ out: join(dir, 'keep-best') });
    const ms = await worse.dir.readMetrics();
    const best = ms.filter((m) => typeof m.eval_loss === 'number').sort((a, b) => a.eval_loss! - b.eval_loss!)[0]!.step;
    expect(best).toBe(14);
    expect(await worse.dir.checkpointSteps()).toEqual([14, 16]);

    // Interrupted and resumed with retention on: bit-identical to the straight run.
    const split = await recipe(over).run({ out: join(dir, 'keep-split'), stopAfter: 12 });
    expect(await split.dir.checkpointSteps()).toEqual([8, 10, 12]);
    // A kill mid-save and mid-delete leaves these; the next start removes them.
    await mkdir(join(split.dir.checkpointsDir, '.tmp-14-4242'), { recursive: true });
    await mkdir(join(split.dir.checkpointsDir, '.trash-6-4242'), { recursive: true });
    const again = await resume(split.dir.path);
    await again.done;
    expect(untimed(await again.dir.readMetrics())).toEqual(untimed(await plain.dir.readMetrics()));
    const names = await readdir(split.dir.checkpointsDir);
    expect(names.filter((n) => n.startsWith('.'))).toEqual([]);
    expect(await notices(split.dir.path)).toContain(
      'removed 2 unfinished checkpoint folder(s) a kill left: .tmp-14-4242, .trash-6-4242',
    );
    const exported = await exportHf(split.dir.path, join(dir, 'keep-hf'));
    expect(exported.step).toBe(20);
  });

  it('carry a sha256 per file: a flipped bit falls back to the previous good checkpoint, said aloud, in generate, export and resume', async () => {
    const run = await recipe({ train }).run({ out: join(dir, 'flip'), stopAfter: 8 });
    const file = join(run.dir.checkpointPath(8), 'model.safetensors');
    const bytes = await readFile(file);
    const state = JSON.parse(await readFile(join(run.dir.checkpointPath(8), 'state.json'), 'utf8'));
    expect(state.files['model.safetensors']).toMatch(/^[0-9a-f]{64}$/);
    bytes[bytes.length - 3] ^= 0x10; // inside the tensor data, past the header
    await writeFile(file, bytes);

    const g = lathe(['generate', run.dir.path, '--prompt', 'let', '--max-tokens', '4', '--temperature', '0']);
    expect(g.status, g.stderr).toBe(0);
    expect(g.stderr).toMatch(
      /checkpoint 8 is corrupt, skipped: .*model\.safetensors: sha256 [0-9a-f]{12}… is not the recorded/,
    );
    expect(g.stderr).toContain(`checkpoint: ${run.dir.checkpointPath(6)}`);
    const e = lathe(['export', run.dir.path, '--format', 'hf', '--out', join(dir, 'flip-hf')]);
    expect(e.status, e.stderr).toBe(0);
    expect(e.stderr).toContain(`checkpoint: ${run.dir.checkpointPath(6)}`);

    const again = await resume(run.dir.path);
    await again.done;
    expect(again.summary!.status).toBe('completed');
    const said = await notices(run.dir.path);
    expect(said.some((m) => /^checkpoint 8 is corrupt \(.*\); falling back to an earlier one$/.test(m))).toBe(true);
    const events = (await again.dir.readEvents()).filter((x) => x.type === 'resumed');
    expect(events.at(-1)!.step).toBe(6);
    expect((await again.dir.readMetrics()).map((m) => m.step)).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
  });
});

describe('private run directories', () => {
  it('lathe train --private makes the run directory, its data and checkpoints 0700', async () => {
    const file = join(dir, 'private.json');
    await writeFile(file, JSON.stringify(tinyRecipe(data, { train: { ...train, steps: 2 } })));
    const out = join(dir, 'private-run');
    const r = lathe(['train', file, '--out', out, '--private']);
    expect(r.status, r.stderr).toBe(0);
    for (const d of [out, join(out, 'data'), join(out, 'checkpoints')])
      expect((await stat(d)).mode & 0o777, d).toBe(0o700);
    const open = join(dir, 'open-run');
    expect(lathe(['train', file, '--out', open]).status).toBe(0);
    expect((await stat(open)).mode & 0o077).not.toBe(0);
    expect(existsSync(join(open, 'checkpoints', '2'))).toBe(true);
  });
});
