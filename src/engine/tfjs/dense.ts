import type { tf } from './tf.js';
import { param, swiglu, type Params } from './layers.js';

// Llama: the feed-forward of each block is one SwiGLU MLP.

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
