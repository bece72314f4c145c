import { execFile } from 'node:child_process';
import { cpus } from 'node:os';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { backendFromEnv, useBackend } from './backend.js';
import { tf } from './tf.js';

describe('backends', () => {
  it('wasm computes the gather gradient (UnsortedSegmentSum, tfjs#8082) exactly as cpu does', async () => {
    const grad = async (backend: 'cpu' | 'wasm') => {
      await useBackend(backend);
      const w = tf.variable(
        tf.tensor2d(
          Array.from({ length: 24 }, (_, i) => i / 7),
          [6, 4],
        ),
      );
      const ids = tf.tensor1d([1, 3, 1, 5, 0, 1], 'int32');
      const up = tf.tensor2d(
        Array.from({ length: 24 }, (_, i) => (i % 5) - 2),
        [6, 4],
      );
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

  it("wasm gathers (Lathe's GatherV2) exactly as cpu does, on any axis, and refuses out-of-range indices", async () => {
    const run = async (backend: 'cpu' | 'wasm') => {
      await useBackend(backend);
      const x = tf.tensor3d(
        Array.from({ length: 4 * 5 * 6 }, (_, i) => i * 0.5 - 7),
        [4, 5, 6],
      );
      const outs = [
        tf.gather(x, tf.tensor1d([3, 0, 3, 1], 'int32'), 0),
        tf.gather(
          x,
          tf.tensor2d(
            [
              [4, 0],
              [2, 2],
            ],
            [2, 2],
            'int32',
          ),
          1,
        ),
        tf.gather(x, tf.tensor1d([5, 1], 'int32'), 2),
        tf.gather(x, tf.tensor1d([], 'int32'), 0),
      ];
      const got = outs.map((t) => ({ shape: t.shape, v: Array.from(t.dataSync()) }));
      expect(() => tf.gather(x, tf.tensor1d([0, 4], 'int32'), 0)).toThrow(/index value 4 is not in \[0, 3\]/);
      tf.dispose([x, ...outs]);
      return got;
    };
    const cpu = await run('cpu');
    const wasm = await run('wasm');
    expect(wasm).toEqual(cpu);
    expect(cpu[0]!.shape).toEqual([4, 5, 6]);
    expect(cpu[1]!.shape).toEqual([4, 2, 2, 6]);
    expect(cpu[2]!.shape).toEqual([4, 5, 2]);
    expect(cpu[0]!.v.slice(0, 3)).toEqual([3 * 30 * 0.5 - 7, 3 * 30 * 0.5 - 6.5, 3 * 30 * 0.5 - 6]);
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

  it('wasm Slice, Unpack, SplitV, Transpose, Identity and Cast give exactly what cpu gives', async () => {
    // Lathe replaces these wasm kernels (wasm-kernels.ts); they only move data, so equality is exact.
    const run = async (backend: 'cpu' | 'wasm') => {
      await useBackend(backend);
      return tf.tidy(() => {
        const x = tf.randomNormal([3, 4, 5, 6], 0, 1, 'float32', 21);
        const outs: tf.Tensor[] = [
          tf.slice(x, [1, 0, 2, 0], [2, 4, 3, 6]),
          tf.slice(x, [0, 1, 0, 2], [3, 2, 5, 3]),
          tf.slice(x, [2, 3, 4, 5], [1, 1, 1, 1]),
          tf.slice(tf.reshape(x, [360]), [7], [100]),
          ...tf.unstack(x, 0),
          ...tf.unstack(x, 2),
          ...tf.split(x, [2, 1, 3], 3),
          ...tf.split(x, 2, 1),
          tf.transpose(x, [0, 2, 1, 3]),
          tf.transpose(x, [0, 2, 3, 1]),
          tf.transpose(x, [1, 0, 2, 3]),
          tf.transpose(x, [3, 2, 1, 0]),
          tf.transpose(tf.reshape(x, [72, 5])),
          tf.transpose(tf.reshape(x, [12, 30]), [1, 0]),
          tf.clone(x),
          tf.cast(x, 'float32'),
          tf.cast(tf.mul(x, 10), 'int32'),
          tf.slice(tf.cast(tf.mul(x, 10), 'int32'), [0, 1, 1, 1], [2, 2, 2, 2]),
        ];
        return outs.map((t) => ({ shape: t.shape, dtype: t.dtype, values: Array.from(t.dataSync()) }));
      });
    };
    const cpu = await run('cpu');
    const wasm = await run('wasm');
    expect(wasm).toEqual(cpu);
  });

  it("cpu UnsortedSegmentSum gives the same bits as tfjs's masked-sum formulation", async () => {
    await useBackend('cpu');
    tf.tidy(() => {
      const x = tf.randomNormal([200, 7], 0, 3, 'float32', 5);
      const idsData = Array.from({ length: 200 }, (_, i) => (i * 37) % 11);
      idsData[3] = -1; // out of range: dropped, as in TensorFlow
      const ids = tf.tensor1d(idsData, 'int32');
      const fast = tf.unsortedSegmentSum(x, ids, 11);
      // The stock kernel: for each segment, sum(mask * x) over rows.
      const slow = tf.stack(
        Array.from({ length: 11 }, (_, s) =>
          tf.sum(tf.mul(tf.cast(tf.equal(ids, s), 'float32').reshape([200, 1]), x), 0),
        ),
      );
      expect(Array.from(fast.dataSync())).toEqual(Array.from(slow.dataSync()));
    });
  });

  it('threaded wasm starts in Node, computes the same bits as one thread, and lets the process exit', async () => {
    const child = fileURLToPath(new URL('./test/threads-child.ts', import.meta.url));
    const run = async (threads: number) => {
      const { stdout } = await promisify(execFile)(process.execPath, ['--import', 'tsx', child], {
        env: { ...process.env, LATHE_WASM_THREADS: String(threads) },
        timeout: 60_000, // a child kept alive by its pthread workers fails here
      });
      return JSON.parse(stdout.trim().split('\n').pop()!) as {
        threads: number;
        product: { sha256: string; first: number[] };
        loss: number;
        gradSums: number[];
      };
    };
    const one = await run(1);
    const two = await run(2);
    expect(one.threads).toBe(1);
    expect(two.threads).toBe(2);
    expect(two.product).toEqual(one.product);
    expect(two.loss).toBe(one.loss);
    expect(two.gradSums).toEqual(one.gradSums);
    expect(one.gradSums.length).toBeGreaterThan(10);
  });

  it('wasm is single-threaded unless LATHE_WASM_THREADS asks for threads (a number, or cores)', async () => {
    const { wasmThreadsFromEnv } = await import('./wasm-threads.js');
    const saved = process.env.LATHE_WASM_THREADS;
    delete process.env.LATHE_WASM_THREADS;
    expect(wasmThreadsFromEnv()).toBe(1);
    process.env.LATHE_WASM_THREADS = 'cores';
    expect(wasmThreadsFromEnv()).toBe(cpus().length);
    process.env.LATHE_WASM_THREADS = '3';
    expect(wasmThreadsFromEnv()).toBe(3);
    process.env.LATHE_WASM_THREADS = 'many';
    expect(() => wasmThreadsFromEnv()).toThrow(/LATHE_WASM_THREADS/);
    if (saved === undefined) delete process.env.LATHE_WASM_THREADS;
    else process.env.LATHE_WASM_THREADS = saved;
  });
});
