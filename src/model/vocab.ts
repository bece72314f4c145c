import type { ModelSpec } from './spec.js';
import type { Weights } from './weights.js';

// New token ids (Lathe's special tokens added to an imported tokenizer, tokenizer.addTokens in
// continued pre-training) need embedding rows. A new row starts at the mean of the existing rows
// (transformers' resize_token_embeddings with mean_resizing): the model then treats a new token as
// an average one, rather than as a random direction that would perturb its outputs.

/** The embedding (and untied head) rows for `rows` ids, ids in `fresh` reset to the mean of the first `from` rows. */
export function resizeVocab(spec: ModelSpec, weights: Weights, rows: number, fresh: Iterable<number> = []): void {
  const ids = [...fresh];
  for (const name of ['model.embed_tokens.weight', 'lm_head.weight']) {
    const w = weights.get(name);
    if (w) weights.set(name, withRows(w, Math.max(rows, w.shape[0]!), ids));
  }
  spec.vocabSize = Math.max(rows, spec.vocabSize);
}

/** A [rows, dim] matrix grown to `rows`, its new rows and the `reset` rows set to the mean of the old rows. */
function withRows(
  w: { shape: number[]; data: Float32Array },
  rows: number,
  reset: number[],
): { shape: number[]; data: Float32Array } {
  const [old, dim] = w.shape as [number, number];
  const mean = new Float64Array(dim);
  for (let r = 0; r < old; r++) for (let c = 0; c < dim; c++) mean[c]! += w.data[r * dim + c]!;
  const data = new Float32Array(rows * dim);
  data.set(w.data);
  const fill = (r: number) => {
    for (let c = 0; c < dim; c++) data[r * dim + c] = mean[c]! / old;
  };
  for (let r = old; r < rows; r++) fill(r);
  for (const r of reset) if (r < old) fill(r);
  return { shape: [rows, dim], data };
}
