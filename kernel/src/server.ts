// ZeroMQ sockets of a kernel: shell, control, stdin (ROUTER), iopub (PUB), heartbeat (REP).
import { randomUUID } from 'node:crypto';
import * as zmq from 'zeromq';
import { newHeader, Signer, type Message } from './wire.js';

/** The connection file Jupyter hands a kernel. */
export interface ConnectionInfo {
  transport: string;
  ip: string;
  shell_port: number;
  iopub_port: number;
  stdin_port: number;
  control_port: number;
  hb_port: number;
  key: string;
  signature_scheme: string;
}

/** Channels that carry requests. */
export type RequestChannel = 'shell' | 'control';

// zeromq 6 allows one send at a time per socket; sends queue here, in order.
class Outbox {
  private tail: Promise<void> = Promise.resolve();
  constructor(private readonly socket: zmq.Writable) {}
  send(frames: (string | Buffer)[]): Promise<void> {
    this.tail = this.tail.then(() => this.socket.send(frames)).catch(() => undefined);
    return this.tail;
  }
  drained(): Promise<void> {
    return this.tail;
  }
}

/** Binds the sockets and moves signed messages in and out. */
export class KernelServer {
  /** This kernel's session id, for messages it sends on its own. */
  readonly session = randomUUID();
  private readonly signer: Signer;
  private readonly shell = new zmq.Router();
  private readonly control = new zmq.Router();
  private readonly stdin = new zmq.Router();
  private readonly iopub = new zmq.Publisher();
  private readonly hb = new zmq.Reply();
  private readonly out = new Map<string, Outbox>();

  /** @param onRequest handles each decoded request; its failures go to `log`. */
  constructor(
    private readonly conn: ConnectionInfo,
    private readonly onRequest: (channel: RequestChannel, msg: Message) => void,
    private readonly log: (m: string) => void,
  ) {
    this.signer = new Signer(conn.key, conn.signature_scheme);
    this.out.set('shell', new Outbox(this.shell));
    this.out.set('control', new Outbox(this.control));
    this.out.set('iopub', new Outbox(this.iopub));
  }

  /** Binds every socket and starts reading. */
  async start(): Promise<void> {
    const addr = (port: number) =>
      `${this.conn.transport}://${this.conn.ip}${this.conn.transport === 'ipc' ? '-' : ':'}${port}`;
    // Lingering sends must not hold the process open at shutdown.
    for (const s of [this.shell, this.control, this.stdin, this.iopub, this.hb]) s.linger = 0;
    await Promise.all([
      this.shell.bind(addr(this.conn.shell_port)),
      this.control.bind(addr(this.conn.control_port)),
      this.stdin.bind(addr(this.conn.stdin_port)),
      this.iopub.bind(addr(this.conn.iopub_port)),
      this.hb.bind(addr(this.conn.hb_port)),
    ]);
    void this.read(this.shell, 'shell');
    void this.read(this.control, 'control');
    void (async () => {
      for await (const frames of this.hb) await this.hb.send(frames).catch(() => undefined);
    })().catch(() => undefined);
  }

  private async read(sock: zmq.Router, channel: RequestChannel): Promise<void> {
    try {
      for await (const frames of sock) {
        let msg: Message;
        try {
          msg = this.signer.decode(frames);
        } catch (e) {
          this.log(`dropped a ${channel} message: ${(e as Error).message}`);
          continue;
        }
        try {
          this.onRequest(channel, msg);
        } catch (e) {
          this.log(`${channel} ${msg.header.msg_type} failed: ${(e as Error).stack}`);
        }
      }
    } catch (e) {
      if (!sock.closed) this.log(`${channel} socket failed: ${(e as Error).message}`);
    }
  }

  /** Replies to a request on the channel it came from. */
  reply(
    channel: RequestChannel,
    request: Message,
    type: string,
    content: Record<string, unknown>,
    metadata: Record<string, unknown> = {},
  ): Promise<void> {
    const header = newHeader(type, request.header.session, request.header.username);
    return this.out.get(channel)!.send(
      this.signer.encode({
        identities: request.identities,
        header,
        parent_header: request.header,
        metadata,
        content,
      }),
    );
  }

  /** Publishes on iopub; `parent` ties the message to the request that caused it. */
  publish(
    type: string,
    content: Record<string, unknown>,
    parent?: Message,
    metadata: Record<string, unknown> = {},
  ): Promise<void> {
    const header = newHeader(type, parent?.header.session ?? this.session, parent?.header.username ?? 'kernel');
    const topic = Buffer.from(`kernel.${this.session}.${type}`);
    return this.out
      .get('iopub')!
      .send(
        this.signer.encode({ identities: [topic], header, parent_header: parent?.header ?? {}, metadata, content }),
      );
  }

  /** Resolves once everything published so far has been handed to ZeroMQ. */
  iopubDrained(): Promise<void> {
    return this.out.get('iopub')!.drained();
  }

  /** Closes every socket. */
  close(): void {
    for (const s of [this.shell, this.control, this.stdin, this.iopub, this.hb]) if (!s.closed) s.close();
  }
}
