// The Jupyter wire protocol (v5.3): signed multipart messages over ZeroMQ.
import { createHmac, randomUUID, timingSafeEqual } from 'node:crypto';

/** Protocol version this kernel speaks. */
export const PROTOCOL_VERSION = '5.3';

const DELIMITER = '<IDS|MSG>';

/** A message header. */
export interface Header {
  msg_id: string;
  session: string;
  username: string;
  date: string;
  msg_type: string;
  version: string;
}

/** A decoded message, with the routing identities it came with. */
export interface Message<C = Record<string, unknown>> {
  identities: Buffer[];
  header: Header;
  parent_header: Partial<Header>;
  metadata: Record<string, unknown>;
  content: C;
  buffers: Buffer[];
}

/** Signs and checks messages with the connection file's key (HMAC-SHA256, or none when the key is empty). */
export class Signer {
  /** @param key the connection file's key (empty: unsigned) @param scheme its signature_scheme */
  constructor(
    private readonly key: string,
    private readonly scheme = 'hmac-sha256',
  ) {
    if (key && scheme !== 'hmac-sha256') throw new Error(`unsupported signature scheme ${scheme}`);
  }

  /** The hex signature of the four JSON frames. */
  sign(frames: (string | Buffer)[]): string {
    if (!this.key) return '';
    const h = createHmac('sha256', this.key);
    for (const f of frames) h.update(f);
    return h.digest('hex');
  }

  /** Parses raw frames; throws on a bad signature or shape. */
  decode(frames: Buffer[]): Message {
    const at = frames.findIndex((f) => f.toString() === DELIMITER);
    if (at < 0 || frames.length < at + 6) throw new Error('malformed message: no delimiter or missing frames');
    const signature = frames[at + 1]!.toString();
    const body = frames.slice(at + 2, at + 6);
    if (this.key) {
      const want = Buffer.from(this.sign(body));
      const got = Buffer.from(signature);
      if (want.length !== got.length || !timingSafeEqual(want, got)) throw new Error('message signature mismatch');
    }
    const [header, parent, metadata, content] = body.map((b) => JSON.parse(b.toString() || '{}'));
    return {
      identities: frames.slice(0, at),
      header,
      parent_header: parent,
      metadata,
      content,
      buffers: frames.slice(at + 6),
    };
  }

  /** Builds signed frames for a message. */
  encode(msg: Omit<Message, 'buffers'> & { buffers?: Buffer[] }): (string | Buffer)[] {
    const body = [
      JSON.stringify(msg.header),
      JSON.stringify(msg.parent_header),
      JSON.stringify(msg.metadata),
      JSON.stringify(msg.content),
    ];
    return [...msg.identities, DELIMITER, this.sign(body), ...body, ...(msg.buffers ?? [])];
  }
}

/** A new header for a message of `type`, in the session of `parent` (or the kernel's own). */
export function newHeader(type: string, session: string, username = 'kernel'): Header {
  return {
    msg_id: randomUUID(),
    session,
    username,
    date: new Date().toISOString(),
    msg_type: type,
    version: PROTOCOL_VERSION,
  };
}
