import { tf } from './tf.js';
import { withFloatArrays } from './array-kernels.js';
import { nativeAvailable, runNative, type NativeNode } from './native.js';

// tfjs kernels of the wasm and cpu backends re-routed to the native provider (native.ts) where it
// wins by measurement; the stock kernel runs the rest (other dtypes, small tensors, shapes the
// native op would treat differently). Chosen from a `node --cpu-prof` of a training step:
//  - BatchMatMul, with transposes folded into the GEMM and whole-batch broadcasting;
//  - Exp and Softmax (the loss's log-softmax over the vocabulary spends most of its time there);
//  - Sum, Mean and Max, which tfjs-wasm computes by transposing the reduced axes last first.
// Elementwise binary ops and Softmax stay on tfjs-wasm: ONNX Runtime's were slower in place.

// Below these sizes the ~20 us of a native call outweighs the faster kernel.
const MIN_MACS = 32_768;
const MIN_ELEMENTS = 16_384;

type Backend = 'wasm' | 'cpu';

const size = (s: readonly number[]) => s.reduce((x, y) => x * y, 1);

let enabled = true;

/**
 * Switches the registered native kernels off (their stock tfjs kernels run) or back on, for tests
 * and comparisons; returns the previous setting. LATHE_NATIVE_KERNELS=0 keeps them from registering.
 */
export function setNativeKernels(on: boolean): boolean {
  const prev = enabled;
  enabled = on;
  return prev;
}

/**
 * Runs node on float32 inputs of either backend (seen by the node with the given shapes),
 * allocating the output there with outShape (seen by the node as nodeOut, the same data).
 */
function run(
  backend: Backend,
  be: unknown,
  node: NativeNode,
  inputs: tf.TensorInfo[],
  shapes: number[][],
  outShape: number[],
  nodeOut = outShape,
): tf.TensorInfo {
  return withFloatArrays(backend, be, inputs, [outShape], (ins, [out]) =>
    runNative(
      node,
      ins.map((data, i) => ({ data, shape: shapes[i]! })),
      { data: out!, shape: nodeOut },
    ),
  )[0]!;
}

/**
 * A BatchMatMul as a 3-D FusedMatMul problem, or undefined where the native path does not apply
 * (too small, non-float, or batch dims that broadcast other than whole-batch against 1).
 */
export function planMatMul(aShape: number[], bShape: number[], transA: boolean, transB: boolean) {
  if (aShape.length < 2 || bShape.length < 2) return undefined;
  const ba = aShape.slice(0, -2);
  const bb = bShape.slice(0, -2);
  const na = size(ba);
  const nb = size(bb);
  let outBatch: number[];
  if (na === 1 && nb === 1) outBatch = ba.length >= bb.length ? ba : bb;
  else if (na === 1) outBatch = bb;
  else if (nb === 1) outBatch = ba;
  else if (ba.length === bb.length && ba.every((d, i) => d === bb[i])) outBatch = ba;
  else return undefined;
  if (ba.length > outBatch.length || bb.length > outBatch.length) return undefined;
  const [ar, ac] = aShape.slice(-2) as [number, number];
  const [br, bc] = bShape.slice(-2) as [number, number];
  const m = transA ? ac : ar;
  const k = transA ? ar : ac;
  const n = transB ? br : bc;
  if ((transB ? bc : br) !== k) return undefined; // tfjs reports the shape error
  if (Math.max(na, nb) * m * n * k < MIN_MACS) return undefined;
  return { a: [na, ar, ac], b: [nb, br, bc], out: [...outBatch, m, n], out3: [Math.max(na, nb), m, n] };
}

/**
 * A reduction over leading axes [0, k) (the sum over rows of a gradient: tfjs-wasm transposes for
 * it), as its output shape; undefined for any other axes. Reductions along the contiguous last
 * axis stay on tfjs: ONNX Runtime's vectorised ones sum in an order that depends on the data's
 * address, which would break bit-exact resume.
 */
