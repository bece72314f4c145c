import { randomBytes } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Engine } from '../engine/engine.js';
import type { ChatMessage, Tokenizer } from '../tokenizer/index.js';
import { bearerToken, tokenMatches } from '../worker/auth.js';
import {
  ApiError,
  ChatRequestSchema,
  CompletionRequestSchema,
  parseRequest,
  usageOf,
  type ChatRequest,
  type CompletionRequest,
} from './openai.js';
import { AbortedError, Scheduler, type FinishReason, type GenerationResult } from './scheduler.js';

// An OpenAI-compatible HTTP server over one model: GET /v1/models, POST /v1/completions and
// POST /v1/chat/completions (the model's chat template), streaming as server-sent events. Requests
// share the engine through the scheduler's continuous batching.

/** Options of {@link startServer}. */
export interface ServerOptions {
  /** The model id clients name. */
  name: string;
  /** Default 127.0.0.1: only this machine. */
  host?: string;
  /** Default 8000; 0 picks a free port. */
  port?: number;
  /** When set, every /v1 request needs `Authorization: Bearer <token>`. */
  token?: string;
  /** Rows decoding at once (default 16). */
  maxBatch?: number;
  /** Largest request body in bytes (default 4 MiB). */
  maxBody?: number;
}

/** A running server. */
export interface ServerHandle {
  /** Base URL of the API, e.g. http://127.0.0.1:8000/v1 */
  readonly url: string;
  readonly port: number;
  readonly model: string;
  readonly scheduler: Scheduler;
  /** Stops listening, ends open connections, and frees the scheduler (not the engine). */
  close(): Promise<void>;
}

/** Serves `engine` (with its tokenizer) until closed. */
export async function startServer(engine: Engine, tokenizer: Tokenizer, o: ServerOptions): Promise<ServerHandle> {
  const scheduler = new Scheduler(engine, tokenizer, o.maxBatch ?? 16);
  const created = Math.floor(Date.now() / 1000);
  const api = new Api(scheduler, tokenizer, o.name, created, o.maxBody ?? 4 * 2 ** 20);
  const server: Server = createServer((req, res) => {
    api.handle(req, res, o.token).catch((e: unknown) => sendError(res, e));
  });
  const host = o.host ?? '127.0.0.1';
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(o.port ?? 8000, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const port = (server.address() as AddressInfo).port;
  const shown = host.includes(':') ? `[${host}]` : host === '0.0.0.0' ? '127.0.0.1' : host;
  return {
    url: `http://${shown}:${port}/v1`,
    port,
    model: o.name,
    scheduler,
    close: async () => {
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      });
      await scheduler.close();
    },
  };
}

function sendJson(res: ServerResponse, status: number, body: unknown): void {
  if (res.headersSent) return void res.end();
  const data = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(data) });
  res.end(data);
}

function sendError(res: ServerResponse, e: unknown): void {
  const err =
    e instanceof ApiError ? e : new ApiError(500, `internal error: ${e instanceof Error ? e.message : String(e)}`);
  if (res.headersSent) {
    // Mid-stream: the error travels as one more event, as OpenAI's streams do.
    if (!res.writableEnded) res.end(`data: ${JSON.stringify(err.body())}\n\n`);
    return;
  }
  sendJson(res, err.status, err.body());
}

/** A prompt ready to generate from: its ids, and which request field it came from. */
interface Prompt {
  ids: number[];
  field: string;
}

class Api {
  constructor(
    private readonly scheduler: Scheduler,
    private readonly tokenizer: Tokenizer,
    private readonly model: string,
    private readonly created: number,
    private readonly maxBody: number,
  ) {}

  async handle(req: IncomingMessage, res: ServerResponse, token: string | undefined): Promise<void> {
    const path = (req.url ?? '/').split('?')[0]!.replace(/\/+$/, '') || '/';
    if (path === '/health' && req.method === 'GET') {
      const s = this.scheduler.stats;
      return sendJson(res, 200, { status: 'ok', model: this.model, ...s });
    }
    if (!path.startsWith('/v1/')) throw new ApiError(404, `no route ${req.method} ${path}`, null, 'not_found');
    if (token) this.authorize(req, token);
    const route = `${req.method} ${path}`;
    if (route === 'GET /v1/models') return sendJson(res, 200, { object: 'list', data: [this.modelCard()] });
    if (route === `GET /v1/models/${this.model}`) return sendJson(res, 200, this.modelCard());
    if (req.method === 'GET' && path.startsWith('/v1/models/'))
      throw this.unknownModel(decodeURIComponent(path.slice('/v1/models/'.length)));
    if (route === 'POST /v1/completions') return this.completions(req, res);
    if (route === 'POST /v1/chat/completions') return this.chat(req, res);
    const known = ['/v1/models', '/v1/completions', '/v1/chat/completions'].includes(path);
    if (known) throw new ApiError(405, `method ${req.method} is not allowed on ${path}`, null, 'method_not_allowed');
    throw new ApiError(404, `no route ${req.method} ${path}`, null, 'not_found');
  }

