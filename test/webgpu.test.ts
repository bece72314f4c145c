// The webgpu backend as a user runs it, on SwiftShader (Dawn's Vulkan adapter on the CPU, from
// Debian's chromium: DESIGN, known ground): `lathe train --backend webgpu` against the cpu backend
// from the same seed (so the same weights and batches), dense and MoE, per-step loss and grad_norm;
// the checkpoint resumed on wasm; no Dawn validation error anywhere in the run's output; and the
// reason given when Dawn finds no adapter.
import { execFile, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { ROOT, scratch, tallySlice, tinyRecipe } from './helpers.js';

const ICD = '/usr/lib/chromium/vk_swiftshader_icd.json';
const SWIFTSHADER = { LD_LIBRARY_PATH: '/usr/lib/chromium', VK_ICD_FILENAMES: ICD };
const LAVAPIPE_ICD = join(ROOT, '.cache', 'lavapipe', 'lvp_icd.json');
const why = existsSync(ICD)
  ? undefined
  : `${ICD} is missing: npm test's setup installs Debian's chromium, which ships SwiftShader`;
if (why) console.warn(`webgpu tests skipped: ${why}`);

/** Largest |a - b| / |b| over steps, for one metric. */
function maxRel(got: Record<string, number>[], want: Record<string, number>[], key: string): number {
  return Math.max(...got.map((g, i) => Math.abs(g[key]! - want[i]![key]!) / Math.abs(want[i]![key]!)));
}

async function metrics(runDir: string): Promise<Record<string, number>[]> {
  const text = await readFile(join(runDir, 'metrics.jsonl'), 'utf8');
  return text
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as Record<string, number>)
    .filter((m) => m.step > 0 && typeof m.loss === 'number' && typeof m.grad_norm === 'number');
}

/**
 * `lathe` without blocking this worker's event loop (a SwiftShader run can outlast vitest's RPC
 * timeout, which spawnSync would trip).
 */
function run(
  args: string[],
  env: Record<string, string> = {},
): Promise<{ status: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [join(ROOT, 'bin', 'lathe.js'), ...args],
      { cwd: ROOT, env: { ...process.env, ...env }, timeout: 540_000, maxBuffer: 64 << 20 },
      (err, stdout, stderr) =>
        resolve({ status: err ? (typeof err.code === 'number' ? err.code : -1) : 0, stdout, stderr }),
    );
  });
}

let dir: string;
let data: string;
beforeAll(async () => {
  dir = await scratch('lathe-webgpu-');
  data = await tallySlice(dir, 300);
});

