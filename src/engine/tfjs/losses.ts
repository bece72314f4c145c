import type { TokenBatch } from '../../data/batches.js';
import type { LossSpec, PolicyGradientLoss } from '../engine.js';
import { arrayKernel, defineArrayKernel, runArrayKernel } from './array-kernels.js';
import { tf } from './tf.js';
import type { LanguageModel } from './model.js';
import { gpuKernel, runGpuKernel } from './webgpu-kernels.js';
import { gpuKernels } from './kernels.js';

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
  /** MoE on webgpu: each layer's routed fraction per expert [layers, E] (0: no token chose it). */
  expertUse?: tf.Tensor2D;
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
  if (logits.dtype === 'float32' && gpuKernel('LatheNll') && gpuKernel('LatheNllGrad')) {
    // webgpu: one dispatch a way over the [N, V] logits (the row's max, exp-sum and pick fused).
    const t = tf.cast(targets, 'int32');
    const gpu = tf.customGrad(((x: tf.Tensor2D, save: tf.GradSaveFunc) => {
      const [nll, lse] = runGpuKernel('LatheNll', [x, t]);
      save([x, lse!, t]);
      return {
        value: nll!,
        gradFunc: (dy: tf.Tensor | tf.Tensor[], saved: tf.Tensor[]) =>
          runGpuKernel('LatheNllGrad', [saved[0]!, saved[1]!, dy as tf.Tensor, saved[2]!]),
      };
    }) as unknown as Parameters<typeof tf.customGrad>[0]);
    return gpu(logits) as tf.Tensor1D;
  }
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
  let expertUse: tf.Tensor2D | undefined;
  let total = ce;
  if (router.length) {
    if (gpuKernels()) expertUse = tf.stack(router.map((r) => r.utilization)) as tf.Tensor2D;
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
  return { total, ce, balance, z, utilization, accuracy, expertUse };
}

/** log p(target) at every position [B, T]. Call inside a tidy or a gradient scope. */
export function tokenLogProbs(model: LanguageModel, b: TokenBatch): tf.Tensor2D {
  const ids = tf.tensor2d(b.inputs, [b.batch, b.seq], 'int32');
  const { logits } = model.forward(ids);
  const logp = tf.logSoftmax(logits, -1);
  const onehot = tf.oneHot(tf.tensor1d(b.targets, 'int32'), model.spec.vocabSize);
  return tf.reshape(tf.sum(tf.mul(logp, onehot), -1), [b.batch, b.seq]) as tf.Tensor2D;
}

/** Weighted (completion-masked) log-probability per sequence [B]. Call inside a tidy or a gradient scope. */
export function sequenceLogProbs(model: LanguageModel, b: TokenBatch): tf.Tensor1D {
  const w = b.weights ?? new Float32Array(b.batch * b.seq).fill(1);
  return tf.sum(tf.mul(tokenLogProbs(model, b), tf.tensor2d(w, [b.batch, b.seq])), 1) as tf.Tensor1D;
}

/**
 * DPO's sigmoid loss from policy and reference sequence log-probs [2n] (chosen, then rejected), with
 * its reported parts. −log σ(x) is softplus(−x) (tf.logSigmoid's custom gradient breaks inside variableGrads).
 */
export function dpoLoss(policy: tf.Tensor1D, ref: tf.Tensor1D, n: number, beta: number, smoothing: number): NamedLoss {
  const pc = tf.slice(policy, 0, n);
  const pr = tf.slice(policy, n, n);
  const rc = tf.slice(ref, 0, n);
  const rr = tf.slice(ref, n, n);
  const chosen = tf.sub(pc, rc);
  const rejected = tf.sub(pr, rr);
  const logits = tf.mul(tf.sub(chosen, rejected), beta);
  let losses = tf.softplus(tf.neg(logits));
  if (smoothing > 0) losses = tf.add(tf.mul(losses, 1 - smoothing), tf.mul(tf.softplus(logits), smoothing));
  const loss = tf.mean(losses) as tf.Scalar;
  return {
    total: loss,
    report: {
      loss,
      'rewards/chosen': tf.mean(tf.mul(chosen, beta)),
      'rewards/rejected': tf.mean(tf.mul(rejected, beta)),
      'rewards/margins': tf.mean(logits),
      'rewards/accuracies': tf.mean(tf.cast(tf.greater(logits, 0), 'float32')),
      'logps/chosen': tf.mean(pc),
      'logps/rejected': tf.mean(pr),
    },
  };
}

