import { tf } from './tf.js';

// Kernels Lathe registers for tfjs's wasm backend:
//  - UnsortedSegmentSum, which it lacks (tfjs#8082) and the gradient of gather needs (embeddings,
//    MoE combine), computed on the wasm heap's data;
//  - Slice, Unpack and SplitV, replacing the stock ones: those copy the *whole* input out of the
//    wasm heap (readSync) for every slice they cut, so unstacking 24 heads of a [24, 256, 256]
//    tensor copied 150 MB. Ours copy each output straight from a view of the heap;
//  - Identity and same-dtype Cast, which share the input's data instead of copying it (as the cpu
//    backend does). tfjs clones every tensor it saves for a backward pass through Identity, and
//    the gradient of that clone is a Cast, so each saved tensor cost two full copies;
//  - Transpose, as a blocked JS loop over heap views: about 3x faster than the stock kernel for
//    the 2-D and batched transposes the model's gradients need.
let registered = false;

interface WasmBackend {
  typedArrayFromHeap(t: tf.TensorInfo): Float32Array | Int32Array | Uint8Array;
  makeOutput(shape: number[], dtype: tf.DataType, off?: number, values?: Float32Array | Int32Array): tf.TensorInfo;
}

/**
 * Copies the box [begin, begin + size) of x into out (both heap views of x's and out's data).
 * Trailing axes taken whole merge into one contiguous run, copied with one TypedArray.set.
 */
function copyBox(
  x: ArrayLike<number> & { subarray(a: number, b: number): ArrayLike<number> },
  shape: number[],
  begin: number[],
  size: number[],
  out: { set(src: ArrayLike<number>, at: number): void },
): void {
  const rank = shape.length;
  const strides = new Array<number>(rank);
  let acc = 1;
  for (let i = rank - 1; i >= 0; i--) {
    strides[i] = acc;
    acc *= shape[i]!;
  }
  if (rank === 0) {
    out.set(x.subarray(0, 1), 0);
    return;
  }
  let r = rank - 1;
  while (r > 0 && size[r] === shape[r] && begin[r] === 0) r--;
  const run = size[r]! * strides[r]!;
  const idx = new Array<number>(r).fill(0);
  let outAt = 0;
  for (;;) {
    let src = begin[r]! * strides[r]!;
    for (let i = 0; i < r; i++) src += (begin[i]! + idx[i]!) * strides[i]!;
    out.set(x.subarray(src, src + run), outAt);
    outAt += run;
    let i = r - 1;
    while (i >= 0 && ++idx[i]! === size[i]) idx[i--] = 0;
    if (i < 0) break;
  }
}

/** A slice of x made on the heap: allocate first (allocation may grow and move the heap), then view. */
function heapSlice(b: WasmBackend, x: tf.TensorInfo, begin: number[], size: number[]): tf.TensorInfo {
  const out = b.makeOutput(size, x.dtype);
  if (size.every((d) => d > 0)) copyBox(b.typedArrayFromHeap(x), x.shape, begin, size, b.typedArrayFromHeap(out));
  return out;
}

/**
 * Gathers slices of x along axis at the given indices (batchDims 0): each slice is contiguous in
 * both x and the output, so each is one TypedArray.set. The stock kernel copies element by element
 * through strided index arithmetic: 18 ms for the MoE combine's [2048, 384] rows, here ~0.5 ms.
 */
function heapGather(b: WasmBackend, x: tf.TensorInfo, indices: tf.TensorInfo, axis: number): tf.TensorInfo {
  const dim = x.shape[axis]!;
  const outer = x.shape.slice(0, axis).reduce((p, q) => p * q, 1);
  const inner = x.shape.slice(axis + 1).reduce((p, q) => p * q, 1);
  const ids = (b.typedArrayFromHeap(indices) as Int32Array).slice();
  for (const i of ids)
    if (!(i >= 0 && i < dim)) throw new Error(`GatherV2: the index value ${i} is not in [0, ${dim - 1}]`);
  const out = b.makeOutput([...x.shape.slice(0, axis), ...indices.shape, ...x.shape.slice(axis + 1)], x.dtype);
  if (out.shape.some((d) => d === 0)) return out;
  const src = b.typedArrayFromHeap(x);
  const dst = b.typedArrayFromHeap(out);
  let at = 0;
  for (let o = 0; o < outer; o++) {
    const base = o * dim * inner;
    for (const i of ids) {
      dst.set(src.subarray(base + i * inner, base + (i + 1) * inner), at);
      at += inner;
    }
  }
  return out;
}