describe.skipIf(!!why)('webgpu on SwiftShader against cpu (lathe train / resume)', () => {
  const model = { dim: 32, layers: 2, heads: 4, kvHeads: 2, context: 32 };
  for (const [name, arch] of [
    ['dense', {}],
    ['moe', { arch: 'moe', experts: 4, topK: 2 }],
  ] as const) {
    it(`${name}: 5 steps on webgpu match cpu within 1e-3 (loss, grad_norm); the checkpoint resumes on wasm; no Dawn error`, async () => {
      const recipe = join(dir, `${name}.json`);
      await writeFile(
        recipe,
        JSON.stringify(
          tinyRecipe(data, {
            model: { ...model, ...arch },
            train: { steps: 6, batchSize: 4, lr: 0.01, minLr: 0.001, warmupSteps: 2, checkpointEvery: 3 },
            eval: { every: 0, batches: 1 },
          }),
        ),
      );
      const cpu = await run(['train', recipe, '--backend', 'cpu', '--out', join(dir, `${name}-cpu`)]);
      expect(cpu.status, cpu.stderr).toBe(0);
      const gpuDir = join(dir, `${name}-webgpu`);
      const gpu = await run(
        ['train', recipe, '--backend', 'webgpu', '--out', gpuDir, '--stop-after', '5'],
        SWIFTSHADER,
      );
      expect(gpu.status, gpu.stderr).toBe(0);
      const want = await metrics(join(dir, `${name}-cpu`));
      const got = await metrics(gpuDir);
      expect(want.map((m) => m.step)).toEqual([1, 2, 3, 4, 5, 6]);
      expect(got.map((m) => m.step)).toEqual([1, 2, 3, 4, 5]);
      // The grad_norm fault reported 0 on step 1 and then the previous step's loss.
      expect(got[0]!.grad_norm).toBeGreaterThan(0.1);
      expect(maxRel(got, want.slice(0, 5), 'loss')).toBeLessThan(1e-3);
      expect(maxRel(got, want.slice(0, 5), 'grad_norm')).toBeLessThan(1e-3);
      if (name === 'moe') expect(maxRel(got, want.slice(0, 5), 'aux_loss')).toBeLessThan(1e-3);

      // The checkpoint webgpu wrote at step 5, continued on wasm: step 6 as on cpu.
      const resumed = await run(['resume', gpuDir, '--backend', 'wasm']);
      expect(resumed.status, resumed.stderr).toBe(0);
      const all = await metrics(gpuDir);
      expect(all.map((m) => m.step)).toEqual([1, 2, 3, 4, 5, 6]);
      expect(maxRel(all.slice(5), want.slice(5), 'loss')).toBeLessThan(1e-3);
      expect(maxRel(all.slice(5), want.slice(5), 'grad_norm')).toBeLessThan(1e-3);
      const events = await readFile(join(gpuDir, 'events.jsonl'), 'utf8');
      expect(events).toMatch(/continuing on the wasm backend \(the run started on webgpu\)/);

      // The run's whole log: what the CLI printed and the run directory's events.
      const log = [gpu.stdout, gpu.stderr, events].join('\n');
      expect(log).not.toMatch(/Dawn validation|Invalid (ComputePipeline|CommandBuffer|BindGroup)|device was lost/);
    }, 600_000); // ~45 s on a quiet 2-core machine; SwiftShader shares the cores with the other test files
  }

  it('lathe train --backend webgpu on an adapter with shader-f16 (lavapipe): f16 weight storage said aloud, within 1e-2 of cpu; --dtype fp32 keeps fp32 within 1e-3', async () => {
    if (!existsSync(LAVAPIPE_ICD)) {
      console.warn(`f16 part skipped: ${LAVAPIPE_ICD} is missing (npm test's setup unpacks Mesa's lavapipe there)`);
      return;
    }
    const lavapipe = { VK_ICD_FILENAMES: LAVAPIPE_ICD, XDG_RUNTIME_DIR: process.env.XDG_RUNTIME_DIR ?? '/tmp' };
    const want = await metrics(join(dir, 'dense-cpu'));
    const half = join(dir, 'dense-f16');
    const h = await run(['train', join(dir, 'dense.json'), '--backend', 'webgpu', '--out', half], lavapipe);
    expect(h.status, h.stderr).toBe(0);
    const hEvents = await readFile(join(half, 'events.jsonl'), 'utf8');
    expect(hEvents).toMatch(/webgpu: f16 weight storage \(the adapter has shader-f16\); fp32 master weights/);
    const got = await metrics(half);
    expect(got.map((m) => m.step)).toEqual([1, 2, 3, 4, 5, 6]);
    const rel = maxRel(got, want, 'loss');
    console.log(`lathe train on lavapipe, f16 storage: loss within ${rel.toExponential(2)} of cpu over 6 steps`);
    expect(rel).toBeLessThan(1e-2);
    expect(rel).toBeGreaterThan(1e-7); // it did read f16 weights
    const full = join(dir, 'dense-fp32');
    const f = await run(
      ['train', join(dir, 'dense.json'), '--backend', 'webgpu', '--dtype', 'fp32', '--out', full],
      lavapipe,
    );
    expect(f.status, f.stderr).toBe(0);
    expect(await readFile(join(full, 'events.jsonl'), 'utf8')).not.toMatch(/f16 weight storage/);
    expect(JSON.parse(await readFile(join(full, 'recipe.lock.json'), 'utf8')).recipe.dtype).toBe('fp32');
    expect(maxRel(await metrics(full), want, 'loss')).toBeLessThan(1e-3);
    expect(maxRel(await metrics(full), want, 'grad_norm')).toBeLessThan(1e-3);
    const log = [h.stdout, h.stderr, hEvents, f.stdout, f.stderr].join('\n');
    expect(log).not.toMatch(/Dawn validation|Invalid (ComputePipeline|CommandBuffer|BindGroup)|device was lost/);
  }, 600_000);

  it('lathe train --backend webgpu says why when Dawn finds no adapter (the Vulkan driver named is missing); auto skips SwiftShader aloud', async () => {
    const r = await run(['train', join(dir, 'dense.json'), '--backend', 'webgpu', '--out', join(dir, 'none')], {
      LD_LIBRARY_PATH: '/usr/lib/chromium',
      VK_ICD_FILENAMES: join(dir, 'no-such-icd.json'),
    });
    expect(r.status).not.toBe(0);
    expect(r.stderr).toMatch(/backend webgpu is not available: Dawn found no GPU adapter/);
    expect(r.stderr).toMatch(
      /driver manifests named by VK_ICD_FILENAMES\/VK_DRIVER_FILES do not exist \(.*no-such-icd\.json\)/,
    );
    expect(r.stderr).toMatch(/libvulkan1/);
    // auto passes over SwiftShader (slower than wasm) and says so; --backend webgpu takes it (above).
    const auto = await run(
      ['train', join(dir, 'dense.json'), '--backend', 'auto', '--steps', '1', '--out', join(dir, 'auto')],
      SWIFTSHADER,
    );
    expect(auto.status, auto.stderr).toBe(0);
    expect(auto.stderr).toMatch(/backend auto: skipping webgpu: the only adapter is .*SwiftShader.*a CPU fallback/);
  });

  it('a worker without an adapter: its first log line says which part of Vulkan is missing (auto), or it refuses to start (webgpu)', async () => {
    const token = join(dir, 'token');
    await writeFile(token, 'x'.repeat(32) + '\n', { mode: 0o600 });
    const env = { LD_LIBRARY_PATH: '/usr/lib/chromium', VK_ICD_FILENAMES: join(dir, 'no-such-icd.json') };
    const child = spawn(
      process.execPath,
      [
        join(ROOT, 'bin', 'lathe.js'),
        'worker',
        '--listen',
        '127.0.0.1:0',
        '--token-file',
        token,
        '--state-dir',
        join(dir, 'w1'),
      ],
      { env: { ...process.env, ...env }, stdio: ['ignore', 'ignore', 'pipe'] },
    );
    let err = '';
    child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
    try {
      const deadline = Date.now() + 60_000;
      while (!/skipping webgpu/.test(err) && child.exitCode === null && Date.now() < deadline)
        await new Promise((r) => setTimeout(r, 200));
    } finally {
      child.kill('SIGKILL');
    }
    const first = err.split('\n').find((l) => /^\d{4}-\d\d-\d\dT/.test(l));
    expect(first).toMatch(
      /^\S+ backend auto: skipping webgpu: Dawn found no GPU adapter: .*VK_ICD_FILENAMES\/VK_DRIVER_FILES do not exist/,
    );
    const named = await run(
      [
        'worker',
        '--listen',
        '127.0.0.1:0',
        '--token-file',
        token,
        '--state-dir',
        join(dir, 'w2'),
        '--backend',
        'webgpu',
      ],
      env,
    );
    expect(named.status).not.toBe(0);
    expect(named.stderr).toMatch(/--backend webgpu: Dawn found no GPU adapter: .*no-such-icd\.json/);
  });
});
