import { z } from 'zod';

// The OpenAI API's request bodies as this server reads them (completions and chat completions), and
// its error shape: {"error": {"message", "type", "param", "code"}}. A field this server cannot honour
// is refused by name rather than ignored.

/** An error to send as OpenAI does: an HTTP status and the `error` object. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
    /** The request field at fault, or null. */
    readonly param: string | null = null,
    readonly code: string | null = null,
    readonly type: string = status === 401
      ? 'authentication_error'
      : status >= 500
        ? 'server_error'
        : 'invalid_request_error',
  ) {
    super(message);
  }

  /** The JSON body. */
  body(): { error: { message: string; type: string; param: string | null; code: string | null } } {
    return { error: { message: this.message, type: this.type, param: this.param, code: this.code } };
  }
}

const stop = z
  .union([z.string().min(1), z.array(z.string().min(1)).max(4)])
  .nullable()
  .optional()
  .describe('Up to 4 strings that end a completion (not included).');

/** Fields both endpoints share. */
const sampling = {
  model: z.string().min(1).describe('The model id (GET /v1/models).'),
  temperature: z.number().min(0).max(2).nullable().optional().describe('0 is greedy; default 1.'),
  top_p: z.number().gt(0).max(1).nullable().optional().describe('Nucleus sampling mass; default 1.'),
  n: z.number().int().min(1).max(128).nullable().optional().describe('Completions per prompt; default 1.'),
  stream: z.boolean().nullable().optional().describe('Send server-sent events as tokens come.'),
  stream_options: z
    .strictObject({ include_usage: z.boolean().optional() })
    .nullable()
    .optional()
    .describe('include_usage: a last chunk with the usage and no choices.'),
  stop,
  seed: z.number().int().nullable().optional().describe('Sampling seed; choice i uses seed + i. Default 0.'),
  user: z.string().optional().describe('Ignored.'),
  // Accepted at their neutral values only: this server does not implement them.
  frequency_penalty: z.literal(0).nullable().optional(),
  presence_penalty: z.literal(0).nullable().optional(),
  logit_bias: z.strictObject({}).nullable().optional(),
  logprobs: z.union([z.literal(false), z.null()]).optional(),
};

/** POST /v1/completions. */
export const CompletionRequestSchema = z.strictObject({
  ...sampling,
  prompt: z
    .union([
      z.string(),
      z.array(z.string()).min(1),
      z.array(z.number().int().min(0)).min(1),
      z.array(z.array(z.number().int().min(0)).min(1)).min(1),
    ])
    .describe('A string, a list of strings, a list of token ids or a list of such lists.'),
  max_tokens: z.number().int().min(1).nullable().optional().describe('Tokens per completion at most; default 16.'),
  echo: z.literal(false).nullable().optional(),
  suffix: z.null().optional(),
  best_of: z.literal(1).nullable().optional(),
});
export type CompletionRequest = z.infer<typeof CompletionRequestSchema>;

const textPart = z.strictObject({ type: z.literal('text'), text: z.string() });

/** One chat message as the API sends it. */
export const MessageSchema = z.object({
  role: z.enum(['system', 'developer', 'user', 'assistant', 'tool']),
  content: z.union([z.string(), z.array(textPart), z.null()]).optional(),
  name: z.string().optional(),
  tool_call_id: z.string().optional(),
});

/** POST /v1/chat/completions. */
export const ChatRequestSchema = z.strictObject({
  ...sampling,
  messages: z.array(MessageSchema).min(1).describe('The conversation so far.'),
  max_tokens: z.number().int().min(1).nullable().optional().describe('Tokens per completion at most.'),
  max_completion_tokens: z.number().int().min(1).nullable().optional().describe('Same as max_tokens.'),
});
export type ChatRequest = z.infer<typeof ChatRequestSchema>;

/** Parses a body; the first problem becomes a 400 naming its field (as `messages[0].role`). */
export function parseRequest<T>(schema: z.ZodType<T>, body: unknown): T {
  if (typeof body !== 'object' || body === null || Array.isArray(body))
    throw new ApiError(400, 'the request body must be a JSON object');
  const r = schema.safeParse(body);
  if (r.success) return r.data;
  const issue = r.error.issues[0]!;
  if (issue.code === 'unrecognized_keys') {
    const key = issue.keys[0]!;
    const where = [...issue.path, key].map(String).join('.');
    throw new ApiError(400, `Unrecognized request argument supplied: ${where}`, where);
  }
  const param = issue.path.map((p, i) => (typeof p === 'number' ? `[${p}]` : i ? `.${String(p)}` : String(p))).join('');
  const neutral = NEUTRAL[String(issue.path[0])];
  const message = neutral
    ? `${param}: this server does not support it; send ${neutral} or leave it out`
    : `${param || 'body'}: ${issue.message}`;
  throw new ApiError(400, message, param || null);
}

const NEUTRAL: Record<string, string> = {
  frequency_penalty: '0',
  presence_penalty: '0',
  logit_bias: '{}',
  logprobs: 'false',
  echo: 'false',
  suffix: 'null',
  best_of: '1',
};

/** Response usage. */
export interface Usage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
}

/** A usage object from token counts. */
export function usageOf(prompt: number, completion: number): Usage {
  return { prompt_tokens: prompt, completion_tokens: completion, total_tokens: prompt + completion };
}