/** Swaps the kernel function of a stock wasm kernel, keeping its setup (other stock kernels call into it). */
function replaceKernel(config: tf.KernelConfig): void {
  const stock = tf.getKernel(config.kernelName, 'wasm');
  if (stock) tf.unregisterKernel(config.kernelName, 'wasm');
  tf.registerKernel({ ...stock, ...config });
}

/**
 * Transposes x by perm when perm only swaps two adjacent groups of axes ([..., A, B, ...] ->
 * [..., B, A, ...], leading and trailing axes in place), which covers every transpose in the
 * model; returns undefined for any other permutation.
 */
function heapTranspose(b: WasmBackend, x: tf.TensorInfo, perm: number[]): tf.TensorInfo | undefined {
  const rank = perm.length;
  let lead = 0;
  while (lead < rank && perm[lead] === lead) lead++;
  let tail = rank;
  while (tail > lead && perm[tail - 1] === tail - 1) tail--;
  if (lead === rank) return undefined; // identity permutation: leave it to the stock kernel
  // perm[lead..tail) must be [s, s+1, ..., tail-1, lead, ..., s-1] for some split s.
  const s = perm[lead]!;
  for (let i = lead; i < tail; i++) {
    const want = i - lead < tail - s ? s + (i - lead) : lead + (i - lead - (tail - s));
    if (perm[i] !== want) return undefined;
  }
  const prod = (from: number, to: number) => x.shape.slice(from, to).reduce((p, d) => p * d, 1);
  const batch = prod(0, lead);
  const nA = prod(lead, s);
  const nB = prod(s, tail);
  const inner = prod(tail, rank);
  const out = b.makeOutput(
    perm.map((p) => x.shape[p]!),
    x.dtype,
  );
  const src = b.typedArrayFromHeap(x);
  const dst = b.typedArrayFromHeap(out);
  const plane = nA * nB * inner;
  for (let n = 0; n < batch; n++) {
    const base = n * plane;
    if (inner > 1) {
      // Runs of `inner` contiguous elements: dst[n][j][i] = src[n][i][j].
      for (let j = 0; j < nB; j++)
        for (let i = 0; i < nA; i++) {
          const from = base + (i * nB + j) * inner;
          dst.set(src.subarray(from, from + inner), base + (j * nA + i) * inner);
        }
      continue;
    }
    // Element transpose in 64 x 64 tiles, writing each destination row in order.
    const T = 64;
    for (let j0 = 0; j0 < nB; j0 += T)
      for (let i0 = 0; i0 < nA; i0 += T) {
        const i1 = Math.min(i0 + T, nA);
        const j1 = Math.min(j0 + T, nB);
        for (let j = j0; j < j1; j++) {
          const row = base + j * nA;
          for (let i = i0; i < i1; i++) dst[row + i] = src[base + i * nB + j]!;
        }
      }
  }
  return out;
}

