import type { TokenBatch } from '../../data/batches.js';
import { arrayKernel, defineArrayKernel, runArrayKernel } from './array-kernels.js';
import { tf } from './tf.js';
import type { LanguageModel } from './model.js';

/** The scalar parts of a language-model loss. */
export interface LossParts {
  /** What is minimised: cross-entropy plus the MoE auxiliary terms. */
  total: tf.Scalar;
  /** Mean cross-entropy over counted tokens. */
  ce: tf.Scalar;
  /** MoE load-balancing loss, mean over layers (0 for dense). */
  balance: tf.Scalar;
  /** MoE router z-loss, mean over layers (0 for dense). */
  z: tf.Scalar;
  /** MoE per-expert routed fraction, mean over layers [E] (empty for dense). */
  utilization?: tf.Tensor1D;
  /** Tokens predicted correctly among counted ones, divided by their number. */
  accuracy?: tf.Scalar;
}

// The loss over the vocabulary is memory-bound: the [N, V] logits (16 MB a micro-batch for the
// bench model) are read and written by every kernel. On wasm and cpu the forward pass makes only
// the shifted exponentials e = exp(x - max) and their row sums s (max, sub and sum on tfjs, exp
// native), picks x[target] in one pass, and the backward pass is one pass
// dx = e dy / s - [j = target] dy: ~130 MB of traffic a micro-batch where log-softmax's
// autograd with a one-hot product moved ~300 MB. Targets outside [0, V) count 0, gradient 0.
defineArrayKernel({
  name: 'LatheNllPick',
  outputs: (shapes) => [[shapes[0]![0]!]],
  run: ([x, lse, t], [nll], shapes) => {
    const [n, v] = shapes[0] as [number, number];
    for (let r = 0; r < n; r++) {
      const j = t![r]!;
      nll![r] = j >= 0 && j < v ? lse![r]! - x![r * v + j]! : 0;
    }
  },
});
defineArrayKernel({
  name: 'LatheNllGrad',
  outputs: (shapes) => [shapes[0]!],
  run: ([e, sums, dy, t], [dx], shapes) => {
    const [n, v] = shapes[0] as [number, number];
    for (let r = 0; r < n; r++) {
      const j = t![r]!;
      const o = r * v;
      if (!(j >= 0 && j < v)) {
        dx!.fill(0, o, o + v);
        continue;
      }
      const k = dy![r]! / sums![r]!;
      for (let c = 0; c < v; c++) dx![o + c] = e![o + c]! * k;
      dx![o + j] = dx![o + j]! - dy![r]!;
    }
  },
});

/**
 * Per-token negative log-likelihood -log softmax(logits)[target] for logits [N, V] and targets
 * [N] (int32; outside [0, V) counts 0), with the closed-form gradient (softmax - onehot) dy.
 */
export function tokenNll(logits: tf.Tensor2D, targets: tf.Tensor1D): tf.Tensor1D {
  const [n, v] = logits.shape;
  if (!(logits.dtype === 'float32' && arrayKernel('LatheNllPick') && arrayKernel('LatheNllGrad'))) {
    const onehot = tf.cast(tf.oneHot(targets, v), 'float32');
    return tf.neg(tf.sum(tf.mul(tf.logSoftmax(logits, -1), onehot), -1)) as tf.Tensor1D;
  }
  const t = tf.cast(targets, 'float32');
  const op = tf.customGrad(((x: tf.Tensor2D, save: tf.GradSaveFunc) => {
    const max = tf.max(x, -1, true);
    const e = tf.exp(tf.sub(x, max));
    const sums = tf.sum(e, -1);
    const lse = tf.add(tf.reshape(max, [n]), tf.log(sums));
    save([e, sums, t]);
    return {
      value: runArrayKernel('LatheNllPick', [x, lse, t])[0]!,
      gradFunc: (dy: tf.Tensor | tf.Tensor[], saved: tf.Tensor[]) =>
        runArrayKernel('LatheNllGrad', [saved[0]!, saved[1]!, dy as tf.Tensor, saved[2]!]),
    };
  }) as unknown as Parameters<typeof tf.customGrad>[0]);
  return op(logits) as tf.Tensor1D;
}

/** Causal LM loss of a batch. Call inside a tidy or a gradient scope. */
export function lmLoss(model: LanguageModel, b: TokenBatch, opts: { accuracy?: boolean } = {}): LossParts {
  const ids = tf.tensor2d(b.inputs, [b.batch, b.seq], 'int32');
  const { logits, router } = model.forward(ids);
  const targets = tf.tensor1d(b.targets, 'int32');
  const nll = tokenNll(logits as tf.Tensor2D, targets);
  let ce: tf.Scalar;
  let weights: tf.Tensor1D | undefined;
  if (b.weights) {
    weights = tf.tensor1d(b.weights);
    ce = tf.div(tf.sum(tf.mul(nll, weights)), tf.maximum(tf.sum(weights), 1)) as tf.Scalar;
  } else ce = tf.mean(nll) as tf.Scalar;
  let balance: tf.Scalar = tf.scalar(0);
  let z: tf.Scalar = tf.scalar(0);
  let utilization: tf.Tensor1D | undefined;
  let total = ce;
  if (router.length) {
    balance = tf.div(tf.addN(router.map((r) => r.balance)), router.length) as tf.Scalar;
    z = tf.div(tf.addN(router.map((r) => r.z)), router.length) as tf.Scalar;
    utilization = tf.div(tf.addN(router.map((r) => r.utilization)), router.length) as tf.Tensor1D;
    total = tf.add(ce, tf.add(tf.mul(balance, model.spec.auxLossCoef), tf.mul(z, model.spec.zLossCoef))) as tf.Scalar;
  }
  let accuracy: tf.Scalar | undefined;
  if (opts.accuracy) {
    const hit = tf.cast(tf.equal(tf.argMax(logits, -1), targets), 'float32');
    accuracy = (
      weights ? tf.div(tf.sum(tf.mul(hit, weights)), tf.maximum(tf.sum(weights), 1)) : tf.mean(hit)
    ) as tf.Scalar;
  }
  return { total, ce, balance, z, utilization, accuracy };
}
