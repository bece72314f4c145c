#!/usr/bin/env node
// GFLOP/s of an n x n fp32 matmul on one tfjs backend (median and best of --repeats after one warm-up).
//   node bench/matmul.mjs --backend wasm [--n 1024] [--repeats 5]
import { parseArgs } from 'node:util';

const { values: a } = parseArgs({
  options: {
    backend: { type: 'string', default: 'wasm' },
    n: { type: 'string', default: '1024' },
    repeats: { type: 'string', default: '5' },
  },
});
const dist = new URL('../dist/src/', import.meta.url);
const { tf } = await import(new URL('engine/tfjs/tf.js', dist));
const { useBackend } = await import(new URL('engine/tfjs/backend.js', dist));
const { nativeStatus } = await import(new URL('engine/tfjs/native.js', dist));
await useBackend(a.backend, () => {});
const { getThreadsCount } = await import('@tensorflow/tfjs-backend-wasm');
const threads = a.backend === 'wasm' ? getThreadsCount() : 1;
const n = Number(a.n);
const init = (seed) => {
  const d = new Float32Array(n * n);
  let x = seed;
  for (let i = 0; i < d.length; i++) d[i] = ((x = (Math.imul(x, 1103515245) + 12345) >>> 0) / 2 ** 32) * 2 - 1;
  return tf.tensor2d(d, [n, n]);
};
const x = init(1);
const y = init(2);
const once = async () => {
  const t0 = performance.now();
  const z = tf.matMul(x, y);
  await z.data();
  const dt = (performance.now() - t0) / 1000;
  z.dispose();
  return dt;
};
await once();
const times = [];
for (let i = 0; i < Number(a.repeats); i++) times.push(await once());
times.sort((p, q) => p - q);
const median = times[(times.length - 1) >> 1] / 2 + times[times.length >> 1] / 2;
console.log(
  JSON.stringify({
    backend: a.backend,
    native: nativeStatus(),
    threads,
    n,
    seconds: times,
    gflops: (2 * n ** 3) / median / 1e9,
    best: (2 * n ** 3) / times[0] / 1e9,
  }),
);
