import { ModuleHost, type CallErrorKind } from '../eval/module-host.js';

// Reward functions are user modules (JS or TS) named by the recipe: `reward: { module, export }`,
// called as (completion, example) => number | Promise<number>, in their own process (the module
// host, src/eval/module-host.ts): a call that throws, hangs or returns no finite number is counted and
// skipped, and a module that kills its process fails the stage cleanly instead of the trainer.

/** The outcome of one reward call: a finite number, or why there is none. */
export type RewardOutcome = { value: number } | { error: string; kind: CallErrorKind | 'invalid' };

/** Options of {@link RewardHost.open}. */
export interface RewardHostOptions {
  /** The module file, absolute. */
  path: string;
  /** The export to call. */
  export: string;
  timeoutMs: number;
  /** The recipe field that names the module, for messages (e.g. `reward.module`). */
  where: string;
  /** Limit of loading the module, in ms. */
  loadTimeoutMs?: number;
  /** Memory limit of the module's process, in MB. */
  memoryMb?: number;
  /** The recipe allows the module network access (on a worker, only if the worker does too). */
  network?: boolean;
  /** Folders a confined module may read besides itself (the job folder). */
  readable?: string[];
}

/** A reward module in the module host, scoring completions as finite numbers. */
export class RewardHost {
  private constructor(
    private readonly host: ModuleHost,
    private readonly o: RewardHostOptions,
  ) {}

  /** Loads the module in its process; throws a LatheError naming the recipe field when it cannot be used. */
  static async open(o: RewardHostOptions): Promise<RewardHost> {
    const host = await ModuleHost.open({
      path: o.path,
      export: o.export,
      label: `${o.where}: ${o.path}`,
      callTimeoutMs: o.timeoutMs,
      loadTimeoutMs: o.loadTimeoutMs,
      memoryMb: o.memoryMb,
      network: o.network,
      readable: o.readable,
    });
    return new RewardHost(host, o);
  }

  /** `reward.module /path#export`, for messages. */
  get label(): string {
    return `${this.o.where} ${this.o.path}#${this.o.export}`;
  }

  /** Failed calls since the host opened. */
  get errors(): number {
    const e = this.host.errors;
    return e.threw + e.timeout + e.crashed;
  }

  /** Scores one completion; never throws for user-code faults (they come back as `error`). */
  async score(completion: string, example: Record<string, unknown>): Promise<RewardOutcome> {
    const out = await this.host.call(completion, example);
    if ('error' in out) {
      const why =
        out.error === 'timeout'
          ? `${out.message} (${this.o.where.replace(/module$/, 'timeoutMs')})`
          : out.error === 'threw'
            ? `threw ${out.message}`
            : out.message;
      return { error: why, kind: out.error };
    }
    const v = out.value;
    if (typeof v === 'number' && Number.isFinite(v)) return { value: v };
    const got =
      typeof v === 'number'
        ? String(v)
        : v === undefined
          ? 'undefined'
          : `a ${typeof v} (${JSON.stringify(v)?.slice(0, 40)})`;
    return { error: `returned ${got}, not a finite number`, kind: 'invalid' };
  }

  /** Stops the module's process. */
  close(): Promise<void> {
    return this.host.close();
  }
}
