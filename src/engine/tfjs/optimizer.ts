import { tf } from './tf.js';
import { arrayKernel, defineArrayKernel, runArrayKernel } from './array-kernels.js';
import { fusedKernels } from './kernels.js';
import { gpuAdamW } from './webgpu-kernels.js';
import { halfCopyOf } from './webgpu-half.js';
import { LatheError } from '../../errors.js';
import type { Weights } from '../../model/weights.js';

// The update of one parameter as a single pass over p, g, m and v (float64 arithmetic, float32
// storage) on the wasm and cpu backends, where tfjs would run 14 elementwise kernels each reading
// and writing the whole tensor: for the 62M-parameter MoE bench model, ~0.85 s of a 7.5 s step.
// Other backends (webgpu), and LATHE_FUSED_KERNELS=0, keep the tensor ops below.
const ADAMW = 'LatheAdamW';
interface AdamWAttrs {
  beta1: number;
  beta2: number;
  bc1: number;
  bc2: number;
  eps: number;
  lr: number;
  decay: number;
}

function adamwPass(
  p: Float32Array,
  g: Float32Array,
  m: Float32Array,
  v: Float32Array,
  a: AdamWAttrs,
  p1: Float32Array,
  m1: Float32Array,
  v1: Float32Array,
): void {
  const { beta1, beta2, bc1, bc2, eps, lr, decay } = a;
  const b1c = 1 - beta1;
  const b2c = 1 - beta2;
  for (let i = 0; i < p.length; i++) {
    const gi = g[i]!;
    const mi = beta1 * m[i]! + b1c * gi;
    const vi = beta2 * v[i]! + b2c * gi * gi;
    m1[i] = mi;
    v1[i] = vi;
    const pi = p[i]!;
    p1[i] = pi - lr * (mi / bc1 / (Math.sqrt(vi / bc2) + eps)) - lr * decay * pi;
  }
}

defineArrayKernel({
  name: ADAMW,
  outputs: (shapes) => [shapes[0]!, shapes[0]!, shapes[0]!],
  run: ([p, g, m, v], [p1, m1, v1], _shapes, attrs) =>
    adamwPass(p!, g!, m!, v!, attrs as unknown as AdamWAttrs, p1!, m1!, v1!),
});

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
      this.m.set(
        name,
        tf.tidy(() => tf.variable(tf.zerosLike(p), false)),
      );
      this.v.set(
        name,
        tf.tidy(() => tf.variable(tf.zerosLike(p), false)),
      );
    }
  }

  /** Applies one update with the given gradients (keyed by parameter name) and learning rate. */
  step(grads: Map<string, tf.Tensor>, lr: number): void {
    this.t += 1;
    const { beta1, beta2, eps, weightDecay } = this.cfg;
    const bc1 = 1 - Math.pow(beta1, this.t);
    const bc2 = 1 - Math.pow(beta2, this.t);
    const fused = fusedKernels() && arrayKernel(ADAMW);
    // One tidy per parameter: a single tidy around the loop keeps every parameter's temporaries
    // alive to the end, which for large (MoE) models exhausts the wasm heap.
    for (const [name, p] of this.params) {
      tf.tidy(() => {
        const g = grads.get(name);
        if (!g) return;
        const m = this.m.get(name)!;
        const v = this.v.get(name)!;
        if (fused && p.dtype === 'float32' && g.dtype === 'float32') {
          const decay = weightDecay > 0 && this.decay.has(name) ? weightDecay : 0;
          const attrs = { beta1, beta2, bc1, bc2, eps, lr, decay };
          const [p1, m1, v1] = runArrayKernel(ADAMW, [p, g, m, v], attrs);
          m.assign(m1!);
          v.assign(v1!);
          p.assign(p1!);
          return;
        }
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

  /**
   * One update on webgpu, in place, one dispatch per parameter: the gradients are scaled by the
   * clipping control ctl (see gpuClipControl), and the whole step is skipped on the device where
   * ctl says the norm was not finite; the caller then takes back the step count (undoStep).
   * `active` names an MoE expert weight's entry in a usage tensor (0: no token chose it, no update).
   */
  stepOnDevice(
    grads: Map<string, tf.Tensor>,
    ctl: tf.Tensor,
    lr: number,
    active: (name: string) => { use: tf.Tensor; index: number } | undefined = () => undefined,
  ): void {
    this.t += 1;
    const { beta1, beta2, eps, weightDecay } = this.cfg;
    const bc1 = 1 - Math.pow(beta1, this.t);
    const bc2 = 1 - Math.pow(beta2, this.t);
    for (const [name, p] of this.params) {
      const g = grads.get(name);
      if (!g) continue;
      const decay = weightDecay > 0 && this.decay.has(name) ? weightDecay : 0;
      gpuAdamW(
        p,
        g,
        this.m.get(name)!,
        this.v.get(name)!,
        ctl,
        { beta1, beta2, bc1, bc2, eps, lr, decay },
        active(name),
        halfCopyOf(p),
      );
    }
  }

  /** Takes back the step count of an update the device skipped (a non-finite gradient norm). */
  undoStep(): void {
    this.t -= 1;
  }

  /** Frees the moment buffers. */
  dispose(): void {
    for (const x of [...this.m.values(), ...this.v.values()]) x.dispose();
  }

  /** The moments as plain arrays, by parameter name (what a checkpoint stores). */
  async moments(): Promise<{ m: Weights; v: Weights }> {
    const read = async (vars: Map<string, tf.Variable>): Promise<Weights> => {
      const out: Weights = new Map();
      for (const [name, x] of vars) out.set(name, { shape: x.shape.slice(), data: (await x.data()) as Float32Array });
      return out;
    };
    return { m: await read(this.m), v: await read(this.v) };
  }
}

/** Restores optimizer moments and step count from a checkpoint. */
export function restoreOptimizer(opt: AdamW, moments: { m: Weights; v: Weights }, step: number): void {
  for (const [which, src] of [
    [opt.m, moments.m],
    [opt.v, moments.v],
  ] as const) {
    for (const [name, variable] of which) {
      const w = src.get(name);
      if (!w) throw new LatheError(`checkpoint optimizer state lacks ${name}`);
      const t = tf.tensor(w.data, variable.shape);
      variable.assign(t);
      t.dispose();
    }
  }
  opt.t = step;
}