  private modelCard() {
    return { id: this.model, object: 'model', created: this.created, owned_by: 'lathe' };
  }

  private unknownModel(name: string): ApiError {
    return new ApiError(
      404,
      `The model \`${name}\` does not exist; this server serves \`${this.model}\``,
      'model',
      'model_not_found',
    );
  }

  private authorize(req: IncomingMessage, token: string): void {
    const given = bearerToken(req.headers.authorization);
    if (!tokenMatches(token, given))
      throw new ApiError(
        401,
        given === undefined ? 'Missing bearer token: send Authorization: Bearer <token>' : 'Incorrect API key provided',
        null,
        'invalid_api_key',
      );
  }

  private async body(req: IncomingMessage): Promise<unknown> {
    const chunks: Buffer[] = [];
    let size = 0;
    for await (const c of req as AsyncIterable<Buffer>) {
      size += c.length;
      if (size > this.maxBody) throw new ApiError(413, `the request body is over ${this.maxBody} bytes`);
      chunks.push(c);
    }
    const text = Buffer.concat(chunks).toString('utf8');
    try {
      return JSON.parse(text);
    } catch (e) {
      throw new ApiError(400, `the request body is not valid JSON: ${(e as Error).message}`);
    }
  }

  /** Sampling settings shared by both endpoints, with OpenAI's defaults. */
  private sampling(r: CompletionRequest | ChatRequest) {
    if (r.model !== this.model) throw this.unknownModel(r.model);
    const n = r.n ?? 1;
    if (n > this.scheduler.maxBatch)
      throw new ApiError(400, `n: at most ${this.scheduler.maxBatch} on this server (its batch size)`, 'n');
    return {
      n,
      temperature: r.temperature ?? 1,
      topP: r.top_p ?? 1,
      seed: r.seed ?? 0,
      stop: r.stop == null ? [] : typeof r.stop === 'string' ? [r.stop] : r.stop,
    };
  }

  /** max_tokens checked against the context: OpenAI's context_length_exceeded, naming the field at fault. */
  private budget(p: Prompt, asked: number | null | undefined, fallback: number): number {
    const ctx = this.scheduler.context;
    if (p.ids.length >= ctx)
      throw new ApiError(
        400,
        `This model's maximum context length is ${ctx} tokens, and the ${p.field} is ${p.ids.length} tokens, leaving no room for a completion. Please shorten the ${p.field}.`,
        p.field,
        'context_length_exceeded',
      );
    if (asked != null && p.ids.length + asked > ctx)
      throw new ApiError(
        400,
        `This model's maximum context length is ${ctx} tokens. However, you requested ${p.ids.length + asked} tokens (${p.ids.length} in the ${p.field}, ${asked} in the completion). Please reduce the length of the ${p.field} or max_tokens.`,
        'max_tokens',
        'context_length_exceeded',
      );
    return asked ?? Math.min(fallback, ctx - p.ids.length);
  }

  private async completions(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const r = parseRequest(CompletionRequestSchema, await this.body(req));
    const s = this.sampling(r);
    const raw = r.prompt;
    const prompts: Prompt[] = (
      typeof raw === 'string'
        ? [raw]
        : raw.every((x) => typeof x === 'number')
          ? [raw as number[]]
          : (raw as (string | number[])[])
    ).map((p, i, all) => {
      const field = all.length > 1 ? `prompt[${i}]` : 'prompt';
      if (typeof p === 'string') return { ids: [this.tokenizer.special.bos, ...this.tokenizer.encode(p)], field };
      const bad = p.findIndex((t) => t >= this.tokenizer.vocabSize);
      if (bad >= 0)
        throw new ApiError(
          400,
          `${field}[${bad}]: token id ${p[bad]} is past the vocabulary (${this.tokenizer.vocabSize})`,
          field,
        );
      return { ids: p, field };
    });
    const maxTokens = prompts.map((p) => this.budget(p, r.max_tokens, 16));
    const id = `cmpl-${randomBytes(12).toString('hex')}`;
    const base = { id, object: 'text_completion', created: Math.floor(Date.now() / 1000), model: this.model };
    const stopIds = [this.tokenizer.special.eos];
    await this.run(req, res, prompts, maxTokens, s, stopIds, !!r.stream, r.stream_options?.include_usage === true, {
      chunk: (index, text, finish) => ({
        ...base,
        choices: [{ text, index, logprobs: null, finish_reason: finish }],
      }),
      whole: (results) => ({
        ...base,
        choices: results.flatMap((g, pi) =>
          g.choices.map((c) => ({
            text: c.text,
            index: pi * s.n + c.index,
            logprobs: null,
            finish_reason: c.finishReason,
          })),
        ),
      }),
    });
  }

