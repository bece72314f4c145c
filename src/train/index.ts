// The `train` namespace: the step loop, one file per stage, rollouts, judges and reward hosting.
export {
  stepLoop,
  optimize,
  stepOn,
  StageFailure,
  type StageContext,
  type StageResult,
  type StopSignal,
  type StepConfig,
} from './loop.js';
export { STAGE_RUNNERS } from './stages.js';
export { pretrain } from './pretrain.js';
export { sft, evaluateSft, prepareSft } from './sft.js';
export { dpo, evaluatePairs, preparePairs } from './dpo.js';
export { onlineDpo } from './online-dpo.js';
export { grpo, groupAdvantages } from './grpo.js';
export { ExampleOrder, seqBatch, type SeqBatch } from './batch.js';
export { learningRate } from './schedule.js';
export { evaluateLoss } from '../eval/loss.js';
export { flopsPerToken } from '../model/spec.js';
export { AdamW, type AdamWConfig } from '../engine/tfjs/optimizer.js';
export { lmLoss, dpoLoss, policyGradientLoss, type LossParts } from '../engine/tfjs/losses.js';
export { type TokenBatch } from '../data/batches.js';
export {
  sampleGroup,
  cutAtStop,
  preparePrompts,
  evaluateRollouts,
  RewardJudge,
  ModelJudge,
  GraderJudge,
  openJudge,
  type Completion,
  type RolloutOptions,
  type PromptItem,
  type Judge,
} from './rollout.js';
export { RewardHost, type RewardOutcome, type RewardHostOptions } from './reward.js';
export { resolveBase, modelRunDir, type BaseModelRef } from '../recipe/base.js';
export { loadBase } from '../engine/open.js';
/** Synthetic chat data from a teacher (`lathe data synth`). */
export { synthesize, type SynthCounts, type SynthLock, type SynthOptions } from './synth.js';
