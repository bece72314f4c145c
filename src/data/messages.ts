import {
  CHAT_ROLES,
  renderToolCalls,
  type ChatMessage,
  type ToolCall,
  type ToolSpec,
} from '../tokenizer/chat-template.js';

// Chat rows in Mistral fine-tuning / OpenAI format: {"messages": [{"role", "content", ...}], "tools"?: [...]}.
// Every field of a message is either used or refused: nothing is dropped without a word.

export { CHAT_ROLES, type ChatMessage, type ToolCall, type ToolSpec };

/** The fields each role's messages may have. */
const FIELDS: Record<ChatMessage['role'], readonly string[]> = {
  system: ['role', 'content'],
  user: ['role', 'content'],
  assistant: ['role', 'content', 'weight', 'tool_calls'],
  tool: ['role', 'content', 'tool_call_id', 'name'],
};

/** The JSON type of a value, for messages about malformed rows. */
export function typeName(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'array';
  return typeof v;
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/** Checks a chat row's messages; returns them typed, or the reason they are malformed. */
export function validateMessages(v: unknown): ChatMessage[] | string {
  if (!Array.isArray(v)) return `messages must be an array, got ${typeName(v)}`;
  if (v.length === 0) return 'messages is empty';
  const out: ChatMessage[] = [];
  for (let i = 0; i < v.length; i++) {
    const m = v[i] as unknown;
    if (!isObject(m)) return `messages[${i}] must be an object, got ${typeName(m)}`;
    const at = `messages[${i}]`;
    const { role, content, weight } = m;
    if (role === undefined) return `${at}.role is missing`;
    if (typeof role !== 'string' || !(CHAT_ROLES as readonly string[]).includes(role))
      return `${at}.role ${JSON.stringify(role)} is not one of ${CHAT_ROLES.join(', ')}`;
    const r = role as ChatMessage['role'];
    for (const k of Object.keys(m)) {
      if (FIELDS[r].includes(k)) continue;
      if (k === 'weight')
        return `${at}.weight is only for assistant messages (0 leaves a reply out of the loss); a ${r} message is never trained on, so remove it`;
      if (k === 'tool_calls') return `${at}.tool_calls belong to assistant messages, not ${r}`;
      return `${at}.${k} is not a field of a ${r} message; allowed: ${FIELDS[r].join(', ')}`;
    }
    const calls = r === 'assistant' && m.tool_calls !== undefined ? validateToolCalls(m.tool_calls, at) : undefined;
    if (typeof calls === 'string') return calls;
    // OpenAI writes content null (or leaves it out) on an assistant message that only calls tools.
    const callsOnly = calls !== undefined && calls.length > 0 && (content === null || content === undefined);
    if (typeof content !== 'string' && !callsOnly) return `${at}.content must be a string, got ${typeName(content)}`;
    const msg: ChatMessage = { role: r, content: typeof content === 'string' ? content : '' };
    if (weight !== undefined) {
      if (weight !== 0 && weight !== 1) return `${at}.weight must be 0 or 1, got ${JSON.stringify(weight)}`;
      msg.weight = weight;
    }
    if (calls?.length) msg.tool_calls = calls;
    for (const k of ['tool_call_id', 'name'] as const) {
      if (m[k] === undefined) continue;
      if (typeof m[k] !== 'string' || !m[k])
        return `${at}.${k} must be a non-empty string, got ${JSON.stringify(m[k])}`;
      msg[k] = m[k];
    }
    out.push(msg);
  }
  return out;
}

/** Checks an assistant message's `tool_calls` (OpenAI / Mistral format); `at` names the message. */
function validateToolCalls(v: unknown, at: string): ToolCall[] | string {
  if (!Array.isArray(v)) return `${at}.tool_calls must be an array, got ${typeName(v)}`;
  const out: ToolCall[] = [];
  for (let j = 0; j < v.length; j++) {
    const c = v[j] as unknown;
    const here = `${at}.tool_calls[${j}]`;
    if (!isObject(c)) return `${here} must be an object, got ${typeName(c)}`;
    for (const k of Object.keys(c))
      if (!['id', 'type', 'function'].includes(k))
        return `${here}.${k} is not a field of a tool call; allowed: id, type, function`;
    if (c.type !== undefined && c.type !== 'function')
      return `${here}.type must be "function", got ${JSON.stringify(c.type)}`;
    if (c.id !== undefined && (typeof c.id !== 'string' || !c.id))
      return `${here}.id must be a non-empty string, got ${JSON.stringify(c.id)}`;
    const f = c.function;
    if (!isObject(f)) return `${here}.function must be an object with name and arguments, got ${typeName(f)}`;
    for (const k of Object.keys(f))
      if (k !== 'name' && k !== 'arguments')
        return `${here}.function.${k} is not a field of a tool call's function; allowed: name, arguments`;
    if (typeof f.name !== 'string' || !f.name)
      return `${here}.function.name must be a non-empty string, got ${JSON.stringify(f.name)}`;
    const args = f.arguments;
    if (typeof args === 'string') {
      try {
        JSON.parse(args);
      } catch (e) {
        return `${here}.function.arguments is not valid JSON (${(e as Error).message}); write the arguments as a JSON string or an object`;
      }
    } else if (!isObject(args))
      return `${here}.function.arguments must be a JSON string or an object, got ${typeName(args)}`;
    const call: ToolCall = { function: { name: f.name, arguments: args } };
    if (c.id !== undefined) call.id = c.id as string;
    if (c.type !== undefined) call.type = 'function';
    out.push(call);
  }
  return out;
}

/** Checks a row's `tools` (the tool definitions the chat template renders first); undefined when absent. */
export function validateTools(v: unknown): ToolSpec[] | undefined | string {
  if (v === undefined) return undefined;
  if (!Array.isArray(v)) return `tools must be an array of tool definitions, got ${typeName(v)}`;
  for (let i = 0; i < v.length; i++)
    if (!isObject(v[i])) return `tools[${i}] must be an object (a tool definition), got ${typeName(v[i])}`;
  return v as ToolSpec[];
}

/** A message as plain text (pre-training reads chat rows this way): its content, then its tool calls. */
export function messageText(m: ChatMessage): string {
  return m.tool_calls?.length ? m.content + renderToolCalls(m.tool_calls) : m.content;
}