  private async chat(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const r = parseRequest(ChatRequestSchema, await this.body(req));
    const s = this.sampling(r);
    const messages: ChatMessage[] = r.messages.map((m, i) => {
      const content =
        typeof m.content === 'string' ? m.content : m.content ? m.content.map((p) => p.text).join('') : '';
      if (m.content == null && m.role !== 'assistant')
        throw new ApiError(400, `messages[${i}].content: required for a ${m.role} message`, `messages[${i}].content`);
      const msg: ChatMessage = { role: m.role === 'developer' ? 'system' : m.role, content };
      if (m.role === 'tool') {
        if (m.tool_call_id !== undefined) msg.tool_call_id = m.tool_call_id;
        if (m.name !== undefined) msg.name = m.name;
      }
      return msg;
    });
    const prompt: Prompt = {
      ids: this.tokenizer.renderChat(messages, { addGenerationPrompt: true }).ids,
      field: 'messages',
    };
    const asked = r.max_completion_tokens ?? r.max_tokens;
    const maxTokens = this.budget(prompt, asked, Number.MAX_SAFE_INTEGER);
    const id = `chatcmpl-${randomBytes(12).toString('hex')}`;
    const base = { id, object: 'chat.completion', created: Math.floor(Date.now() / 1000), model: this.model };
    const stopIds = [this.tokenizer.special.end, this.tokenizer.special.eos];
    const started = new Set<number>();
    await this.run(req, res, [prompt], [maxTokens], s, stopIds, !!r.stream, r.stream_options?.include_usage === true, {
      chunk: (index, text, finish) => {
        // The first chunk of a choice carries its role, as OpenAI's do.
        const delta: Record<string, string> = started.has(index) ? {} : { role: 'assistant' };
        started.add(index);
        if (finish === null || text) delta.content = text;
        return {
          ...base,
          object: 'chat.completion.chunk',
          choices: [{ index, delta, logprobs: null, finish_reason: finish }],
        };
      },
      whole: ([g]) => ({
        ...base,
        choices: g!.choices.map((c) => ({
          index: c.index,
          message: { role: 'assistant', content: c.text, refusal: null },
          logprobs: null,
          finish_reason: c.finishReason,
        })),
      }),
    });
  }

  /**
   * Generates every prompt's n choices (all batched with whatever else is decoding) and answers:
   * one JSON body, or a stream of chunks then `data: [DONE]`. A client that goes away aborts the
   * generations, which frees their rows.
   */
  private async run(
    req: IncomingMessage,
    res: ServerResponse,
    prompts: Prompt[],
    maxTokens: number[],
    s: ReturnType<Api['sampling']>,
    stopIds: number[],
    stream: boolean,
    includeUsage: boolean,
    shape: {
      chunk: (index: number, text: string, finish: FinishReason | null) => Record<string, unknown>;
      whole: (results: GenerationResult[]) => Record<string, unknown>;
    },
  ): Promise<void> {
    const abort = new AbortController();
    const gone = () => {
      if (!res.writableFinished) abort.abort();
    };
    res.on('close', gone);
    let left = prompts.length * s.n;
    let last: { index: number; reason: FinishReason } | undefined;
    const send = (data: unknown) => {
      if (!res.writableEnded) res.write(`data: ${JSON.stringify(data)}\n\n`);
    };
    if (stream) {
      res.writeHead(200, {
        'content-type': 'text/event-stream',
        'cache-control': 'no-cache',
        connection: 'keep-alive',
      });
      res.flushHeaders();
    }
    try {
      const results = await Promise.all(
        prompts.map((p, pi) =>
          this.scheduler.generate({
            prompt: p.ids,
            n: s.n,
            maxTokens: maxTokens[pi]!,
            temperature: s.temperature,
            topP: s.topP,
            seed: s.seed,
            stopIds,
            stop: s.stop,
            signal: abort.signal,
            ...(stream
              ? {
                  onText: (i: number, text: string) => send(shape.chunk(pi * s.n + i, text, null)),
                  onFinish: (i: number, reason: FinishReason) => {
                    // The last choice's finish waits for the usage counts, which it carries.
                    if (--left === 0) last = { index: pi * s.n + i, reason };
                    else send(shape.chunk(pi * s.n + i, '', reason));
                  },
                }
              : {}),
          }),
        ),
      );
      const usage = usageOf(
        results.reduce((a, g) => a + g.promptTokens * s.n, 0),
        results.reduce((a, g) => a + g.completionTokens, 0),
      );
      if (!stream) return sendJson(res, 200, { ...shape.whole(results), usage });
      // Without include_usage the last finishing chunk carries the usage; with it, a chunk of its own
      // with no choices follows, as OpenAI sends it.
      const final = shape.chunk(last!.index, '', last!.reason);
      if (includeUsage) {
        send(final);
        send({ ...final, choices: [], usage });
      } else send({ ...final, usage });
      res.end('data: [DONE]\n\n');
    } catch (e) {
      if (e instanceof AbortedError) return;
      throw e;
    } finally {
      res.off('close', gone);
    }
  }
}
