import { tf } from './tf.js';

// tfjs's cpu UnsortedSegmentSum (the gradient of gather: embeddings, MoE combine) loops over every
// segment with a full-size mask, multiply and sum: O(segments x rows x width), ~1.6e9 operations
// for a 4096-row embedding's gradient. Ours visits each row once. It sums in float64 in row
// order, as the stock kernel does (its Sum accumulates in a JS number), so results are the same
// bits and cpu checkpoints stay reproducible.
let registered = false;

interface CpuBackend {
  data: { get(id: tf.DataId): { values: ArrayLike<number> } };
  makeTensorInfo(shape: number[], dtype: tf.DataType, values: Float32Array | Int32Array): tf.TensorInfo;
}

/** Registers Lathe's faster cpu kernels (UnsortedSegmentSum). Idempotent. */
export function registerCpuKernels(): void {
  if (registered) return;
  registered = true;
  if (tf.getKernel('UnsortedSegmentSum', 'cpu')) tf.unregisterKernel('UnsortedSegmentSum', 'cpu');
  tf.registerKernel({
    kernelName: 'UnsortedSegmentSum',
    backendName: 'cpu',
    kernelFunc: ({ inputs, backend, attrs }) => {
      const { x, segmentIds } = inputs as { x: tf.TensorInfo; segmentIds: tf.TensorInfo };
      const numSegments = (attrs as unknown as { numSegments: number }).numSegments;
      const b = backend as unknown as CpuBackend;
      const xv = b.data.get(x.dataId).values;
      const ids = b.data.get(segmentIds.dataId).values;
      const rows = segmentIds.shape.reduce((a, c) => a * c, 1);
      const inner = x.shape.slice(segmentIds.shape.length).reduce((a, c) => a * c, 1);
      const acc = new Float64Array(numSegments * inner);
      for (let r = 0; r < rows; r++) {
        const seg = ids[r]!;
        if (seg < 0 || seg >= numSegments) continue;
        const src = r * inner;
        const dst = seg * inner;
        for (let j = 0; j < inner; j++) acc[dst + j] += xv[src + j]!;
      }
      const out = x.dtype === 'int32' ? Int32Array.from(acc) : Float32Array.from(acc);
      return b.makeTensorInfo([numSegments, ...x.shape.slice(segmentIds.shape.length)], x.dtype, out);
    },
  });
}
