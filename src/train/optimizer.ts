import { tf } from '../backend/tf.js';

/** AdamW hyper-parameters. */
export interface AdamWConfig {
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
}

/**
 * AdamW with decoupled weight decay (Loshchilov & Hutter): the decay is applied to the weights
 * directly, scaled by lr, and only to parameters marked for decay (matrices, not norm gains).
 * Moments are variables named after their parameter so checkpoints can store them by name.
 */
export class AdamW {
  readonly m = new Map<string, tf.Variable>();
  readonly v = new Map<string, tf.Variable>();
  /** Completed optimizer steps (bias correction uses it). */
  t = 0;

  constructor(
    private readonly params: Map<string, tf.Variable>,
    private readonly decay: Set<string>,
    private readonly cfg: AdamWConfig,
  ) {
    for (const [name, p] of params) {
      this.m.set(name, tf.tidy(() => tf.variable(tf.zerosLike(p), false)));
      this.v.set(name, tf.tidy(() => tf.variable(tf.zerosLike(p), false)));
    }
  }

  /** Applies one update with the given gradients (keyed by parameter name) and learning rate. */
  step(grads: Map<string, tf.Tensor>, lr: number): void {
    this.t += 1;
    const { beta1, beta2, eps, weightDecay } = this.cfg;
    const bc1 = 1 - Math.pow(beta1, this.t);
    const bc2 = 1 - Math.pow(beta2, this.t);
    // One tidy per parameter: a single tidy around the loop keeps every parameter's temporaries
    // alive to the end, which for large (MoE) models exhausts the wasm heap.
    for (const [name, p] of this.params) {
      tf.tidy(() => {
        const g = grads.get(name);
        if (!g) return;
        const m = this.m.get(name)!;
        const v = this.v.get(name)!;
        const m1 = tf.add(tf.mul(m, beta1), tf.mul(g, 1 - beta1));
        const v1 = tf.add(tf.mul(v, beta2), tf.mul(tf.square(g), 1 - beta2));
        m.assign(m1);
        v.assign(v1);
        const update = tf.div(tf.div(m1, bc1), tf.add(tf.sqrt(tf.div(v1, bc2)), eps));
        let next = tf.sub(p, tf.mul(update, lr));
        if (weightDecay > 0 && this.decay.has(name)) next = tf.sub(next, tf.mul(p, lr * weightDecay));
        p.assign(next);
      });
    }
  }

  /** Frees the moment buffers. */
  dispose(): void {
    for (const x of [...this.m.values(), ...this.v.values()]) x.dispose();
  }
}
