/** Learning rate at a 1-based step: linear warmup to lr, then cosine decay to minLr at the last step. */
export function learningRate(
  step: number,
  o: { lr: number; minLr: number; warmupSteps: number; steps: number },
): number {
  if (o.warmupSteps > 0 && step <= o.warmupSteps) return (o.lr * step) / o.warmupSteps;
  const span = Math.max(1, o.steps - o.warmupSteps);
  const progress = Math.min(1, (step - o.warmupSteps) / span);
  return o.minLr + 0.5 * (o.lr - o.minLr) * (1 + Math.cos(Math.PI * progress));
}
