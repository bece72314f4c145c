import type { ResolvedRecipe } from '../recipe/schema.js';
import { dpo } from './dpo.js';
import { grpo } from './grpo.js';
import type { StageContext, StageResult } from './loop.js';
import { onlineDpo } from './online-dpo.js';
import { pretrain } from './pretrain.js';
import { sft } from './sft.js';

type Stage = ResolvedRecipe['stage'];

/** Every stage, by the recipe's `stage`: the function that runs it on the step loop. */
export const STAGE_RUNNERS: {
  [S in Stage]: (ctx: StageContext<Extract<ResolvedRecipe, { stage: S }>>) => Promise<StageResult>;
} = {
  pretrain,
  sft,
  dpo,
  'online-dpo': onlineDpo,
  grpo,
};
