import type { Tokenizer } from '../tokenizer/index.js';
import { checkRoles } from './chat.js';
import type { Doc } from './doc.js';
import { validateMessages, validateTools, type ChatMessage, type ToolSpec } from './messages.js';

// Preference pairs {prompt, chosen, rejected} (TRL's format): each a string, or chat messages.
// Strings: prompt = <bos> prompt, completion = text <eos>. Chats: the prompt rendered with the
// generation prompt, the completion = the assistant turn's tokens and its closing <|end|>.

/** A tokenized preference pair. */
export interface PairExample {
  prompt: number[];
  chosen: number[];
  rejected: number[];
  /** True when a part was cut to fit the context. */
  truncated: boolean;
}

/** A prompt as token ids plus the tokens that end its completions; or a reason it is malformed. */
export function promptIds(
  value: unknown,
  field: string,
  tokenizer: Tokenizer,
  tools?: readonly ToolSpec[],
): { ids: number[]; chat: boolean; messages?: ChatMessage[]; tools?: readonly ToolSpec[] } | string {
  if (typeof value === 'string') {
    if (!value.length) return `${field} is empty`;
    if (tools?.length)
      return `tools are rendered by the chat template: make ${field} a list of chat messages, not a string`;
    return { ids: [tokenizer.special.bos, ...tokenizer.encode(value)], chat: false };
  }
  if (Array.isArray(value)) {
    const msgs = validateMessages(value);
    if (typeof msgs === 'string') return `${field}: ${msgs.replace(/^messages/, field)}`;
    const why = checkRoles(msgs, { endWith: 'user' });
    if (why) return `${field}: ${why.replace(/messages/g, field)}`;
    return {
      ids: tokenizer.renderChat(msgs, { addGenerationPrompt: true, tools }).ids,
      chat: true,
      messages: msgs,
      tools,
    };
  }
  if (value === undefined) return `missing field "${field}"`;
  return `field "${field}" must be a string or a list of chat messages, got ${value === null ? 'null' : typeof value}`;
}

function completionIds(
  value: unknown,
  field: string,
  prompt: { chat: boolean; messages?: ChatMessage[]; tools?: readonly ToolSpec[]; ids: number[] },
  tokenizer: Tokenizer,
): number[] | string {
  if (value === undefined) return `missing field "${field}"`;
  if (prompt.chat) {
    if (!Array.isArray(value))
      return `${field} must be a list of assistant messages, as the prompt is a chat (got ${typeof value})`;
    const msgs = validateMessages(value);
    if (typeof msgs === 'string') return `${field}: ${msgs.replace(/^messages/, field)}`;
    if (msgs.length !== 1 || msgs[0]!.role !== 'assistant') return `${field} must hold exactly one assistant message`;
    if (!msgs[0]!.content.trim() && !msgs[0]!.tool_calls?.length) return `${field} is an empty completion`;
    const full = tokenizer.renderChat([...prompt.messages!, msgs[0]!], { tools: prompt.tools }).ids;
    const head = full.slice(0, prompt.ids.length);
    if (head.length !== prompt.ids.length || head.some((t, i) => t !== prompt.ids[i]))
      return `${field}: the chat does not tokenize with the prompt as a prefix`;
    return full.slice(prompt.ids.length);
  }
  if (typeof value !== 'string')
    return `${field} must be a string, as the prompt is (got ${Array.isArray(value) ? 'a list' : typeof value}); use the same format for prompt, chosen and rejected`;
  if (!value.trim()) return `${field} is an empty completion`;
  return [...tokenizer.encode(value), tokenizer.special.eos];
}

/** Cuts prompt (from the left, keeping its first token) and completion (from the right) so prompt+completion ≤ max+1. */
export function fitSequence(
  prompt: number[],
  completion: number[],
  max: number,
): { prompt: number[]; completion: number[]; truncated: boolean } {
  const limit = max + 1;
  if (prompt.length + completion.length <= limit) return { prompt, completion, truncated: false };
  let c = completion;
  if (c.length > Math.floor(limit / 2))
    c = c.slice(0, Math.max(1, limit - Math.min(prompt.length, Math.ceil(limit / 2))));
  const keep = Math.max(1, limit - c.length);
  const p = prompt.length > keep ? [prompt[0]!, ...prompt.slice(prompt.length - keep + 1)] : prompt;
  return { prompt: p, completion: c, truncated: true };
}

/** A DPO row as a pair; a reason string when malformed. */
export function pairExample(doc: Doc, tokenizer: Tokenizer, context: number): PairExample | string {
  const row = doc.row ?? {};
  for (const k of ['prompt', 'chosen', 'rejected'])
    if (row[k] === undefined) return `missing field "${k}" (pairs need "prompt", "chosen" and "rejected")`;
  const tools = validateTools(row.tools);
  if (typeof tools === 'string') return tools;
  const prompt = promptIds(row.prompt, 'prompt', tokenizer, tools);
  if (typeof prompt === 'string') return prompt;
  const chosen = completionIds(row.chosen, 'chosen', prompt, tokenizer);
  if (typeof chosen === 'string') return chosen;
  const rejected = completionIds(row.rejected, 'rejected', prompt, tokenizer);
  if (typeof rejected === 'string') return rejected;
  if (chosen.length === rejected.length && chosen.every((t, i) => t === rejected[i]))
    return 'chosen and rejected are the same completion';
  const a = fitSequence(prompt.ids, chosen, context);
  const b = fitSequence(prompt.ids, rejected, context);
  // Both halves must share the prompt; use the shorter cut of it.
  const p = a.prompt.length <= b.prompt.length ? a.prompt : b.prompt;
  return {
    prompt: p,
    chosen: a.completion.slice(0, context + 1 - p.length),
    rejected: b.completion.slice(0, context + 1 - p.length),
    truncated: a.truncated || b.truncated,
  };
}
