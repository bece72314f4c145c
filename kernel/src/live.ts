// A run's display kept current in place (display_id + update_display_data), a few times a second.
import type * as Lathe from 'lathe';
import { runBundle, type MimeBundle, type RunLike } from './display.js';

/** Sends a bundle: the first time as display_data, then as update_display_data of the same id. */
export type DisplaySink = (bundle: MimeBundle, displayId: string, update: boolean) => void;

/** Options of a live display. */
export interface LiveOptions {
  /** Least time between two updates (ms); the final state is always sent. Default 250 (4 a second). */
  intervalMs?: number;
  /** Clock, for tests. */
  now?: () => number;
}

let counter = 0;

/** Shows a run and updates it as metrics and events arrive, throttled; resolves when the final state is sent. */
export class LiveRunDisplay {
  readonly displayId: string;
  /** Updates sent so far (the first display_data not counted). */
  updates = 0;
  private last = 0;
  private timer?: NodeJS.Timeout;
  private unsubscribe: (() => void)[] = [];
  private closed = false;
  private readonly interval: number;
  private readonly now: () => number;
  /** Resolves once the run has ended and its complete final state was sent. */
  readonly finished: Promise<void>;

  /** Sends the first display at once and follows the run until it ends. */
  constructor(
    private readonly run: RunLike & Pick<Lathe.Run, 'onMetric' | 'onEvent' | 'done'>,
    private readonly sink: DisplaySink,
    opts: LiveOptions = {},
  ) {
    this.interval = opts.intervalMs ?? 250;
    this.now = opts.now ?? (() => performance.now());
    this.displayId = `lathe-run-${run.id}-${++counter}`;
    this.sink(runBundle(run), this.displayId, false);
    this.last = this.now();
    this.unsubscribe.push(
      run.onMetric(() => this.changed()),
      run.onEvent(() => this.changed()),
    );
    this.finished = run.done.then(
      () => this.close(),
      () => this.close(),
    );
  }

  private changed(): void {
    if (this.closed || this.timer) return;
    const wait = this.last + this.interval - this.now();
    if (wait <= 0) this.flush();
    else this.timer = setTimeout(() => this.flush(), wait);
  }

  private flush(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    this.last = this.now();
    this.updates++;
    this.sink(runBundle(this.run), this.displayId, true);
  }

  /** Stops following; sends the final state unless `quiet`. */
  close(quiet = false): void {
    if (this.closed) return;
    this.closed = true;
    for (const u of this.unsubscribe) u();
    clearTimeout(this.timer);
    this.timer = undefined;
    if (!quiet) this.flush();
  }
}

/** Whether a bundle's run snapshot already holds `step` (used by tests and the comm). */
export function snapshotStep(bundle: MimeBundle): number {
  const run = bundle['application/vnd.lathe.run+json'] as { step?: number } | undefined;
  return run?.step ?? 0;
}