/** GRPO's clipped objective with the k3 KL estimator (see PolicyGradientLoss), inside a gradient scope. */
export function policyGradientLoss(model: LanguageModel, b: TokenBatch, o: PolicyGradientLoss): NamedLoss {
  const logp = tokenLogProbs(model, b);
  const valid = tf.tensor2d(o.valid, [b.batch, 1]);
  const mask = tf.mul(tf.tensor2d(b.weights!, [b.batch, b.seq]), valid);
  const adv = tf.tensor2d(o.advantages, [b.batch, 1]);
  const ratio = tf.exp(tf.sub(logp, tf.tensor2d(o.old, [b.batch, b.seq])));
  const s1 = tf.mul(ratio, adv);
  const s2 = tf.mul(tf.clipByValue(ratio, 1 - o.clipEpsilon, 1 + o.clipEpsilon), adv);
  let perToken = tf.neg(tf.minimum(s1, s2));
  let kl: tf.Tensor = tf.zerosLike(logp);
  if (o.reference) {
    const d = tf.sub(tf.tensor2d(o.reference, [b.batch, b.seq]), logp);
    kl = tf.sub(tf.sub(tf.exp(d), d), 1);
    if (o.beta > 0) perToken = tf.add(perToken, tf.mul(kl, o.beta));
  }
  const tokens = tf.sum(mask, 1);
  const perSeq = tf.div(tf.sum(tf.mul(perToken, mask), 1), tf.maximum(tokens, 1));
  const nValid = tf.maximum(tf.sum(valid), 1);
  const loss = tf.div(tf.sum(tf.mul(perSeq, tf.reshape(valid, [-1]))), nValid) as tf.Scalar;
  const nTok = tf.maximum(tf.sum(mask), 1);
  const klMean = tf.div(tf.sum(tf.mul(kl, mask)), nTok);
  const clipped = tf.cast(tf.logicalAnd(tf.greater(mask, 0), tf.notEqual(s1, tf.minimum(s1, s2))), 'float32');
  const clipRatio = tf.div(tf.sum(clipped), nTok);
  return { total: loss, report: { loss, kl: klMean, clip_ratio: clipRatio } };
}

/** A loss as the engine runs it: what is minimised, and the tensors it reports by metric name. */
export interface NamedLoss {
  total: tf.Scalar;
  report: Record<string, tf.Tensor>;
  /** MoE on webgpu: which experts the batch routed to, per layer [layers, E] (see LossParts). */
  expertUse?: tf.Tensor2D;
}

/** Builds a named loss on a model (inside a tidy or a gradient scope); `reference`: DPO's 'engine' reference, computed. */
export function namedLoss(model: LanguageModel, b: TokenBatch, spec: LossSpec, reference?: tf.Tensor1D): NamedLoss {
  switch (spec.name) {
    case 'cross_entropy': {
      const l = lmLoss(model, b, { accuracy: spec.accuracy });
      const report: Record<string, tf.Tensor> = { loss: l.ce };
      if (model.spec.arch === 'moe')
        Object.assign(report, { aux_loss: l.balance, z_loss: l.z, expert_util: l.utilization! });
      if (l.accuracy) report.accuracy = l.accuracy;
      return { total: l.total, report, expertUse: l.expertUse };
    }
    case 'dpo':
      return dpoLoss(
        sequenceLogProbs(model, b),
        spec.reference === 'engine' ? reference! : tf.tensor1d(spec.reference),
        spec.pairs,
        spec.beta,
        spec.labelSmoothing,
      );
    case 'policy_gradient':
      return policyGradientLoss(model, b, spec);
  }
}
