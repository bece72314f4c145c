export { pretrain, flopsPerToken, type StageContext, type StageResult, type StopSignal } from './pretrain.js';
export { evaluateLoss } from '../eval/loss.js';
export { AdamW, type AdamWConfig } from '../engine/tfjs/optimizer.js';
export { learningRate } from './schedule.js';
export { lmLoss, type LossParts } from '../engine/tfjs/losses.js';
export { type TokenBatch } from '../data/batches.js';
// Post-training stages: one file each; the step machinery they share; rollouts, judges and reward hosting.
export { sft, evaluateSft, prepareSft } from './sft.js';
export { dpo, dpoLoss, evaluatePairs, preparePairs } from './dpo.js';
export { onlineDpo } from './online-dpo.js';
export { grpo, grpoLoss, groupAdvantages } from './grpo.js';
export {
  stepLoop,
  Updater,
  StageFailure,
  ExampleOrder,
  seqBatch,
  tokenLogProbs,
  sequenceLogProbs,
  type PostStageContext,
  type StepConfig,
  type SeqBatch,
} from './stage.js';
export {
  sampleGroup,
  cutAtStop,
  preparePrompts,
  evaluateRollouts,
  RewardJudge,
  ModelJudge,
  openJudge,
  type Completion,
  type RolloutOptions,
  type PromptItem,
  type Judge,
} from './rollout.js';
export { RewardHost, type RewardOutcome, type RewardHostOptions } from './reward.js';
export { resolveBase, modelRunDir, type BaseModelRef } from '../recipe/base.js';
export { loadBase, frozenCopy } from './base.js';
