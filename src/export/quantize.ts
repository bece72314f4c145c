/**
 * Int8 weight quantization for export: symmetric, one scale per output channel (row of an HF
 * Linear weight [out, in]), scale = max|row| / 127, q = round-half-away-from-zero(w / scale).
 *
 * What is quantized: the attention projections (q, k, v, o), the MLP / expert projections
 * (gate, up, down; Mixtral w1, w2, w3) and an untied lm_head. What stays float32: token
 * embeddings (and so a tied head), RMSNorm gains and the MoE router, which are small and
 * sensitive. The HF export stores the int8 codes and scales (compressed-tensors' layout,
 * model/compressed-tensors.ts), one byte per quantized weight; the dequantized weights
 * (q * scale) are what transformers computes with, and what the held-out measurement uses.
 */

/** Named float32 weights, as `LanguageModel.weights()` returns them. */
export type { Weights as NamedWeights } from '../model/weights.js';
import type { Weights as NamedWeights } from '../model/weights.js';
import { isLinearProjection, quantizeRows } from '../model/quantize.js';

/** What {@link quantizeInt8} did. */
export interface Int8Summary {
  scheme: 'int8 symmetric per-output-channel';
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

/** The int8 codes of one quantized [rows, cols] weight and its per-row scales. */
export interface Int8Codes {
  q: Int8Array;
  scales: Float32Array;
  rows: number;
  cols: number;
}

/**
 * Quantizes the Linear weights of a model (see the module comment for which): their codes, and
 * every weight as the model computes with it (dequantized where quantized).
 */
export function quantizeInt8(weights: NamedWeights): {
  weights: NamedWeights;
  codes: Map<string, Int8Codes>;
  summary: Int8Summary;
} {
  const out: NamedWeights = new Map();
  const codes = new Map<string, Int8Codes>();
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
    const { q, scales, dequant } = quantizeRows(w.data, rows, cols);
    codes.set(name, { q, scales, rows, cols });
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
    codes,
    summary: {
      scheme: 'int8 symmetric per-output-channel',
      quantized,
      kept,
      quantizedParams,
      totalParams,
      maxAbsError,
      relativeRmsError: refSq > 0 ? Math.sqrt(errSq / refSq) : 0,
    },
  };
}
