/**
 * Chat format: `<|bos|>` then `<|role|>content<|end|>` per message, and `<|assistant|>` as the
 * generation prompt. {@link CHAT_TEMPLATE} is the same format as a Jinja template for HF
 * `apply_chat_template`; {@link renderChatText} renders it in TypeScript.
 *
 * Function calling (OpenAI / Mistral format) adds three pieces, all plain text inside the turns:
 * - `tools` (the definitions), as JSON in a system turn first: `<|system|><tools>[...]</tools><|end|>`;
 * - an assistant's `tool_calls`, after its content: `<tool_call>{"id": …, "name": …, "arguments": …}</tool_call>`;
 * - a `role: tool` result: `<|tool|><tool_result id="…" name="…">content</tool_result><|end|>`.
 * `<|tool|>` is text, not a special token: the ids of the special tokens are fixed (0..9) in every
 * trained tokenizer, and a new one would shift every byte id.
 */
import { SPECIAL_TOKENS } from './special-tokens.js';

/** One call of a tool by the assistant (OpenAI / Mistral function-calling format). */
export interface ToolCall {
  id?: string;
  type?: 'function';
  function: {
    name: string;
    /** The arguments as a JSON string (rendered verbatim), or as an object (rendered as JSON). */
    arguments: string | Record<string, unknown>;
  };
}

/** A tool definition (an entry of `tools`), rendered as JSON. */
export type ToolSpec = Record<string, unknown>;

/** A chat message. `weight: 0` excludes an assistant message (content and tool calls) from the training loss. */
export interface ChatMessage {
  role: 'system' | 'user' | 'assistant' | 'tool';
  content: string;
  weight?: number;
  /** Assistant only: the tools it calls, rendered after its content. */
  tool_calls?: ToolCall[];
  /** Tool only: the id of the call this message answers. */
  tool_call_id?: string;
  /** Tool only: the name of the tool that answered. */
  name?: string;
}

/** The roles a chat message may have. */
export const CHAT_ROLES = ['system', 'user', 'assistant', 'tool'] as const;

const ROLES = new Set<string>(CHAT_ROLES);
const defined = (v: string): string => `${v} is defined and ${v} is not none`;

/**
 * The Jinja chat template (HF `tokenizer_config.json` `chat_template`) producing the same text as
 * {@link renderChatText} with the same `bos` (an imported model keeps its own beginning-of-sequence token).
 */
