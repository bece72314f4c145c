import { tf } from './tf.js';
import { hasLinearHook, linear, param, swiglu, type Params } from './layers.js';
import { moeNames, type ModelSpec } from '../../model/spec.js';
import { gpuKernel, runGpuKernel } from './webgpu-kernels.js';
import { expertCombine, expertGather, expertLinear, route } from './webgpu-moe.js';

// Mixtral (and Qwen3-MoE): each block's feed-forward is a top-k routed mixture of SwiGLU experts.

/** Router statistics of one layer, for the auxiliary losses and the utilization metric. */
export interface RouterStats {
  /** Switch-style load-balancing loss: E * sum_e(fraction routed to e * mean router prob of e). */
  balance: tf.Scalar;
  /** Router z-loss: mean squared logsumexp of the router logits. */
  z: tf.Scalar;
  /** Fraction of routed slots that went to each expert [E]. */
  utilization: tf.Tensor1D;
}

/**
 * Layer i's mixture-of-experts on webgpu, with no read back to the host: the top-k choice is a
 * mask made on the device, and so is the routing (webgpu-moe.ts): each expert gathers its tokens,
 * runs its SwiGLU on those rows only, and adds its output back to them weighed by their gates. The
 * same function and gradients as the dispatch below (an unchosen expert's weight gets an exact 0,
 * and the engine skips its update as the other backends do where it has no gradient). Experts with
 * a product of their own (LoRA, an int8 base) run on every token instead, weighed by the gate (0
 * where the token did not choose them).
 */
function moeFfnOnDevice(p: Params, s: ModelSpec, i: number, x: tf.Tensor2D): { y: tf.Tensor2D; stats: RouterStats } {
  const names = moeNames(s, i);
  const n = x.shape[0];
  const logits = linear(x, param(p, names.router));
  const probs = tf.softmax(logits, -1) as tf.Tensor2D;
  const mask = runGpuKernel('LatheTopKMask', [probs], { k: s.topK })[0] as tf.Tensor2D;
  const kept = tf.mul(probs, mask);
  const gates = (s.normTopK === false ? kept : tf.div(kept, tf.sum(kept, -1, true))) as tf.Tensor2D;
  const r = route(mask);
  let y: tf.Tensor2D | undefined;
  for (let e = 0; e < s.experts; e++) {
    const ex = names.expert(e);
    const [wg, wu, wd] = [param(p, ex.gate), param(p, ex.up), param(p, ex.down)];
    const gate = tf.slice(gates, [0, e], [n, 1]) as tf.Tensor2D;
    let part: tf.Tensor2D;
    if ([wg, wu, wd].some(hasLinearHook)) part = tf.mul(swiglu(x, wg, wu, wd), gate) as tf.Tensor2D;
    else {
      const lin = (a: tf.Tensor2D, w: tf.Tensor) => expertLinear(a, w, r, e);
      part = expertCombine(swiglu(expertGather(x, r, e), wg, wu, wd, lin), gate, r, e);
    }
    y = y ? (tf.add(y, part) as tf.Tensor2D) : part;
  }
  return { y: y!, stats: routerStats(s, n, logits, probs, mask) };
}

function routerStats(s: ModelSpec, n: number, logits: tf.Tensor2D, probs: tf.Tensor2D, mask: tf.Tensor2D): RouterStats {
  const fraction = tf.div(tf.sum(mask, 0), n * s.topK) as tf.Tensor1D;
  const meanProb = tf.mean(probs, 0);
  const balance = tf.mul(tf.sum(tf.mul(fraction, meanProb)), s.experts) as tf.Scalar;
  const z = tf.mean(tf.square(tf.logSumExp(logits, -1))) as tf.Scalar;
  return { balance, z, utilization: fraction };
}

/**
 * Layer i's mixture-of-experts on x [N, D]. Routing follows Mixtral: softmax over experts,
 * keep the top k, renormalise (Qwen3-MoE without norm_topk_prob keeps the probabilities as they
 * are). Each expert runs on the tokens routed to it only.
 */
export function moeFfn(p: Params, s: ModelSpec, i: number, x: tf.Tensor2D): { y: tf.Tensor2D; stats: RouterStats } {
  if (gpuKernel('LatheTopKMask')) return moeFfnOnDevice(p, s, i, x);
  const names = moeNames(s, i);
  const n = x.shape[0];
  const logits = linear(x, param(p, names.router));
  const probs = tf.softmax(logits, -1) as tf.Tensor2D;
  // The routing choice is discrete and made outside the tape: the mask is a constant, the kept
  // probabilities carry the gradient.
  const routed = topKRows(probs.dataSync() as Float32Array, n, s.experts, s.topK);
  const maskData = new Float32Array(n * s.experts);
  for (let slot = 0; slot < routed.length; slot++) maskData[Math.floor(slot / s.topK) * s.experts + routed[slot]!] = 1;
  const mask = tf.tensor2d(maskData, [n, s.experts]);
  const kept = tf.mul(probs, mask);
  const gates = (s.normTopK === false ? kept : tf.div(kept, tf.sum(kept, -1, true))) as tf.Tensor2D;
  // Dispatch: each expert runs on its own tokens. Combine: gather every token's k expert outputs
  // back into token order (gather's gradient is a segment sum, which every backend has).
  const outputs: tf.Tensor2D[] = [];
  const slotPos = new Int32Array(n * s.topK);
  let offset = 0;
  for (let e = 0; e < s.experts; e++) {
    const rows: number[] = [];
    for (let slot = 0; slot < n * s.topK; slot++) {
      if (routed[slot] === e) {
        slotPos[slot] = offset + rows.length;
        rows.push(Math.floor(slot / s.topK));
      }
    }
    if (!rows.length) continue;
    offset += rows.length;
    const idx = tf.tensor1d(rows, 'int32');
    const w = names.expert(e);
    const ye = swiglu(tf.gather(x, idx), param(p, w.gate), param(p, w.up), param(p, w.down));
    outputs.push(tf.mul(ye, tf.gather(tf.slice(gates, [0, e], [n, 1]), idx)) as tf.Tensor2D);
  }
  const all = outputs.length === 1 ? outputs[0]! : tf.concat(outputs, 0);
  const y = tf.sum(tf.reshape(tf.gather(all, tf.tensor1d(slotPos, 'int32')), [n, s.topK, s.dim]), 1) as tf.Tensor2D;
  return { y, stats: routerStats(s, n, logits, probs, mask) };
}

/** The k largest entries of each row (ties to the lower index), as expert ids per token slot [n*k]. */
function topKRows(probs: Float32Array, n: number, e: number, k: number): Int32Array {
  const out = new Int32Array(n * k);
  for (let t = 0; t < n; t++) {
    const row = t * e;
    for (let j = 0; j < k; j++) {
      let best = -1;
      for (let c = 0; c < e; c++) {
        let taken = false;
        for (let q = 0; q < j; q++) if (out[t * k + q] === c) taken = true;
        if (!taken && (best < 0 || probs[row + c]! > probs[row + best]!)) best = c;
      }
      out[t * k + j] = best;
    }
  }
  return out;
}
