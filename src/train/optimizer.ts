import { tf } from '../backend/tf.js';
import { fusedKernels } from '../model/kernels.js';

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

function adamwPass(p: Float32Array, g: Float32Array, m: Float32Array, v: Float32Array, a: AdamWAttrs, p1: Float32Array, m1: Float32Array, v1: Float32Array): void {
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

interface HeapBackend {
  typedArrayFromHeap(t: tf.TensorInfo): Float32Array;
  makeOutput(shape: number[], dtype: tf.DataType): tf.TensorInfo;
}
interface CpuBackend {
  data: { get(id: object): { values: Float32Array } };
  makeTensorInfo(shape: number[], dtype: tf.DataType, values: Float32Array): tf.TensorInfo;
}

function registerAdamW(): boolean {
  const backend = tf.getBackend();
  if ((backend !== 'wasm' && backend !== 'cpu') || !fusedKernels()) return false;
  if (tf.getKernel(ADAMW, backend)) return true;
  tf.registerKernel({
    kernelName: ADAMW,
    backendName: backend,
    kernelFunc: ({ inputs, backend: be, attrs }) => {
      const { p, g, m, v } = inputs as Record<'p' | 'g' | 'm' | 'v', tf.TensorInfo>;
      const a = attrs as unknown as AdamWAttrs;
      if (backend === 'wasm') {
        const b = be as unknown as HeapBackend;
        // Allocate first: allocation may grow (and move) the heap that the views look into.
        const outs = [0, 1, 2].map(() => b.makeOutput(p.shape, 'float32'));
        const [p1, m1, v1] = outs.map((o) => b.typedArrayFromHeap(o)) as [Float32Array, Float32Array, Float32Array];
        adamwPass(b.typedArrayFromHeap(p), b.typedArrayFromHeap(g), b.typedArrayFromHeap(m), b.typedArrayFromHeap(v), a, p1, m1, v1);
        return outs;
      }
      const c = be as unknown as CpuBackend;
      const n = p.shape.reduce((x, y) => x * y, 1);
      const [p1, m1, v1] = [0, 1, 2].map(() => new Float32Array(n)) as [Float32Array, Float32Array, Float32Array];
      adamwPass(c.data.get(p.dataId).values, c.data.get(g.dataId).values, c.data.get(m.dataId).values, c.data.get(v.dataId).values, a, p1, m1, v1);
      return [p1, m1, v1].map((x) => c.makeTensorInfo(p.shape, 'float32', x));
    },
  });
  return true;
}

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
    const fused = registerAdamW();
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
          const [p1, m1, v1] = tf.engine().runKernel(ADAMW, { p, g, m, v }, attrs as unknown as tf.NamedAttrMap) as tf.Tensor[];
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

  /** Frees the moment buffers. */
  dispose(): void {
    for (const x of [...this.m.values(), ...this.v.values()]) x.dispose();
  }
}
