import { Rng } from '../random.js';
import type { Tokenizer } from '../tokenizer/index.js';
import type { TokenBatch } from './batches.js';
import type { SamplerState } from './batches.js';
import type { Doc } from './doc.js';
import { validateMessages, validateTools, type ChatMessage } from './messages.js';

// SFT examples: chats rendered with the tokenizer's chat template, a loss mask on assistant tokens,
// and packing of whole conversations into context windows.

/** One tokenized SFT example: ids and the loss mask (1 = a trained token). */
export interface SftExample {
  ids: number[];
  mask: number[];
}

/**
 * Checks a chat's roles: optional system messages first, then user and assistant turns in
 * alternation starting with user. An assistant message with tool_calls is answered by one tool
 * message per call (in any order; a tool_call_id must name one of the calls), then the assistant
 * speaks again. A chat ends with an assistant turn (endWith 'assistant'), or where the assistant
 * speaks next (endWith 'user': after a user turn or the last tool result). Returns a reason or undefined.
 */
export function checkRoles(
  messages: readonly ChatMessage[],
  opts: { endWith: 'assistant' | 'user' } = { endWith: 'assistant' },
): string | undefined {
  let i = 0;
  while (i < messages.length && messages[i]!.role === 'system') i++;
  if (i === messages.length) return 'messages has no user or assistant turn';
  let expect: 'user' | 'assistant' | 'tool' = 'user';
  // The assistant message whose tool calls are being answered, and the call ids not answered yet.
  let caller = -1;
  let unanswered: (string | undefined)[] = [];
  for (; i < messages.length; i++) {
    const m = messages[i]!;
    if (expect === 'tool' && m.role !== 'tool')
      return `messages[${i}]: messages[${caller}] made ${count(messages[caller]!.tool_calls!.length, 'tool call')}, but only ${count(messages[caller]!.tool_calls!.length - unanswered.length, 'tool result')} follows it; add a tool message for each call`;
    if (m.role === 'tool') {
      if (caller < 0 || !unanswered.length) {
        const prev = messages[i - 1]?.role;
        const where =
          caller >= 0 ? 'here' : prev ? `after ${prev === 'assistant' ? 'an' : 'a'} ${prev} message` : 'first';
        return `messages[${i}].role "tool" is not supported ${where}: each tool result answers one of the tool_calls of the assistant message before it${caller < 0 ? '' : `, and messages[${caller}]'s calls are all answered`}`;
      }
      const id = m.tool_call_id;
      const k = id === undefined ? 0 : unanswered.indexOf(id);
      if (k < 0)
        return `messages[${i}].tool_call_id ${JSON.stringify(id)} names no unanswered call of messages[${caller}] (ids: ${unanswered.map((x) => JSON.stringify(x ?? null)).join(', ')})`;
      unanswered.splice(k, 1);
      expect = unanswered.length ? 'tool' : 'assistant';
      continue;
    }
    if (m.role === 'system') return `messages[${i}]: a system message must come before the first user message`;
    if (m.role !== expect)
      return `messages[${i}].role is "${m.role}" where "${expect}" is expected: roles out of order (system first, then user and assistant alternating, starting with user)`;
    if (m.role === 'assistant' && !m.content.trim() && !m.tool_calls?.length)
      return `messages[${i}]: empty assistant message`;
    if (m.role === 'assistant' && m.tool_calls?.length) {
      caller = i;
      unanswered = m.tool_calls.map((c) => c.id);
      expect = 'tool';
    } else {
      caller = -1;
      expect = expect === 'user' ? 'assistant' : 'user';
    }
  }
  const last = messages.at(-1)!;
  if (opts.endWith === 'assistant') {
    if (last.role !== 'assistant') return `messages must end with an assistant message, not ${last.role}`;
  } else if (expect !== 'assistant') {
    if (expect === 'tool')
      return `messages must end where the assistant speaks next, but messages[${caller}] has ${count(unanswered.length, 'unanswered tool call')}`;
    return `messages must end with a user message (or the tool results the assistant waits for), not ${last.role}`;
  }
  return undefined;
}

const count = (n: number, what: string): string => `${n} ${what}${n === 1 ? '' : 's'}`;

/** A chat doc or a {prompt, completion} row as an SFT example; a reason string when malformed. */
export function sftExample(doc: Doc, tokenizer: Tokenizer, assistantOnly: boolean): SftExample | string {
  const row = doc.row ?? {};
  let ex: SftExample;
  if (doc.messages) {
    const why = checkRoles(doc.messages);
    if (why) return why;
    if (assistantOnly && !doc.messages.some((m) => m.role === 'assistant' && m.weight !== 0))
      return 'every assistant message has weight 0; nothing to train on';
    const tools = validateTools(row.tools);
    if (typeof tools === 'string') return tools;
    ex = tokenizer.renderChat(doc.messages, { tools });
  } else if (row.prompt !== undefined || row.completion !== undefined) {
    if (row.tools !== undefined)
      return 'tools are rendered by the chat template: write the row as "messages" to use them, not "prompt" and "completion"';
    for (const k of ['prompt', 'completion'] as const) {
      if (row[k] === undefined) return `missing field "${k}"`;
      if (typeof row[k] !== 'string')
        return `field "${k}" must be a string, got ${Array.isArray(row[k]) ? 'array' : typeof row[k]} (chat rows use "messages")`;
    }
    if (!(row.completion as string).trim()) return 'completion is empty';
    const p = [tokenizer.special.bos, ...tokenizer.encode(row.prompt as string)];
    const c = [...tokenizer.encode(row.completion as string), tokenizer.special.eos];
    ex = { ids: [...p, ...c], mask: [...p.map(() => 0), ...c.map(() => 1)] };
  } else {
    const keys = Object.keys(row);
    return `expected "messages" (a chat) or "prompt" and "completion"; fields present: ${keys.length ? keys.join(', ') : 'none'}`;
  }
  if (!assistantOnly) ex = { ids: ex.ids, mask: ex.ids.map((_, i) => (i === 0 ? 0 : 1)) };
  return ex;
}

