// The browser's end of the `lathe.runs` comm to one kernel: its runs, their last metrics, and who
// follows which run. The messages are declared once, in the library (src/rooms/runs-comm.ts); what
// arrives is checked there, and a malformed message is logged and dropped.
import type { Kernel, KernelMessage } from '@jupyterlab/services';
import {
  parseKernelMessage,
  RUNS_TARGET,
  type RunInfo,
  type RunsFrontendMessage,
  type RunsKernelMessage,
} from '../../dist/src/rooms/runs-comm.js';
import type { MetricLine } from './chart';

/** Receives a followed run's messages (snapshot, metric, event, done, and errors about it). */
export type RunListener = (msg: RunsKernelMessage) => void;

/** What this model needs of a kernel connection (all of it, in the browser; a fake, in tests). */
export type RunsKernel = Pick<Kernel.IKernelConnection, 'id' | 'createComm'>;

/** One `lathe.runs` comm to one kernel: its runs, their last metrics, and followers by run id. */
export class KernelRuns {
  /** The kernel's runs by id, as it last described them. */
  readonly infos = new Map<string, RunInfo>();
  /** Each run's last metrics line. */
  readonly last = new Map<string, MetricLine>();
  /** Epoch ms each run started (from its `started` event, else when first seen). */
  readonly started = new Map<string, number>();
  private readonly followers = new Map<string, Set<RunListener>>();
  private readonly comm: Kernel.IComm;

  /** Opens the comm; `changed` is called after every message, to re-render. */
  constructor(
    readonly kernel: RunsKernel,
    private readonly changed: () => void,
  ) {
    this.comm = kernel.createComm(RUNS_TARGET);
    this.comm.onMsg = (msg: KernelMessage.ICommMsgMsg) => this.receive(msg.content.data);
    this.comm.open({});
  }

  /** Handles one message from the kernel; a malformed one is logged (naming the field) and dropped. */
  receive(data: unknown): void {
    const parsed = parseKernelMessage(data);
    if (!parsed.ok) {
      console.error(`${parsed.error} (kernel ${this.kernel.id})`);
      return;
    }
    const d = parsed.message;
    switch (d.type) {
      case 'runs':
        for (const r of d.runs) this.add(r);
        break;
      case 'started':
        this.add(d.run);
        break;
      case 'snapshot': {
        const t = d.events.find((e) => e.type === 'started')?.time;
        if (t) this.started.set(d.id, Date.parse(t));
        const m = d.metrics.at(-1);
        if (m) this.last.set(d.id, m);
        this.infos.set(d.id, d.run);
        break;
      }
      case 'metric':
        this.last.set(d.id, d.metric);
        this.bump(d.id, { step: d.metric.step });
        break;
      case 'done':
        this.infos.set(d.id, d.run);
        break;
      case 'error':
        console.warn(`lathe.runs (kernel ${this.kernel.id}): ${d.message}`);
        break;
    }
    const id = 'id' in d ? d.id : undefined;
    if (id) for (const f of this.followers.get(id) ?? []) f(d);
    this.changed();
  }

  private send(msg: RunsFrontendMessage): void {
    this.comm.send({ ...msg });
  }

  private add(r: RunInfo): void {
    const known = this.infos.has(r.id);
    this.infos.set(r.id, r);
    if (!this.started.has(r.id)) this.started.set(r.id, Date.now());
    // Follow live runs so the panel sees their steps; the first follow also brings the start time.
    if (r.live && !known) this.send({ type: 'follow', id: r.id });
  }

  private bump(id: string, p: Partial<RunInfo>): void {
    const i = this.infos.get(id);
    if (i) this.infos.set(id, { ...i, ...p });
  }

  /** Streams one run's messages to `fn` until the returned function is called. */
  follow(id: string, fn: RunListener): () => void {
    let set = this.followers.get(id);
    if (!set) this.followers.set(id, (set = new Set()));
    set.add(fn);
    this.send({ type: 'follow', id });
    return () => set!.delete(fn);
  }

  /** Cancels a run; `by` is who asked, recorded in the run's room and events. */
  cancel(id: string, by: string): void {
    this.send({ type: 'cancel', id, by });
  }

  /** Closes the comm (the kernel connection is the caller's). */
  dispose(): void {
    if (!this.comm.isDisposed) this.comm.close();
  }
}
