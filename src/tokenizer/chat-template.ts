/**
 * Chat format: `<|bos|>` then `<|role|>content<|end|>` per message, and `<|assistant|>` as the
 * generation prompt. {@link CHAT_TEMPLATE} is the same format as a Jinja template for HF
 * `apply_chat_template`; {@link renderChatText} renders it in TypeScript.
 */
import { SPECIAL_TOKENS } from './special-tokens.js';

/** A chat message. `weight: 0` excludes an assistant message from the training loss. */
export interface ChatMessage {
  role: 'system' | 'user' | 'assistant';
  content: string;
  weight?: number;
}

const ROLES = new Set(['system', 'user', 'assistant']);

/** Jinja chat template (HF `tokenizer_config.json` `chat_template`) producing the same text as {@link renderChatText}. */
export const CHAT_TEMPLATE: string =
  `{{ '${SPECIAL_TOKENS.bos}' }}` +
  `{% for message in messages %}` +
  `{% if message['role'] not in ['system', 'user', 'assistant'] %}` +
  `{{ raise_exception('Unknown chat role: ' + message['role']) }}` +
  `{% endif %}` +
  `{{ '<|' + message['role'] + '|>' + message['content'] + '${SPECIAL_TOKENS.end}' }}` +
  `{% endfor %}` +
  `{% if add_generation_prompt %}{{ '${SPECIAL_TOKENS.assistant}' }}{% endif %}`;

/** Rendered chat text plus the [start, end) ranges (UTF-16 indices) whose tokens are trained on. */
export interface RenderedChat {
  text: string;
  /** For each weighted assistant message: its content and closing `<|end|>`. */
  trainedSpans: Array<[number, number]>;
}

/** Renders messages exactly as {@link CHAT_TEMPLATE} does. */
export function renderChatText(messages: readonly ChatMessage[], addGenerationPrompt = false): RenderedChat {
  let text: string = SPECIAL_TOKENS.bos;
  const trainedSpans: Array<[number, number]> = [];
  messages.forEach((m, i) => {
    if (!ROLES.has(m.role))
      throw new Error(
        `renderChat: messages[${i}].role ${JSON.stringify(m.role)} is not one of system, user, assistant`,
      );
    if (typeof m.content !== 'string') throw new TypeError(`renderChat: messages[${i}].content must be a string`);
    if (m.weight !== undefined && !Number.isFinite(m.weight)) {
      throw new TypeError(`renderChat: messages[${i}].weight must be a finite number`);
    }
    text += `<|${m.role}|>`;
    const start = text.length;
    text += m.content + SPECIAL_TOKENS.end;
    if (m.role === 'assistant' && m.weight !== 0) trainedSpans.push([start, text.length]);
  });
  if (addGenerationPrompt) text += SPECIAL_TOKENS.assistant;
  return { text, trainedSpans };
}
