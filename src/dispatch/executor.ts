import type { AnyLock } from '../recipe/lock.js';
import type { Run } from '../runs/run.js';

/** Options for starting a run on an executor. */
export interface StartOptions {
  /** Run directory to create (default: runs/<name>-<id>). */
  out?: string;
  /** Stop as if interrupted after this step (a checkpoint is written). */
  stopAfter?: number;
  /** Progress of data preparation, for progress bars. */
  onNotice?: (message: string) => void;
}

/** Where a run executes: in this process, or on a worker. Small on purpose (tslab's executor style). */
export interface Executor {
  readonly name: string;
  /** Starts a locked recipe (a stage or a pipeline); the Run streams metrics while it trains. */
  start(lock: AnyLock, opts: StartOptions): Promise<Run>;
  /** Continues a run from its last checkpoint. */
  resume(runDir: string, opts?: Omit<StartOptions, 'out'>): Promise<Run>;
}
