import { tf } from './tf.js';

// tfjs-backend-wasm has no UnsortedSegmentSum (tfjs#8082), which the gradient of gather needs
// (embeddings, and AdamW-style paths). We register it for wasm, computed on the wasm heap's data.
let registered = false;

/** Registers the gradient kernels that tfjs's wasm backend lacks. Idempotent. */
export function registerWasmGradientKernels(): void {
  if (registered) return;
  registered = true;
  if (tf.getKernel('UnsortedSegmentSum', 'wasm')) return;
  tf.registerKernel({
    kernelName: 'UnsortedSegmentSum',
    backendName: 'wasm',
    kernelFunc: ({ inputs, backend, attrs }) => {
      const { x, segmentIds } = inputs as { x: tf.TensorInfo; segmentIds: tf.TensorInfo };
      const numSegments = (attrs as { numSegments: number }).numSegments;
      const b = backend as unknown as {
        typedArrayFromHeap(t: tf.TensorInfo): ArrayLike<number>;
        makeOutput(shape: number[], dtype: tf.DataType, off?: number, values?: Float32Array | Int32Array): tf.TensorInfo;
      };
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
