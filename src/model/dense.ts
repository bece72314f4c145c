import type { tf } from '../backend/tf.js';
import { param, swiglu, type Params } from './layers.js';
import type { ModelSpec, ParamSpec } from './spec.js';

// Llama: the feed-forward of each block is one SwiGLU MLP.

/** The dense MLP parameters of every layer, with HF Llama names. */
export function denseFfnParams(s: ModelSpec): ParamSpec[] {
  const out: ParamSpec[] = [];
  for (let i = 0; i < s.layers; i++) {
    const p = `model.layers.${i}.mlp`;
    out.push(
      { name: `${p}.gate_proj.weight`, shape: [s.ffnDim, s.dim], init: 'normal', decay: true },
      { name: `${p}.up_proj.weight`, shape: [s.ffnDim, s.dim], init: 'normal', decay: true },
      { name: `${p}.down_proj.weight`, shape: [s.dim, s.ffnDim], init: 'scaled', decay: true },
    );
  }
  return out;
}

/** Layer i's feed-forward on x [N, D]. */
export function denseFfn(p: Params, i: number, x: tf.Tensor2D): tf.Tensor2D {
  const m = `model.layers.${i}.mlp`;
  return swiglu(
    x,
    param(p, `${m}.gate_proj.weight`),
    param(p, `${m}.up_proj.weight`),
    param(p, `${m}.down_proj.weight`),
  );
}
