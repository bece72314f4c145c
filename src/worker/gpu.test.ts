import { describe, expect, it } from 'vitest';
import { installWebGpu } from '../engine/tfjs/webgpu.js';
import { chooseWorkerBackend } from './gpu.js';

// Dawn (the webgpu package) loads everywhere; an adapter exists only where a GPU is visible.
describe('worker backend choice', () => {
  it('auto says why it skips webgpu when there is no adapter and moves on; a named webgpu never falls back', async () => {
    const probe = await installWebGpu();
    const lines: string[] = [];
    const chosen = await chooseWorkerBackend('auto', (l) => lines.push(l));
    if (probe.ok) {
      console.log(`webgpu adapter: ${probe.adapter}, shader-f16 ${probe.f16}`);
      expect(chosen.backend).toBe('webgpu');
      return;
    }
    console.log(`skipping the webgpu checks: ${probe.reason}`);
    expect(probe.reason).toMatch(/Dawn found no GPU adapter/);
    expect(chosen.backend).toBe('wasm');
    expect(chosen.backends).toEqual({ webgpu: probe.reason, wasm: 'ok', cpu: 'ok' });
    expect(lines).toEqual([`backend auto: skipping webgpu: ${probe.reason}`]);
    await expect(chooseWorkerBackend('webgpu', () => {})).rejects.toThrow(
      /^--backend webgpu: Dawn found no GPU adapter: .*Start the worker with --backend auto/,
    );
    const cpu = await chooseWorkerBackend('cpu', () => {});
    expect(cpu.backend).toBe('cpu');
    expect(cpu.backends.webgpu).toMatch(/not enabled/);
  });
});
