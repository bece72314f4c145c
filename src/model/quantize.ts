// Int8 weight quantization, shared by export (quantize-dequantize, src/export/quantize.ts) and by
// QLoRA's frozen int8 base in the engines: symmetric, one scale per output channel (row of an HF
// Linear weight [out, in]), scale = max|row| / 127, q = round-half-away-from-zero(w / scale).

const LINEAR = /(\.self_attn\.[qkvo]_proj\.weight|\.mlp\.(gate|up|down)_proj\.weight|\.experts\.\d+\.w[123]\.weight)$/;

/** Whether a weight is one of the decoder blocks' Linear projections (attention, MLP, experts; not the router). */
export function isLinearProjection(name: string): boolean {
  return LINEAR.test(name);
}

/**
 * Quantizes one [rows, cols] matrix per row. Returns the int8 values, the float32 row scales and
 * the dequantized matrix.
 */
export function quantizeRows(
  data: Float32Array,
  rows: number,
  cols: number,
): { q: Int8Array; scales: Float32Array; dequant: Float32Array } {
  const q = new Int8Array(rows * cols);
  const scales = new Float32Array(rows);
  const dequant = new Float32Array(rows * cols);
  for (let r = 0; r < rows; r++) {
    let max = 0;
    for (let c = 0; c < cols; c++) max = Math.max(max, Math.abs(data[r * cols + c]!));
    const scale = Math.fround(max / 127);
    scales[r] = scale;
    if (scale === 0) continue;
    for (let c = 0; c < cols; c++) {
      const x = data[r * cols + c]! / scale;
      const v = Math.max(-127, Math.min(127, Math.sign(x) * Math.round(Math.abs(x))));
      q[r * cols + c] = v;
      dequant[r * cols + c] = v * scale;
    }
  }
  return { q, scales, dequant };
}
