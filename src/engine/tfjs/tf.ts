// The one place that loads tfjs, so every module shares one engine.
import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-wasm';

/** Silences the cpu backend's one-time "install tfjs-node" banner: that package cannot install here. */
export function quietCpuBanner(): void {
  const cpu = tf.findBackend('cpu') as unknown as { firstUse?: boolean } | null;
  if (cpu) cpu.firstUse = false;
}

export { tf };
