/**
 * Int8 weights in compressed-tensors' `pack-quantized` layout, which transformers loads (through
 * the `compressed-tensors` package) on any device, Mixtral experts included. A quantized Linear
 * `X.weight` [out, in] is stored as three tensors:
 *
 *   X.weight_packed  I32 [out, ceil(in / 4)]  codes q in [-128, 127], each stored as the byte q + 128,
 *                                             four to a little-endian word (the first in the low byte)
 *   X.weight_scale   F32 [out, 1]             one scale per output channel: w ≈ q · scale
 *   X.weight_shape   I64 [2]                  [out, in]
 *
 * and config.json says so in `quantization_config` (8-bit, symmetric, per channel). This module
 * writes that layout for the export and reads it back for the import.
 */
import { LatheError } from '../errors.js';
import type { StoredTensor } from './safetensors.js';

/** `compressed-tensors` version whose layout this follows (the pinned one). */
export const COMPRESSED_TENSORS_VERSION = '0.20.1';

/** The `quantization_config` of config.json for int8 weights; `ignore` lists Linear modules left in float. */
export function int8QuantizationConfig(ignore: readonly string[]): Record<string, unknown> {
  return {
    quant_method: 'compressed-tensors',
    format: 'pack-quantized',
    quantization_status: 'compressed',
    config_groups: {
      group_0: {
        targets: ['Linear'],
        weights: {
          num_bits: 8,
          type: 'int',
          symmetric: true,
          strategy: 'channel',
          dynamic: false,
          group_size: null,
          block_structure: null,
          actorder: null,
          observer: 'minmax',
        },
        input_activations: null,
        output_activations: null,
        format: 'pack-quantized',
      },
    },
    ignore: [...ignore],
    kv_cache_scheme: null,
    sparsity_config: {},
    version: COMPRESSED_TENSORS_VERSION,
  };
}

/** The three stored tensors of one int8 Linear weight `name` (…`.weight`) of shape [rows, cols]. */
export function packInt8(
  name: string,
  q: Int8Array,
  scales: Float32Array,
  rows: number,
  cols: number,
): [string, StoredTensor][] {
  const base = name.replace(/\.weight$/, '');
  const words = Math.ceil(cols / 4);
  const packed = new Uint8Array(rows * words * 4);
  for (let r = 0; r < rows; r++)
    for (let c = 0; c < cols; c++) packed[r * words * 4 + c] = (q[r * cols + c]! + 128) & 0xff;
  const shape = new BigInt64Array([BigInt(rows), BigInt(cols)]);
  return [
    [`${base}.weight_packed`, { dtype: 'I32', shape: [rows, words], data: packed }],
    [`${base}.weight_scale`, { dtype: 'F32', shape: [rows, 1], data: new Uint8Array(scales.slice().buffer) }],
    [`${base}.weight_shape`, { dtype: 'I64', shape: [2], data: new Uint8Array(shape.buffer) }],
  ];
}

/**
 * Replaces every `X.weight_packed` / `X.weight_scale` / `X.weight_shape` triple by a float32
 * `X.weight`, when config.json's `quantization_config` is the int8 layout above. Other
 * quantization configs are refused, naming the field. `where` names config.json in errors.
 */
export function dequantizePacked(
  config: Record<string, unknown>,
  tensors: Map<string, StoredTensor>,
  where: string,
): Map<string, StoredTensor> {
  const qc = config.quantization_config as Record<string, unknown> | undefined;
  if (qc === undefined || qc === null) return tensors;
  const method = qc.quant_method;
  const groups = Object.values((qc.config_groups ?? {}) as Record<string, { weights?: Record<string, unknown> }>);
  const w = groups[0]?.weights;
  const ok =
    method === 'compressed-tensors' &&
    qc.format === 'pack-quantized' &&
    groups.length === 1 &&
    w?.num_bits === 8 &&
    w.type === 'int' &&
    w.symmetric === true &&
    w.strategy === 'channel';
  if (!ok)
    throw new LatheError(
      `${where}: quantization_config (${String(method)}${qc.format ? `, ${String(qc.format)}` : ''}) is not supported; ` +
        'Lathe reads unquantized weights and its own int8 exports (compressed-tensors pack-quantized, 8-bit symmetric per channel)',
    );
  const out = new Map<string, StoredTensor>();
  for (const [name, t] of tensors) {
    if (/\.weight_(scale|shape)$/.test(name)) continue;
    if (!name.endsWith('.weight_packed')) {
      out.set(name, t);
      continue;
    }
    const base = name.slice(0, -'.weight_packed'.length);
    const scale = tensors.get(`${base}.weight_scale`);
    const shapeT = tensors.get(`${base}.weight_shape`);
    if (!scale || !shapeT) throw new LatheError(`${where}: ${name} has no ${base}.weight_${scale ? 'shape' : 'scale'}`);
    const [rows, cols] = Array.from(readInts(shapeT));
    const words = Math.ceil(cols! / 4);
    if (t.dtype !== 'I32' || t.shape.join() !== `${rows},${words}`)
      throw new LatheError(`${where}: ${name}: ${t.dtype} [${t.shape}] is not I32 [${rows}, ${words}]`);
    if (scale.dtype !== 'F32' || scale.data.byteLength !== 4 * rows!)
      throw new LatheError(`${where}: ${base}.weight_scale: expected F32 [${rows}, 1]`);
    const s = new Float32Array(new Uint8Array(scale.data).buffer);
    const data = new Float32Array(rows! * cols!);
    for (let r = 0; r < rows!; r++)
      for (let c = 0; c < cols!; c++) data[r * cols! + c] = Math.fround((t.data[r * words * 4 + c]! - 128) * s[r]!);
    out.set(`${base}.weight`, {
      dtype: 'F32',
      shape: [rows!, cols!],
      data: new Uint8Array(data.buffer),
    });
  }
  for (const name of tensors.keys())
    if (/\.weight_(scale|shape)$/.test(name) && !tensors.has(name.replace(/_(scale|shape)$/, '_packed')))
      throw new LatheError(`${where}: ${name} has no ${name.replace(/_(scale|shape)$/, '_packed')}`);
  return out;
}

function readInts(t: StoredTensor): number[] {
  // A copy: a Buffer's slice() is a view into the whole file.
  const copy = new Uint8Array(t.data).buffer;
  if (t.dtype === 'I64') return Array.from(new BigInt64Array(copy), Number);
  if (t.dtype === 'I32') return Array.from(new Int32Array(copy));
  throw new LatheError(`weight_shape: dtype ${t.dtype} is not an integer type`);
}
