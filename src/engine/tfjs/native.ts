import { createRequire } from 'node:module';
import { availableParallelism } from 'node:os';

// The native kernel provider: ONNX Runtime's CPU kernels (MLAS: AVX2/AVX-512 GEMM, vectorised
// exp and reductions) through onnxruntime-node, whose npm package carries the prebuilt CPU
// library, so it installs with no download and no install script. Each op runs as a one-node
// ONNX graph with symbolic dims (one session per op, attributes and ranks), through the binding's
// synchronous `run`: the public `InferenceSession.run` is async, and tfjs kernels are not.
// Measured on this 2-core machine: a 1024^2 matmul at ~200 GFLOP/s (tfjs-wasm's XNNPACK ~55),
// exp over 4M floats in 4 ms (tfjs-wasm 21 ms), a [1024, 384] sum over rows in 0.1 ms (2 ms).

interface OrtTensor {
  data: unknown;
}
interface OrtSession {
  loadModel(buffer: ArrayBuffer, byteOffset: number, byteLength: number, options: object): void;
  run(feeds: Record<string, OrtTensor>, fetches: Record<string, OrtTensor>, options: object): Record<string, OrtTensor>;
}
interface OnnxProto {
  ModelProto: { create(o: object): unknown; encode(m: unknown): { finish(): Uint8Array } };
  TensorProto: { DataType: { FLOAT: number } };
  AttributeProto: { AttributeType: { INT: number; INTS: number } };
}
interface Ort {
  Tensor: new (type: 'float32', data: Float32Array, dims: readonly number[]) => OrtTensor;
  Session: new () => OrtSession;
  onnx: OnnxProto;
}

/** A one-node graph: inputs named i0, i1, ... of the given ranks, output y. */
export interface NativeNode {
  op: string;
  /** 'com.microsoft' for ONNX Runtime's contrib ops (FusedMatMul). */
  domain?: string;
  ranks: number[];
  ints?: Record<string, number>;
  intLists?: Record<string, number[]>;
  /** Default-domain opset (11 keeps reduce axes as an attribute). */
  opset?: number;
}

let ort: Ort | null | undefined;
let loadError = '';
const sessions = new Map<string, OrtSession>();

function load(): Ort | null {
  if (ort !== undefined) return ort;
  try {
    const require = createRequire(import.meta.url);
    const api = require('onnxruntime-node') as { Tensor: Ort['Tensor'] };
    const binding = require('onnxruntime-node/dist/binding') as {
      binding: { InferenceSession: Ort['Session'] };
      initOrt(): void;
    };
    const { onnx } = require('onnx-proto') as { onnx: OnnxProto };
    binding.initOrt();
    ort = { Tensor: api.Tensor, Session: binding.binding.InferenceSession, onnx };
  } catch (e) {
    loadError = (e as Error).message.split('\n')[0]!;
    ort = null;
  }
  return ort;
}

function encode(o: Ort, n: NativeNode): Uint8Array {
  const { onnx } = o;
  const elemType = onnx.TensorProto.DataType.FLOAT;
  const value = (name: string, rank: number) => ({
    name,
    type: {
      tensorType: { elemType, shape: { dim: Array.from({ length: rank }, (_, d) => ({ dimParam: `${name}_${d}` })) } },
    },
  });
  const attribute = [
    ...Object.entries(n.ints ?? {}).map(([name, i]) => ({ name, type: onnx.AttributeProto.AttributeType.INT, i })),
    ...Object.entries(n.intLists ?? {}).map(([name, ints]) => ({
      name,
      type: onnx.AttributeProto.AttributeType.INTS,
      ints,
    })),
  ];
  const inputs = n.ranks.map((r, i) => value(`i${i}`, r));
  const model = onnx.ModelProto.create({
    irVersion: 7,
    opsetImport: [{ domain: '', version: n.opset ?? 13 }, ...(n.domain ? [{ domain: n.domain, version: 1 }] : [])],
    graph: {
      name: `lathe_${n.op}`,
      node: [{ opType: n.op, domain: n.domain ?? '', input: inputs.map((v) => v.name), output: ['y'], attribute }],
      input: inputs,
      // The output's rank is left unknown: ONNX Runtime takes it from the op at run time.
      output: [{ name: 'y', type: { tensorType: { elemType } } }],
    },
  });
  return onnx.ModelProto.encode(model).finish();
}

/** Threads for native kernels: LATHE_NATIVE_THREADS, else every core. */
function threads(): number {
  const v = Number(process.env.LATHE_NATIVE_THREADS);
  return Number.isInteger(v) && v > 0 ? v : availableParallelism();
}

function session(o: Ort, n: NativeNode): OrtSession {
  const key = JSON.stringify(n);
  let s = sessions.get(key);
  if (!s) {
    s = new o.Session();
    const bytes = encode(o, n);
    s.loadModel(bytes.buffer as ArrayBuffer, bytes.byteOffset, bytes.byteLength, {
      intraOpNumThreads: threads(),
      interOpNumThreads: 1,
      executionMode: 'sequential',
      graphOptimizationLevel: 'all',
      // Spinning workers steal the cores from tfjs's kernels between native calls: 60% slower steps.
      extra: { session: { intra_op: { allow_spinning: '0' } } },
    });
    sessions.set(key, s);
  }
  return s;
}

/**
 * Whether native kernels are on: LATHE_NATIVE_KERNELS=0 turns them off, and they are off where
 * onnxruntime-node cannot load (nativeStatus says why).
 */
export function nativeAvailable(): boolean {
  if (process.env.LATHE_NATIVE_KERNELS === '0') return false;
  return load() !== null;
}

/** A line for logs and the bench: whether native kernels are in use, and why not. */
export function nativeStatus(): string {
  if (process.env.LATHE_NATIVE_KERNELS === '0') return 'native kernels off (LATHE_NATIVE_KERNELS=0)';
  return load() ? `native kernels: onnxruntime-node, ${threads()} threads` : `native kernels unavailable: ${loadError}`;
}

// ONNX Runtime reads only plain ArrayBuffers; the threaded wasm heap is a SharedArrayBuffer, so
// operands from it go through these staging buffers (one per slot, grown as needed).
const staging: Float32Array[] = [];
function stagingBuffer(slot: number, n: number): Float32Array {
  let buf = staging[slot];
  if (!buf || buf.length < n) buf = staging[slot] = new Float32Array(Math.max(n, Math.ceil((buf?.length ?? 0) * 1.5)));
  return buf.subarray(0, n);
}

/** A float32 operand: its data (a view of exactly its elements) and shape. */
export interface NativeOperand {
  data: Float32Array;
  shape: readonly number[];
}

/** Runs node on inputs, writing its output (of outShape, computed by the caller) into out. Throws if native kernels are unavailable. */
export function runNative(n: NativeNode, inputs: NativeOperand[], out: NativeOperand): void {
  const o = load();
  if (!o) throw new Error(nativeStatus());
  const feeds: Record<string, OrtTensor> = {};
  inputs.forEach((x, i) => {
    let data = x.data;
    if (data.buffer instanceof SharedArrayBuffer) {
      data = stagingBuffer(i, x.data.length);
      data.set(x.data);
    }
    feeds[`i${i}`] = new o.Tensor('float32', data, x.shape);
  });
  const shared = out.data.buffer instanceof SharedArrayBuffer;
  const y = shared ? stagingBuffer(inputs.length, out.data.length) : out.data;
  session(o, n).run(feeds, { y: new o.Tensor('float32', y, out.shape) }, {});
  if (shared) out.data.set(y);
}
