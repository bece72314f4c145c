import { tf } from '../backend/tf.js';
import type { LanguageModel } from '../model/model.js';

/** A batch of token windows: inputs and next-token targets [B, T]; weights mask the loss (1 = counted). */
export interface TokenBatch {
  inputs: Int32Array;
  targets: Int32Array;
  weights?: Float32Array;
  batch: number;
  seq: number;
}

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

/**
 * Per-token negative log-likelihood -log softmax(logits)[target] for logits [N, V] and one-hot
 * targets [N, V], with the closed-form gradient (softmax - onehot) dy: three passes over the
 * [N, V] logits where tfjs's autograd of log-softmax, product and sum runs about seven.
 */
export function tokenNll(logits: tf.Tensor2D, onehot: tf.Tensor2D): tf.Tensor1D {
  const op = tf.customGrad(((x: tf.Tensor2D, save: tf.GradSaveFunc) => {
    const logp = tf.logSoftmax(x, -1);
    save([logp, onehot]);
    return {
      value: tf.neg(tf.sum(tf.mul(logp, onehot), -1)),
      gradFunc: (dy: tf.Tensor | tf.Tensor[], saved: tf.Tensor[]) => [tf.mul(tf.sub(tf.exp(saved[0]!), saved[1]!), tf.expandDims(dy as tf.Tensor1D, -1))],
    };
  }) as unknown as Parameters<typeof tf.customGrad>[0]);
  return op(logits) as tf.Tensor1D;
}

/** Causal LM loss of a batch. Call inside a tidy or a gradient scope. */
export function lmLoss(model: LanguageModel, b: TokenBatch, opts: { accuracy?: boolean } = {}): LossParts {
  const ids = tf.tensor2d(b.inputs, [b.batch, b.seq], 'int32');
  const { logits, router } = model.forward(ids);
  const v = model.spec.vocabSize;
  // Cast rather than oneHot's dtype argument: tfjs-wasm's OneHot writes int32 bits whatever the dtype.
  const nll = tokenNll(logits as tf.Tensor2D, tf.cast(tf.oneHot(tf.tensor1d(b.targets, 'int32'), v), 'float32') as tf.Tensor2D);
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
    const hit = tf.cast(tf.equal(tf.argMax(logits, -1), tf.tensor1d(b.targets, 'int32')), 'float32');
    accuracy = (weights ? tf.div(tf.sum(tf.mul(hit, weights)), tf.maximum(tf.sum(weights), 1)) : tf.mean(hit)) as tf.Scalar;
  }
  return { total, ce, balance, z, utilization, accuracy };
}