/** Cuts an example to `max` tokens; reports whether it was cut. */
export function fitExample(ex: SftExample, max: number): { ex: SftExample; truncated: boolean } {
  if (ex.ids.length <= max) return { ex, truncated: false };
  return { ex: { ids: ex.ids.slice(0, max), mask: ex.mask.slice(0, max) }, truncated: true };
}

/**
 * Packs examples into rows of seq+1 tokens: whole examples, greedily, in a seeded per-epoch order;
 * the rest of a row is padding with weight 0. Inputs are tokens [0, seq), targets [1, seq], and a
 * target counts when its mask is 1. The order position (epoch, index) is the checkpointed state.
 */
export class SftSampler {
  private state: { epoch: number; index: number };
  private perm?: Uint32Array;
  private permEpoch = -1;

  constructor(
    private readonly examples: SftExample[],
    private readonly o: { seq: number; batch: number; seed: number; pad: number; packing: boolean },
    state?: SamplerState,
  ) {
    if (!examples.length) throw new Error('SftSampler needs at least one example');
    this.state = state ? { ...state.sources[0]! } : { epoch: 0, index: 0 };
  }

  get position(): SamplerState {
    return { sources: [{ ...this.state }] };
  }

  /** Epochs so far (fractional). */
  epochs(): number {
    return this.state.epoch + this.state.index / this.examples.length;
  }

  private current(): SftExample {
    const n = this.examples.length;
    if (this.permEpoch !== this.state.epoch) {
      const perm = this.perm ?? new Uint32Array(n);
      for (let i = 0; i < n; i++) perm[i] = i;
      const rng = Rng.derive(this.o.seed, 0x5f7, this.state.epoch);
      for (let i = n - 1; i > 0; i--) {
        const j = rng.int(i + 1);
        const t = perm[i]!;
        perm[i] = perm[j]!;
        perm[j] = t;
      }
      this.perm = perm;
      this.permEpoch = this.state.epoch;
    }
    return this.examples[this.perm![this.state.index]!]!;
  }

  private advance(): void {
    if (++this.state.index >= this.examples.length) {
      this.state.index = 0;
      this.state.epoch++;
    }
  }

  /** The next micro-batch. */
  next(): TokenBatch & { examples: number } {
    const { seq, batch, pad, packing } = this.o;
    const rows: SftExample[] = [];
    let examples = 0;
    for (let r = 0; r < batch; r++) {
      const ids: number[] = [];
      const mask: number[] = [];
      for (;;) {
        const ex = this.current();
        if (ids.length && (!packing || ids.length + ex.ids.length > seq + 1)) break;
        ids.push(...ex.ids);
        mask.push(...ex.mask);
        examples++;
        this.advance();
        if (!packing) break;
      }
      rows.push({ ids, mask });
    }
    return { ...toBatch(rows, seq, pad), examples };
  }
}

/** Rows of ids/mask (each at most seq+1 long) as a padded batch. */
export function toBatch(rows: SftExample[], seq: number, pad: number): TokenBatch {
  const batch = rows.length;
  const inputs = new Int32Array(batch * seq).fill(pad);
  const targets = new Int32Array(batch * seq).fill(pad);
  const weights = new Float32Array(batch * seq);
  rows.forEach((r, b) => {
    for (let t = 0; t + 1 < r.ids.length && t < seq; t++) {
      inputs[b * seq + t] = r.ids[t]!;
      targets[b * seq + t] = r.ids[t + 1]!;
      weights[b * seq + t] = r.mask[t + 1]!;
    }
  });
  return { inputs, targets, weights, batch, seq };
}

/** Fixed held-out batches: held-out examples packed in file order. */
export function sftEvalBatches(
  examples: SftExample[],
  o: { seq: number; batch: number; count: number; pad: number; packing: boolean },
): TokenBatch[] {
  const out: TokenBatch[] = [];
  let i = 0;
  for (let b = 0; b < o.count && i < examples.length; b++) {
    const rows: SftExample[] = [];
    for (let r = 0; r < o.batch && i < examples.length; r++) {
      const ids: number[] = [];
      const mask: number[] = [];
      while (i < examples.length && (!ids.length || (o.packing && ids.length + examples[i]!.ids.length <= o.seq + 1))) {
        ids.push(...examples[i]!.ids);
        mask.push(...examples[i]!.mask);
        i++;
        if (!o.packing) break;
      }
      rows.push({ ids, mask });
    }
    out.push(toBatch(rows, o.seq, o.pad));
  }
  return out;
}

export type { ChatMessage };
export { validateMessages };
