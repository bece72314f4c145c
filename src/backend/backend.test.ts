import { describe, expect, it } from 'vitest';
import { backendFromEnv, useBackend } from './select.js';
import { tf } from './tf.js';

describe('backends', () => {
  it('wasm computes the gather gradient (UnsortedSegmentSum, tfjs#8082) exactly as cpu does', async () => {
    const grad = async (backend: 'cpu' | 'wasm') => {
      await useBackend(backend);
      const w = tf.variable(tf.tensor2d(Array.from({ length: 24 }, (_, i) => i / 7), [6, 4]));
      const ids = tf.tensor1d([1, 3, 1, 5, 0, 1], 'int32');
      const up = tf.tensor2d(Array.from({ length: 24 }, (_, i) => (i % 5) - 2), [6, 4]);
      const { grads } = tf.variableGrads(() => tf.sum(tf.mul(tf.gather(w, ids), up)), [w]);
      const out = Array.from(await grads[w.name]!.data());
      tf.dispose([w, ids, up, ...Object.values(grads)]);
      return out;
    };
    const cpu = await grad('cpu');
    const wasm = await grad('wasm');
    expect(wasm).toEqual(cpu);
    // Row 1 was gathered at positions 0, 2 and 5: its gradient sums those upstream rows.
    expect(cpu.slice(4, 8)).toEqual([-2 + 1 - 2, -1 + 2 - 1, 0 - 2 + 0, 1 - 1 + 1]);
  });

  it('refuses a named backend it cannot start instead of falling back', async () => {
    await expect(useBackend('webgpu')).rejects.toThrow(/backend webgpu is not available/);
  });

  it('auto says which backends it skipped and picks the best available', async () => {
    const notices: string[] = [];
    const b = await useBackend('auto', (m) => notices.push(m));
    expect(b).toBe('wasm');
    expect(notices.join('\n')).toMatch(/skipping webgpu/);
  });

  it('reads LATHE_BACKEND and rejects bad values', () => {
    process.env.LATHE_BACKEND = 'wasm';
    expect(backendFromEnv()).toBe('wasm');
    process.env.LATHE_BACKEND = 'tpu';
    expect(() => backendFromEnv()).toThrow(/LATHE_BACKEND: "tpu" is not one of/);
    delete process.env.LATHE_BACKEND;
  });
});
