// Child process for backend.test.ts: starts wasm (threads from LATHE_WASM_THREADS), runs a matmul
// large enough to be split across XNNPACK's threads and a small training gradient, prints the
// thread count and the results' bits as JSON, and then must exit on its own (pthread workers
// left referenced would keep Node alive).
import { createHash } from 'node:crypto';
import { getThreadsCount } from '@tensorflow/tfjs-backend-wasm';
import { useBackend } from '../backend.js';
import { tf } from '../tf.js';
import { LanguageModel } from '../model.js';
import { tinySpec } from '../../test/fixtures.js';

await useBackend('wasm', () => {});
const a = tf.randomNormal([300, 200], 0, 1, 'float32', 1);
const b = tf.randomNormal([200, 500], 0, 1, 'float32', 2);
const productBits = await tf.matMul(a, b).data();
// The bits of the whole product, hashed, and a few values to read.
const product = {
  sha256: createHash('sha256').update(new Uint8Array(productBits.buffer)).digest('hex'),
  first: Array.from(productBits.slice(0, 4)),
};
const spec = tinySpec({ kvHeads: 4 });
const m = LanguageModel.init(spec, 7);
const ids = tf.tensor2d(
  Array.from({ length: 32 }, (_, i) => (i * 7) % 64),
  [2, 16],
  'int32',
);
const { value, grads } = tf.variableGrads(
  () => tf.mean(tf.square(m.forward(ids).logits)) as tf.Scalar,
  [...m.params.values()],
);
const gradSums = await Promise.all(Object.values(grads).map(async (g) => (await tf.sum(tf.abs(g)).data())[0]));
console.log(JSON.stringify({ threads: getThreadsCount(), product, loss: (await value.data())[0], gradSums }));
