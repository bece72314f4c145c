import { describe, expect, it } from 'vitest';
import { modelSpec } from './spec.js';
import { ModelSchema } from '../recipe/schema.js';
import { initWeights } from './weights.js';
import { resizeVocab } from './vocab.js';

describe('resizeVocab', () => {
  it('adds rows at the mean of the old rows, resets the named ids, and grows the untied head too', () => {
    const spec = modelSpec(ModelSchema.parse({ dim: 8, layers: 1, heads: 2, tieEmbeddings: false }), 20);
    const w = initWeights(spec, 1);
    const before = {
      'model.embed_tokens.weight': w.get('model.embed_tokens.weight')!.data.slice(),
      'lm_head.weight': w.get('lm_head.weight')!.data.slice(),
    };
    resizeVocab(spec, w, 23, [21, 5]);
    expect(spec.vocabSize).toBe(23);
    for (const name of ['model.embed_tokens.weight', 'lm_head.weight'] as const) {
      const m = w.get(name)!;
      expect(m.shape).toEqual([23, 8]);
      const mean = Array.from({ length: 8 }, (_, c) => {
        let s = 0;
        for (let r = 0; r < 20; r++) s += before[name][r * 8 + c]!;
        return s / 20;
      });
      // Ids 20..22 are new, 5 was reset; the others keep their rows.
      for (const r of [5, 20, 21, 22]) for (let c = 0; c < 8; c++) expect(m.data[r * 8 + c]).toBeCloseTo(mean[c]!, 6);
      expect(Array.from(m.data.subarray(0, 40))).toEqual(Array.from(before[name].subarray(0, 40)));
      expect(Array.from(m.data.subarray(48, 160))).toEqual(Array.from(before[name].subarray(48, 160)));
    }
  });
});