function planReduce(x: tf.TensorInfo, axis: number | number[], keepDims: boolean) {
  const axes = tf.util.parseAxisParam(axis, x.shape).sort((p, q) => p - q);
  if (axes.length === 0 || axes.length >= x.shape.length || axes.some((a, i) => a !== i)) return undefined;
  const out = keepDims ? x.shape.map((d, i) => (i < axes.length ? 1 : d)) : x.shape.slice(axes.length);
  return { axes, out };
}

function kernels(backend: Backend, stock: (name: string) => tf.KernelFunc): tf.KernelConfig[] {
  const floats = (...xs: tf.TensorInfo[]) => xs.every((x) => x.dtype === 'float32');
  const unary = (name: string, op: string): tf.KernelConfig => ({
    kernelName: name,
    backendName: backend,
    kernelFunc: (args) => {
      const { x } = args.inputs as { x: tf.TensorInfo };
      if (!floats(x) || size(x.shape) < MIN_ELEMENTS) return stock(name)(args);
      return run(backend, args.backend, { op, ranks: [x.shape.length] }, [x], [x.shape], x.shape);
    },
  });
  // tfjs names the reduced axes `axis` for Sum and Mean, `reductionIndices` for Max.
  const reduce = (name: string, op: string, axisAttr = 'axis'): tf.KernelConfig => ({
    kernelName: name,
    backendName: backend,
    kernelFunc: (args) => {
      const { x } = args.inputs as { x: tf.TensorInfo };
      const keepDims = args.attrs!.keepDims as boolean;
      if (!floats(x) || size(x.shape) < MIN_ELEMENTS) return stock(name)(args);
      const p = planReduce(x, args.attrs![axisAttr] as number | number[], keepDims);
      if (!p) return stock(name)(args);
      return run(
        backend,
        args.backend,
        { op, ranks: [x.shape.length], intLists: { axes: p.axes }, ints: { keepdims: keepDims ? 1 : 0 }, opset: 11 },
        [x],
        [x.shape],
        p.out,
      );
    },
  });
  return [
    {
      kernelName: 'BatchMatMul',
      backendName: backend,
      kernelFunc: (args) => {
        const { a, b } = args.inputs as { a: tf.TensorInfo; b: tf.TensorInfo };
        const { transposeA, transposeB } = args.attrs as { transposeA: boolean; transposeB: boolean };
        const p = floats(a, b) ? planMatMul(a.shape, b.shape, transposeA, transposeB) : undefined;
        if (!p) return stock('BatchMatMul')(args);
        const node: NativeNode = {
          op: 'FusedMatMul',
          domain: 'com.microsoft',
          ranks: [3, 3],
          ints: { transA: transposeA ? 1 : 0, transB: transposeB ? 1 : 0 },
        };
        return run(backend, args.backend, node, [a, b], [p.a, p.b], p.out, p.out3);
      },
    },
    unary('Exp', 'Exp'),
    reduce('Sum', 'ReduceSum'),
    reduce('Mean', 'ReduceMean'),
    reduce('Max', 'ReduceMax', 'reductionIndices'),
  ];
}

const registered = new Set<Backend>();

/**
 * Routes the kernels above of the wasm or cpu backend to the native provider. Does nothing (and
 * returns false) when it is unavailable or turned off (LATHE_NATIVE_KERNELS=0).
 */
export function registerNativeKernels(backend: Backend): boolean {
  if (registered.has(backend)) return true;
  if (!nativeAvailable()) return false;
  const stocks = new Map<string, tf.KernelConfig>();
  const stock = (name: string) => stocks.get(name)!.kernelFunc;
  for (const k of kernels(backend, stock)) {
    const native = k.kernelFunc;
    const s = tf.getKernel(k.kernelName, backend);
    if (!s) continue;
    stocks.set(k.kernelName, s);
    tf.unregisterKernel(k.kernelName, backend);
    // The stock config's setup (wasm function lookups) still runs: other stock kernels call into it.
    tf.registerKernel({ ...s, kernelFunc: (args) => (enabled ? native(args) : s.kernelFunc(args)) });
  }
  registered.add(backend);
  return true;
}

/** Whether the active backend's matmuls run on the native provider (the model then batches its products). */
export function nativeMatMulActive(): boolean {
  return enabled && registered.has(tf.getBackend() as Backend);
}
