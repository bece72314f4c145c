import type { Run } from './run.js';

// Runs started in this process, so a host (the notebook kernel) can show each one as it starts.
const active = new Set<Run>();
const listeners = new Set<(run: Run) => void>();

/** Registers a run as live until it ends, and tells the listeners. */
export function registerLive(run: Run): void {
  active.add(run);
  void run.done.finally(() => active.delete(run)).catch(() => {});
  for (const l of listeners) l(run);
}

/** Runs live in this process now. */
export function liveRuns(): Run[] {
  return [...active];
}

/** Calls fn whenever a run starts in this process; returns a function that unsubscribes. */
export function onRunStart(fn: (run: Run) => void): () => void {
  listeners.add(fn);
  return () => listeners.delete(fn);
}
