import { tf } from './tf.js';

// Kernels written as one JS pass over the operands' float32 data, for the wasm backend (views of
// its heap, no copies) and the cpu backend (its arrays). They fuse elementwise chains that tfjs
// would run as several kernels, each a full pass over memory. Other backends get none: callers
// check arrayKernel() and fall back to tensor ops there.

interface HeapBackend {
  typedArrayFromHeap(t: tf.TensorInfo): Float32Array;
  makeOutput(shape: number[], dtype: tf.DataType): tf.TensorInfo;
}
interface CpuBackend {
  data: { get(id: object): { values: Float32Array } };
  makeTensorInfo(shape: number[], dtype: tf.DataType, values: Float32Array): tf.TensorInfo;
}

/** A fused pass: reads the inputs' data, writes every output (all float32, shapes given). */
export interface ArrayKernel {
  name: string;
  /** Output shapes from the input shapes (and the attributes). */
  outputs(shapes: number[][], attrs: Record<string, unknown>): number[][];
  run(inputs: Float32Array[], outputs: Float32Array[], shapes: number[][], attrs: Record<string, unknown>): void;
}

/**
 * Gives fn the float32 data of inputs and of new outputs of outShapes on the wasm backend (views
 * of its heap) or the cpu backend (its arrays), and returns the outputs. fn writes every output.
 */
export function withFloatArrays(
  backend: 'wasm' | 'cpu',
  be: unknown,
  inputs: tf.TensorInfo[],
  outShapes: number[][],
  fn: (ins: Float32Array[], outs: Float32Array[]) => void,
): tf.TensorInfo[] {
  if (backend === 'wasm') {
    const b = be as HeapBackend;
    // Allocate first: allocation may grow (and move) the heap that the views look into.
    const outs = outShapes.map((s) => b.makeOutput(s, 'float32'));
    fn(
      inputs.map((x) => b.typedArrayFromHeap(x)),
      outs.map((o) => b.typedArrayFromHeap(o)),
    );
    return outs;
  }
  const c = be as CpuBackend;
  const outs = outShapes.map((s) => new Float32Array(s.reduce((p, q) => p * q, 1)));
  fn(
    inputs.map((x) => c.data.get(x.dataId).values),
    outs,
  );
  return outs.map((o, i) => c.makeTensorInfo(outShapes[i]!, 'float32', o));
}

const defined = new Map<string, ArrayKernel>();

/** Declares a kernel (once per name); arrayKernel registers it on the active backend when it can. */
export function defineArrayKernel(k: ArrayKernel): void {
  if (!defined.has(k.name)) defined.set(k.name, k);
}

/**
 * Whether kernel `name` can run on the active backend (wasm or cpu, float32 inputs), registering
 * it there on first use. Call it before tf.engine().runKernel(name, ...).
 */
export function arrayKernel(name: string): boolean {
  const backend = tf.getBackend();
  if (backend !== 'wasm' && backend !== 'cpu') return false;
  if (tf.getKernel(name, backend)) return true;
  const k = defined.get(name);
  if (!k) return false;
  tf.registerKernel({
    kernelName: name,
    backendName: backend,
    kernelFunc: ({ inputs, backend: be, attrs }) => {
      const xs = Object.values(inputs) as tf.TensorInfo[];
      for (const x of xs) if (x.dtype !== 'float32') throw new Error(`${name}: expects float32 inputs, got ${x.dtype}`);
      const shapes = xs.map((x) => x.shape);
      return withFloatArrays(backend, be, xs, k.outputs(shapes, attrs ?? {}), (ins, outs) =>
        k.run(ins, outs, shapes, attrs ?? {}),
      );
    },
  });
  return true;
}

/** Runs a defined array kernel (check arrayKernel(name) first). Inputs are named in order. */
export function runArrayKernel(name: string, inputs: tf.Tensor[], attrs: Record<string, number> = {}): tf.Tensor[] {
  const named: tf.NamedTensorMap = {};
  inputs.forEach((x, i) => (named[`x${i}`] = x));
  const out = tf.engine().runKernel(name, named, attrs as unknown as tf.NamedAttrMap);
  return Array.isArray(out) ? (out as tf.Tensor[]) : [out as tf.Tensor];
}
