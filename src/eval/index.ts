export { heldOut } from './heldout.js';
export { evaluateLoss } from '../train/pretrain.js';