export function chatTemplateFor(bos: string): string {
  const quoted = bos.replace(/\\/g, '\\\\').replace(/'/g, "\\'");
  return (
    `{{ '${quoted}' }}` +
    `{% if tools %}{{ '${SPECIAL_TOKENS.system}<tools>' + (tools | tojson) + '</tools>${SPECIAL_TOKENS.end}' }}{% endif %}` +
    `{% for message in messages %}` +
    `{% if message['role'] not in ['system', 'user', 'assistant', 'tool'] %}` +
    `{{ raise_exception('Unknown chat role: ' + message['role']) }}` +
    `{% endif %}` +
    `{% if message['role'] == 'tool' %}` +
    `{{ '<|tool|><tool_result' }}` +
    `{% if ${defined("message['tool_call_id']")} %}{{ ' id=' + (message['tool_call_id'] | tojson) }}{% endif %}` +
    `{% if ${defined("message['name']")} %}{{ ' name=' + (message['name'] | tojson) }}{% endif %}` +
    `{{ '>' + message['content'] + '</tool_result>' }}` +
    `{% else %}` +
    `{{ '<|' + message['role'] + '|>' }}{% if message['content'] %}{{ message['content'] }}{% endif %}` +
    `{% if message['role'] == 'assistant' and message['tool_calls'] %}{% for call in message['tool_calls'] %}` +
    `{{ '<tool_call>{' }}{% if ${defined("call['id']")} %}{{ '"id": ' + (call['id'] | tojson) + ', ' }}{% endif %}` +
    `{{ '"name": ' + (call['function']['name'] | tojson) + ', "arguments": ' }}` +
    `{% if call['function']['arguments'] is string %}{{ call['function']['arguments'] }}` +
    `{% else %}{{ call['function']['arguments'] | tojson }}{% endif %}` +
    `{{ '}</tool_call>' }}` +
    `{% endfor %}{% endif %}` +
    `{% endif %}` +
    `{{ '${SPECIAL_TOKENS.end}' }}` +
    `{% endfor %}` +
    `{% if add_generation_prompt %}{{ '${SPECIAL_TOKENS.assistant}' }}{% endif %}`
  );
}

/** Jinja chat template (HF `tokenizer_config.json` `chat_template`) producing the same text as {@link renderChatText}. */
export const CHAT_TEMPLATE: string = chatTemplateFor(SPECIAL_TOKENS.bos);

/** Rendered chat text plus the [start, end) ranges (UTF-16 indices) whose tokens are trained on. */
export interface RenderedChat {
  text: string;
  /** For each weighted assistant message: its content, its tool calls and closing `<|end|>`. */
  trainedSpans: Array<[number, number]>;
}

/** An assistant's tool calls as {@link CHAT_TEMPLATE} renders them ('' when there are none). */
export function renderToolCalls(calls: readonly ToolCall[] | undefined): string {
  let out = '';
  for (const c of calls ?? []) {
    const args = c.function.arguments;
    out += '<tool_call>{';
    if (c.id !== undefined && c.id !== null) out += `"id": ${pythonJson(c.id)}, `;
    out += `"name": ${pythonJson(c.function.name)}, "arguments": `;
    out += typeof args === 'string' ? args : pythonJson(args);
    out += '}</tool_call>';
  }
  return out;
}

/** Renders messages (and tool definitions) exactly as {@link chatTemplateFor}(`bos`) does. */
export function renderChatText(
  messages: readonly ChatMessage[],
  addGenerationPrompt = false,
  tools?: readonly ToolSpec[],
  bos: string = SPECIAL_TOKENS.bos,
): RenderedChat {
  let text: string = bos;
  if (tools?.length) text += `${SPECIAL_TOKENS.system}<tools>${pythonJson(tools)}</tools>${SPECIAL_TOKENS.end}`;
  const trainedSpans: Array<[number, number]> = [];
  messages.forEach((m, i) => {
    if (!ROLES.has(m.role))
      throw new Error(
        `renderChat: messages[${i}].role ${JSON.stringify(m.role)} is not one of ${CHAT_ROLES.join(', ')}`,
      );
    if (typeof m.content !== 'string') throw new TypeError(`renderChat: messages[${i}].content must be a string`);
    if (m.weight !== undefined && !Number.isFinite(m.weight)) {
      throw new TypeError(`renderChat: messages[${i}].weight must be a finite number`);
    }
    if (m.tool_calls?.length && m.role !== 'assistant')
      throw new TypeError(`renderChat: messages[${i}].tool_calls belong to assistant messages, not ${m.role}`);
    if (m.role === 'tool') {
      text += '<|tool|><tool_result';
      if (m.tool_call_id !== undefined && m.tool_call_id !== null) text += ` id=${pythonJson(m.tool_call_id)}`;
      if (m.name !== undefined && m.name !== null) text += ` name=${pythonJson(m.name)}`;
      text += `>${m.content}</tool_result>${SPECIAL_TOKENS.end}`;
      return;
    }
    text += `<|${m.role}|>`;
    const start = text.length;
    text += m.content + renderToolCalls(m.tool_calls) + SPECIAL_TOKENS.end;
    if (m.role === 'assistant' && m.weight !== 0) trainedSpans.push([start, text.length]);
  });
  if (addGenerationPrompt) text += SPECIAL_TOKENS.assistant;
  return { text, trainedSpans };
}

/**
 * JSON as Python's `json.dumps(v, ensure_ascii=False)` writes it, which is what HF's `tojson` filter does:
 * `", "` and `": "` separators, floats as Python's repr. A number parsed from JSON keeps no trace of how it was
 * written, so an integral float written `1.0` (Python: 1.0) renders as 1, and keys that look like array indices
 * come first (JavaScript's key order).
 */
export function pythonJson(v: unknown): string {
  if (v === null || v === undefined) return 'null';
  if (typeof v === 'string') return JSON.stringify(v);
  if (typeof v === 'boolean') return v ? 'true' : 'false';
  if (typeof v === 'number') return pythonNumber(v);
  if (Array.isArray(v)) return `[${v.map(pythonJson).join(', ')}]`;
  if (typeof v === 'object')
    return `{${Object.entries(v as Record<string, unknown>)
      .map(([k, x]) => `${JSON.stringify(k)}: ${pythonJson(x)}`)
      .join(', ')}}`;
  throw new TypeError(`cannot write a ${typeof v} as JSON`);
}

function pythonNumber(v: number): string {
  if (!Number.isFinite(v)) return v > 0 ? 'Infinity' : v < 0 ? '-Infinity' : 'NaN';
  if (Number.isInteger(v)) return BigInt(v).toString();
  // Both languages write the shortest round-trip digits; Python's repr switches to an exponent outside [1e-4, 1e16).
  const [mant, exp] = v.toExponential().split('e') as [string, string];
  const x = Number(exp);
  if (x >= -4 && x < 16) return String(v);
  return `${mant}e${x < 0 ? '-' : '+'}${String(Math.abs(x)).padStart(2, '0')}`;
}
