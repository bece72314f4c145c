/**
 * Int8 weight quantization for export: symmetric, one scale per output channel (row of an HF
 * Linear weight [out, in]), scale = max|row| / 127, q = round-half-away-from-zero(w / scale).
 *
 * What is quantized: the attention projections (q, k, v, o), the MLP / expert projections
 * (gate, up, down; Mixtral w1, w2, w3) and an untied lm_head. What stays float32: token
 * embeddings (and so a tied head), RMSNorm gains and the MoE router, which are small and
 * sensitive. The export stores the dequantized values (q * scale) as float32, so any
 * transformers version loads it unchanged; the result measures the accuracy of int8 weights,
 * not their size.
 */

/** Named float32 weights, as `LanguageModel.weights()` returns them. */
export type { Weights as NamedWeights } from '../model/weights.js';
import type { Weights as NamedWeights } from '../model/weights.js';
import { isLinearProjection, quantizeRows } from '../model/quantize.js';

/** What {@link quantizeInt8} did. */
export interface Int8Summary {
  scheme: 'int8 symmetric per-output-channel, dequantized to float32';
  /** Names of the quantized tensors. */
  quantized: string[];
  /** Names kept in float32. */
  kept: string[];
  /** Parameters quantized, and in all. */
  quantizedParams: number;
  totalParams: number;
  /** Largest |w - dequant(q(w))| over all quantized weights. */
  maxAbsError: number;
  /** Root mean square of w - dequant(q(w)) over the quantized weights, relative to their RMS. */
  relativeRmsError: number;
}

/** Whether a weight is quantized by {@link quantizeInt8}. */
export function isQuantizedWeight(name: string): boolean {
  return isLinearProjection(name) || name === 'lm_head.weight';
}

export { quantizeRows };

/** Quantize-dequantizes the Linear weights of a model (see the module comment for which). */
export function quantizeInt8(weights: NamedWeights): { weights: NamedWeights; summary: Int8Summary } {
  const out: NamedWeights = new Map();
  const quantized: string[] = [];
  const kept: string[] = [];
  let quantizedParams = 0;
  let totalParams = 0;
  let maxAbsError = 0;
  let errSq = 0;
  let refSq = 0;
  for (const [name, w] of weights) {
    totalParams += w.data.length;
    if (!isQuantizedWeight(name) || w.shape.length !== 2) {
      out.set(name, w);
      kept.push(name);
      continue;
    }
    const [rows, cols] = w.shape as [number, number];
    const { dequant } = quantizeRows(w.data, rows, cols);
    for (let i = 0; i < dequant.length; i++) {
      const e = dequant[i]! - w.data[i]!;
      maxAbsError = Math.max(maxAbsError, Math.abs(e));
      errSq += e * e;
      refSq += w.data[i]! * w.data[i]!;
    }
    out.set(name, { shape: w.shape.slice(), data: dequant });
    quantized.push(name);
    quantizedParams += w.data.length;
  }
  return {
    weights: out,
    summary: {
      scheme: 'int8 symmetric per-output-channel, dequantized to float32',
      quantized,
      kept,
      quantizedParams,
      totalParams,
      maxAbsError,
      relativeRmsError: refSq > 0 ? Math.sqrt(errSq / refSq) : 0,
    },
  };
}
