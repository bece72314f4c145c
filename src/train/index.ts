export { pretrain, evaluateLoss, flopsPerToken, type StageContext, type StageResult, type StopSignal } from './pretrain.js';
export { AdamW, type AdamWConfig } from './optimizer.js';
export { learningRate } from './schedule.js';
export { lmLoss, type TokenBatch, type LossParts } from './loss.js';