function registerFastKernels(): void {
  const stock = (name: string) => tf.getKernel(name, 'wasm')?.kernelFunc;
  const stockSlice = stock('Slice');
  const stockUnpack = stock('Unpack');
  const stockSplit = stock('SplitV');
  const stockCast = stock('Cast');
  const stockTranspose = stock('Transpose');
  const stockGather = stock('GatherV2');
  if (!stockSlice || !stockUnpack || !stockSplit || !stockCast || !stockTranspose || !stockGather) return;
  const share = (args: { inputs: tf.NamedTensorInfoMap; backend: unknown }): tf.TensorInfo => {
    const x = (args.inputs as { x: tf.TensorInfo }).x;
    (args.backend as { incRef(id: tf.DataId): void }).incRef(x.dataId);
    return { dataId: x.dataId, shape: x.shape, dtype: x.dtype };
  };
  replaceKernel({ kernelName: 'Identity', backendName: 'wasm', kernelFunc: share });
  replaceKernel({
    kernelName: 'Cast',
    backendName: 'wasm',
    kernelFunc: (args) =>
      (args.inputs as { x: tf.TensorInfo }).x.dtype === (args.attrs as unknown as { dtype: string }).dtype
        ? share(args)
        : stockCast(args),
  });
  replaceKernel({
    kernelName: 'Transpose',
    backendName: 'wasm',
    kernelFunc: (args) => {
      const x = (args.inputs as { x: tf.TensorInfo }).x;
      const perm = (args.attrs as unknown as { perm: number[] }).perm;
      return (
        (x.dtype !== 'string' && heapTranspose(args.backend as unknown as WasmBackend, x, perm)) || stockTranspose(args)
      );
    },
  });
  replaceKernel({
    kernelName: 'Slice',
    backendName: 'wasm',
    kernelFunc: (args) => {
      const x = (args.inputs as { x: tf.TensorInfo }).x;
      if (x.dtype === 'string') return stockSlice(args);
      const { begin, size } = args.attrs as unknown as { begin: number | number[]; size?: number | number[] };
      const [b0, s0] = tf.slice_util.parseSliceParams(x as tf.Tensor, begin, size);
      return heapSlice(args.backend as unknown as WasmBackend, x, b0, s0);
    },
  });
  replaceKernel({
    kernelName: 'GatherV2',
    backendName: 'wasm',
    kernelFunc: (args) => {
      const { x, indices } = args.inputs as { x: tf.TensorInfo; indices: tf.TensorInfo };
      const { axis, batchDims } = args.attrs as unknown as { axis: number; batchDims: number };
      if (x.dtype === 'string' || batchDims !== 0 || indices.dtype !== 'int32') return stockGather(args);
      return heapGather(args.backend as unknown as WasmBackend, x, indices, tf.util.parseAxisParam(axis, x.shape)[0]!);
    },
  });
  replaceKernel({
    kernelName: 'Unpack',
    backendName: 'wasm',
    kernelFunc: (args) => {
      const x = (args.inputs as { value: tf.TensorInfo }).value;
      if (x.dtype === 'string') return stockUnpack(args);
      let axis = (args.attrs as unknown as { axis: number }).axis;
      if (axis < 0) axis += x.shape.length;
      const outShape = x.shape.filter((_, i) => i !== axis);
      const size = x.shape.slice();
      size[axis] = 1;
      const outs: tf.TensorInfo[] = [];
      for (let i = 0; i < x.shape[axis]!; i++) {
        const begin = x.shape.map((_, j) => (j === axis ? i : 0));
        const o = heapSlice(args.backend as unknown as WasmBackend, x, begin, size);
        outs.push({ dataId: o.dataId, dtype: o.dtype, shape: outShape });
      }
      return outs;
    },
  });
  replaceKernel({
    kernelName: 'SplitV',
    backendName: 'wasm',
    kernelFunc: (args) => {
      const x = (args.inputs as { x: tf.TensorInfo }).x;
      if (x.dtype === 'string') return stockSplit(args);
      const { numOrSizeSplits, axis } = args.attrs as unknown as { numOrSizeSplits: number | number[]; axis: number };
      const ax = tf.util.parseAxisParam(axis, x.shape)[0]!;
      const sizes = tf.backend_util.prepareSplitSize(x as tf.Tensor, numOrSizeSplits, ax);
      let at = 0;
      return sizes.map((s) => {
        const begin = x.shape.map((_, j) => (j === ax ? at : 0));
        const size = x.shape.map((d, j) => (j === ax ? s : d));
        at += s;
        return heapSlice(args.backend as unknown as WasmBackend, x, begin, size);
      });
    },
  });
}

/** Registers Lathe's wasm kernels: the gradient kernels tfjs's wasm backend lacks, and faster slicing. Idempotent. */
export function registerWasmGradientKernels(): void {
  if (registered) return;
  registered = true;
  registerFastKernels();
  if (tf.getKernel('UnsortedSegmentSum', 'wasm')) return;
  tf.registerKernel({
    kernelName: 'UnsortedSegmentSum',
    backendName: 'wasm',
    kernelFunc: ({ inputs, backend, attrs }) => {
      const { x, segmentIds } = inputs as { x: tf.TensorInfo; segmentIds: tf.TensorInfo };
      const numSegments = (attrs as { numSegments: number }).numSegments;
      const b = backend as unknown as WasmBackend;
      const xv = b.typedArrayFromHeap(x);
      const ids = b.typedArrayFromHeap(segmentIds);
      const rows = segmentIds.shape.reduce((a, c) => a * c, 1);
      const inner = x.shape.slice(segmentIds.shape.length).reduce((a, c) => a * c, 1);
      const out = x.dtype === 'int32' ? new Int32Array(numSegments * inner) : new Float32Array(numSegments * inner);
      for (let r = 0; r < rows; r++) {
        const seg = ids[r]!;
        if (seg < 0 || seg >= numSegments) continue;
        const src = r * inner;
        const dst = seg * inner;
        for (let j = 0; j < inner; j++) out[dst + j] += xv[src + j]!;
      }
      return b.makeOutput([numSegments, ...x.shape.slice(segmentIds.shape.length)], x.dtype, undefined, out);
    },
  });
}
