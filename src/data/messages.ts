// Chat rows in Mistral fine-tuning format: {"messages": [{"role", "content", "weight"?}, ...]}.

/** One chat turn in Mistral fine-tuning format; weight 0 excludes an assistant turn from the loss. */
export interface ChatMessage {
  role: 'system' | 'user' | 'assistant' | 'tool';
  content: string;
  weight?: number;
}

/** The roles a chat message may have. */
export const CHAT_ROLES = ['system', 'user', 'assistant', 'tool'] as const;

/** Checks a chat row's messages; returns them typed, or the reason they are malformed. */
export function validateMessages(v: unknown): ChatMessage[] | string {
  if (!Array.isArray(v)) return `messages must be an array, got ${typeName(v)}`;
  if (v.length === 0) return 'messages is empty';
  const out: ChatMessage[] = [];
  for (let i = 0; i < v.length; i++) {
    const m = v[i] as unknown;
    if (typeof m !== 'object' || m === null || Array.isArray(m))
      return `messages[${i}] must be an object, got ${typeName(m)}`;
    const { role, content, weight } = m as Record<string, unknown>;
    if (role === undefined) return `messages[${i}].role is missing`;
    if (typeof role !== 'string' || !(CHAT_ROLES as readonly string[]).includes(role))
      return `messages[${i}].role ${JSON.stringify(role)} is not one of ${CHAT_ROLES.join(', ')}`;
    if (typeof content !== 'string') return `messages[${i}].content must be a string, got ${typeName(content)}`;
    const msg: ChatMessage = { role: role as ChatMessage['role'], content };
    if (weight !== undefined) {
      if (weight !== 0 && weight !== 1) return `messages[${i}].weight must be 0 or 1, got ${JSON.stringify(weight)}`;
      msg.weight = weight;
    }
    out.push(msg);
  }
  return out;
}

/** The JSON type of a value, for messages about malformed rows. */
export function typeName(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'array';
  return typeof v;
}
