import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { vulkanDiagnosis } from './webgpu.js';

// Lathe's WGSL kernels on SwiftShader (Dawn's Vulkan adapter on the CPU, from Debian's chromium:
// DESIGN, known ground), in a child process that has the Vulkan environment: values and gradients
// against the cpu backend, one training step's dispatches, greedy generation on both backends.

const ICD = '/usr/lib/chromium/vk_swiftshader_icd.json';
const why = existsSync(ICD)
  ? undefined
  : `${ICD} is missing: npm test's setup installs Debian's chromium, which ships SwiftShader`;
if (why) console.warn(`webgpu kernel tests skipped: ${why}`);

interface ChildReport {
  skipped?: string;
  adapter: string;
  f16: boolean;
  errors: Record<string, number>;
  matmul: Record<string, number>;
  maskMismatches: number;
  addN: number;
  lathe: { dispatches: number; loss: number; gradNorm: number; waits: { awaited: number; queued: number } };
  plain: { dispatches: number; loss: number; gradNorm: number };
  dpo: { given: number; engine: number };
  generated: Record<'dense' | 'moe', { cpu: number[]; webgpu: number[] }>;
  validation: string[];
}

describe.skipIf(!!why)('webgpu kernels on SwiftShader', () => {
  it('match the cpu backend, cut one step to a fifth of the dispatches, and generate the same greedy tokens', async () => {
    const child = fileURLToPath(new URL('./test/webgpu-child.ts', import.meta.url));
    const { stdout } = await promisify(execFile)(process.execPath, ['--import', 'tsx', child], {
      env: { ...process.env, LD_LIBRARY_PATH: '/usr/lib/chromium', VK_ICD_FILENAMES: ICD },
      timeout: 540_000,
    });
    const r = JSON.parse(stdout.trim().split('\n').pop()!) as ChildReport;
    expect(r.skipped).toBeUndefined();
    expect(r.adapter).toMatch(/swiftshader/i);
    // Values and gradients of each kernel, relative to the cpu backend's composition.
    expect(Object.keys(r.errors).sort()).toEqual([
      'attention@0',
      'attention@5',
      'embed',
      'moe',
      'moe-skewed',
      'rmsNorm',
      'swiglu',
      'tokenNll',
    ]);
    for (const [name, err] of Object.entries(r.errors)) expect(err, name).toBeLessThan(1e-3);
    expect(r.maskMismatches).toBe(0);
    // The tiled product: NN, NT (a Linear weight) and TN (a weight's gradient), whole or bounded by a count.
    expect(Object.keys(r.matmul).length).toBe(9);
    for (const [form, err] of Object.entries(r.matmul)) expect(err, form).toBeLessThan(1e-5);
    expect(r.addN).toBe(231); // 1 + ... + 21: more inputs than one dispatch may bind
    // One step of the small dense model: Lathe's kernels against tfjs's own compositions.
    console.log(`dispatches per training step: ${r.lathe.dispatches} (tfjs compositions: ${r.plain.dispatches})`);
    expect(r.lathe.dispatches * 5).toBeLessThanOrEqual(r.plain.dispatches);
    // Host waits inside a step: reading the loss before optimStep waits once; the loop's stepOn never.
    console.log(`reads back before the step's last dispatch: ${JSON.stringify(r.lathe.waits)}`);
    expect(r.lathe.waits.awaited).toBeGreaterThanOrEqual(1);
    expect(r.lathe.waits.queued).toBe(0);
    // DPO: reading the reference's log-probs first waits inside the step; the engine's own reference never does.
    console.log(
      `DPO step reads back inside the step: reference given ${r.dpo.given}, computed by the engine ${r.dpo.engine}`,
    );
    expect(r.dpo.given).toBeGreaterThanOrEqual(1);
    expect(r.dpo.engine).toBe(0);
    expect(Math.abs(r.lathe.loss - r.plain.loss) / r.plain.loss).toBeLessThan(1e-5);
    expect(Math.abs(r.lathe.gradNorm - r.plain.gradNorm) / r.plain.gradNorm).toBeLessThan(1e-5);
    for (const arch of ['dense', 'moe'] as const) {
      const g = r.generated[arch];
      expect(g.webgpu, arch).toEqual(g.cpu);
      expect(new Set(g.cpu).size, arch).toBeGreaterThan(2);
    }
    expect(r.validation).toEqual([]);
  }, 600_000); // ~50 s on a quiet 2-core machine
});

describe('vulkanDiagnosis', () => {
  it('names the missing part: the loader, or the driver manifests named by VK_ICD_FILENAMES', () => {
    expect(vulkanDiagnosis({ LD_LIBRARY_PATH: '/nonexistent' })).toMatch(
      existsSync('/usr/lib/x86_64-linux-gnu/libvulkan.so.1')
        ? /Vulkan loader is there|Vulkan loader \(\S+\) and driver manifests \(.+\) are there/
        : /no Vulkan loader/,
    );
    if (existsSync('/usr/lib/chromium/libvulkan.so.1'))
      expect(vulkanDiagnosis({ LD_LIBRARY_PATH: '/usr/lib/chromium', VK_ICD_FILENAMES: '/x/icd.json' })).toMatch(
        /manifests named by VK_ICD_FILENAMES\/VK_DRIVER_FILES do not exist \(\/x\/icd\.json\)/,
      );
  });
});
