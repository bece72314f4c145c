// The one place that loads tfjs, so every module shares one engine and the Node banner is silenced once.
const warn = console.warn;
console.warn = (...args: unknown[]) => {
  if (typeof args[0] === 'string' && args[0].includes('tfjs-node')) return;
  warn(...args);
};
import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-wasm';
console.warn = warn;

export { tf };
