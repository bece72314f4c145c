import { describe, expect, it } from 'vitest';
import { STAGES } from './schema.js';
import { STARTER_STAGES, starterRecipe } from './starters.js';
import { checkRecipe } from './validate.js';

const reward = { module: 'reward.ts', export: 'score' };

describe('starter presets', () => {
  it('cover every stage, in the schema order, and each starter validates, fresh or from a base', () => {
    expect(STARTER_STAGES).toEqual(STAGES);
    for (const stage of STARTER_STAGES) {
      const fresh = starterRecipe({ stage, sources: [{ path: 'data.jsonl' }], reward });
      expect(checkRecipe(fresh).ok, `${stage}: ${JSON.stringify(checkRecipe(fresh))}`).toBe(true);
      if (stage === 'pretrain') continue;
      const based = starterRecipe({ stage, sources: [{ path: 'data.jsonl' }], from: '../runs/base', reward });
      expect(based).toMatchObject({ from: '../runs/base' });
      expect(based).not.toHaveProperty('model');
      expect(checkRecipe(based).ok, stage).toBe(true);
    }
  });
  it('keep rollouts to a quarter of the base context, between 4 and the preset length', () => {
    const grpo = (baseContext?: number) =>
      (starterRecipe({ stage: 'grpo', sources: [], reward, baseContext }).train as { maxNewTokens: number })
        .maxNewTokens;
    expect([grpo(), grpo(64), grpo(8), grpo(4096)]).toEqual([32, 16, 4, 32]);
    const judged = starterRecipe({ stage: 'online-dpo', sources: [], judgeModel: 'runs/judge' });
    expect(judged).toMatchObject({ judge: { model: 'runs/judge' } });
    expect(() => starterRecipe({ stage: 'grpo', sources: [] })).toThrow(/grpo: needs a reward/);
  });
});
