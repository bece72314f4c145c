import type { RopeScaling } from './spec.js';

/**
 * RoPE's inverse frequencies [headDim / 2], rounded to float32 step by step as transformers
 * computes them in fp32 (`default`, and the `linear` and `llama3` scalings of modeling_rope_utils),
 * so the rotary tables of both engines match HF's.
 */
export function ropeInvFreq(headDim: number, theta: number, scaling?: RopeScaling): Float32Array {
  const f = Math.fround;
  const half = headDim / 2;
  const inv = new Float32Array(half);
  for (let i = 0; i < half; i++) inv[i] = f(1 / Math.pow(theta, (2 * i) / headDim));
  if (!scaling) return inv;
  if (scaling.type === 'linear') {
    for (let i = 0; i < half; i++) inv[i] = f(inv[i]! / scaling.factor);
    return inv;
  }
  // llama3: long wavelengths divided by factor, short ones kept, the band between blended.
  const { factor, lowFreqFactor: low, highFreqFactor: high, originalContext: old } = scaling;
  const lowWavelen = old / low;
  const highWavelen = old / high;
  for (let i = 0; i < half; i++) {
    const x = inv[i]!;
    const wavelen = f(f(2 * Math.PI) / x);
    let y = wavelen > lowWavelen ? f(x / factor) : x;
    if (!(wavelen < highWavelen) && !(wavelen > lowWavelen)) {
      const smooth = f(f(f(old / wavelen) - low) / (high - low));
      y = f(f(f(f(1 - smooth) * y) / factor) + f(smooth * y));
    }
    inv[i] = y;
  }
  return inv;
}
