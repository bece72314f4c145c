// The Jupyter comm protocol (comm_open, comm_msg, comm_close, comm_info_request), which tslab lacks (tslab#23).
import { randomUUID } from 'node:crypto';
import type { Message } from './wire.js';

/** Publishes a comm message on iopub, in reply to `parent`. */
export type CommSend = (
  type: 'comm_open' | 'comm_msg' | 'comm_close',
  content: Record<string, unknown>,
  parent?: Message,
) => void;

/** One end of a comm, kernel side. */
export class Comm {
  private msgHandlers = new Set<(data: Record<string, unknown>, msg: Message) => void>();
  private closeHandlers = new Set<(data: Record<string, unknown>) => void>();
  /** Set once closed by either side. */
  closed = false;

  /** @internal CommManager creates comms. */
  constructor(
    readonly id: string,
    readonly target: string,
    private readonly sendRaw: CommSend,
    private readonly forget: (id: string) => void,
  ) {}

  /** Sends data to the frontend; `parent` is the message it answers, if any. */
  send(data: Record<string, unknown>, parent?: Message): void {
    if (!this.closed) this.sendRaw('comm_msg', { comm_id: this.id, data }, parent);
  }

  /** Closes the comm from the kernel side. */
  close(data: Record<string, unknown> = {}, parent?: Message): void {
    if (this.closed) return;
    this.sendRaw('comm_close', { comm_id: this.id, data }, parent);
    this.closedByPeer(data);
  }

  /** Calls fn for each message from the frontend. */
  onMsg(fn: (data: Record<string, unknown>, msg: Message) => void): void {
    this.msgHandlers.add(fn);
  }

  /** Calls fn when the comm closes (from either side). */
  onClose(fn: (data: Record<string, unknown>) => void): void {
    this.closeHandlers.add(fn);
  }

  /** @internal */
  received(data: Record<string, unknown>, msg: Message): void {
    for (const h of this.msgHandlers) h(data, msg);
  }

  /** @internal */
  closedByPeer(data: Record<string, unknown>): void {
    if (this.closed) return;
    this.closed = true;
    this.forget(this.id);
    for (const h of this.closeHandlers) h(data);
  }
}

/** Called when the frontend opens a comm to a registered target. */
export type CommTarget = (comm: Comm, data: Record<string, unknown>, msg: Message) => void;

/** Tracks open comms and the targets the frontend may open. */
export class CommManager {
  private targets = new Map<string, CommTarget>();
  private comms = new Map<string, Comm>();

  /** @param send publishes comm messages on iopub. @param warn reports a handler's failure. */
  constructor(
    private readonly send: CommSend,
    private readonly warn: (m: string) => void = () => {},
  ) {}

  /** Registers (or replaces) a target. */
  registerTarget(name: string, target: CommTarget): void {
    this.targets.set(name, target);
  }

  /** Opens a comm from the kernel side. */
  open(target: string, data: Record<string, unknown> = {}, parent?: Message): Comm {
    const comm = new Comm(randomUUID(), target, this.send, (id) => this.comms.delete(id));
    this.comms.set(comm.id, comm);
    this.send('comm_open', { comm_id: comm.id, target_name: target, data }, parent);
    return comm;
  }

  /** Handles comm_open from the frontend; an unknown target is answered with comm_close, as the spec says. */
  handleOpen(msg: Message): void {
    const {
      comm_id,
      target_name,
      data = {},
    } = msg.content as { comm_id: string; target_name: string; data?: Record<string, unknown> };
    const target = this.targets.get(target_name);
    if (!target) {
      this.send('comm_close', { comm_id, data: { error: `no comm target ${target_name}` } }, msg);
      return;
    }
    const comm = new Comm(comm_id, target_name, this.send, (id) => this.comms.delete(id));
    this.comms.set(comm_id, comm);
    try {
      target(comm, data, msg);
    } catch (e) {
      this.warn(`comm target ${target_name} failed: ${(e as Error).message}`);
    }
  }

  /** Handles comm_msg from the frontend. */
  handleMsg(msg: Message): void {
    const { comm_id, data = {} } = msg.content as { comm_id: string; data?: Record<string, unknown> };
    const comm = this.comms.get(comm_id);
    if (!comm) return this.warn(`comm_msg for unknown comm ${comm_id}`);
    try {
      comm.received(data, msg);
    } catch (e) {
      this.warn(`comm ${comm.target} failed: ${(e as Error).message}`);
    }
  }

  /** Handles comm_close from the frontend. */
  handleClose(msg: Message): void {
    const { comm_id, data = {} } = msg.content as { comm_id: string; data?: Record<string, unknown> };
    this.comms.get(comm_id)?.closedByPeer(data);
  }

  /** The comm_info_reply content: open comms, optionally of one target. */
  info(target?: string): { comms: Record<string, { target_name: string }> } {
    const comms: Record<string, { target_name: string }> = {};
    for (const c of this.comms.values()) if (!target || c.target === target) comms[c.id] = { target_name: c.target };
    return { comms };
  }
}
