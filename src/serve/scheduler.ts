import type { BatchDecoder, Engine } from '../engine/engine.js';
import { sampleToken } from '../engine/sample.js';
import { Rng } from '../random.js';
import type { Tokenizer } from '../tokenizer/index.js';

// Continuous batching: requests join the engine's batch decoder as they come (their prompt
// prefilled), every step advances all live rows in one forward pass, and a row that finishes, or
// whose client went away, leaves at once so a waiting request can take its place.

/** What one generation asks for. */
export interface GenerationRequest {
  /** Prompt token ids (bos first). */
  prompt: number[];
  /** Completions of this prompt (rows that share its prefill). */
  n: number;
  maxTokens: number;
  /** 0 is greedy. */
  temperature: number;
  topP: number;
  /** Choice i samples from Rng(seed + i). */
  seed: number;
  /** Token ids that end a completion (not part of it). */
  stopIds: readonly number[];
  /** Strings that end a completion; it is cut before the first one. */
  stop: readonly string[];
  /** Aborting frees the request's rows (a client that went away). */
  signal?: AbortSignal;
  /** Streaming: text of choice `index` as it becomes final (never a prefix of a stop string). */
  onText?: (index: number, text: string) => void;
  /** Streaming: choice `index` finished. */
  onFinish?: (index: number, reason: FinishReason) => void;
}

/** Why a completion ended: a stop token or string, or max_tokens / the context. */
export type FinishReason = 'stop' | 'length';

/** One finished completion. */
export interface Choice {
  index: number;
  text: string;
  ids: number[];
  finishReason: FinishReason;
}

/** What a generation produced. */
export interface GenerationResult {
  choices: Choice[];
  promptTokens: number;
  completionTokens: number;
}

/** Counters for /health and the tests. */
export interface SchedulerStats {
  /** Rows decoding now. */
  rows: number;
  /** Requests waiting for room in the batch. */
  waiting: number;
  /** Largest number of rows one step has advanced. */
  peakBatch: number;
  /** Forward steps run (prefills not counted). */
  steps: number;
}

/** The request was aborted (its client went away). */
export class AbortedError extends Error {
  constructor() {
    super('the request was aborted');
  }
}

interface Pending {
  req: GenerationRequest;
  resolve: (r: GenerationResult) => void;
  reject: (e: unknown) => void;
  choices: Row[];
  done: number;
  aborted: boolean;
}

interface Row {
  owner: Pending;
  index: number;
  row: number;
  rng: Rng;
  ids: number[];
  /** Position of the next token fed (the prompt's length at first). */
  pos: number;
  /** The token to feed at the next step. */
  next: number;
  /** Characters of the text already handed to onText. */
  sent: number;
  finished?: FinishReason;
  text: string;
}

/** Runs generations on one engine, batching every live completion into each decode step. */
export class Scheduler {
  private readonly decoder: BatchDecoder;
  private readonly waiting: Pending[] = [];
  private live: Row[] = [];
  private running = false;
  private closed = false;
  readonly stats: SchedulerStats = { rows: 0, waiting: 0, peakBatch: 0, steps: 0 };

  constructor(
    private readonly engine: Engine,
    private readonly tokenizer: Tokenizer,
    /** Most rows decoding at once; requests beyond wait. */
    readonly maxBatch = 16,
  ) {
    this.decoder = engine.batchDecoder();
  }

  /** The model's context length. */
  get context(): number {
    return this.engine.spec.context;
  }

  /** Queues a generation; resolves when every choice finished, rejects with AbortedError when aborted. */
  generate(req: GenerationRequest): Promise<GenerationResult> {
    if (this.closed) return Promise.reject(new Error('the server is shutting down'));
    if (req.n > this.maxBatch) return Promise.reject(new Error(`n ${req.n} exceeds the batch size ${this.maxBatch}`));
    return new Promise<GenerationResult>((resolve, reject) => {
      const p: Pending = { req, resolve, reject, choices: [], done: 0, aborted: false };
      if (req.signal?.aborted) return reject(new AbortedError());
      req.signal?.addEventListener('abort', () => this.abort(p), { once: true });
      this.waiting.push(p);
      this.stats.waiting = this.waiting.length;
      if (!this.running) void this.loop();
    });
  }

  /** Stops taking requests and frees the decoder once the live ones finish. */
  async close(): Promise<void> {
    this.closed = true;
    for (const p of this.waiting.splice(0)) p.reject(new Error('the server is shutting down'));
    while (this.running) await new Promise((r) => setTimeout(r, 10));
    this.decoder.close();
  }

  private abort(p: Pending): void {
    if (p.aborted || p.done === p.req.n) return;
    p.aborted = true;
    const w = this.waiting.indexOf(p);
    if (w >= 0) this.waiting.splice(w, 1);
    for (const c of p.choices) if (!c.finished) this.decoder.drop(c.row);
    this.live = this.live.filter((c) => c.owner !== p);
    this.stats.rows = this.decoder.size;
    this.stats.waiting = this.waiting.length;
    p.reject(new AbortedError());
  }

  private async loop(): Promise<void> {
    this.running = true;
    try {
      while (this.waiting.length || this.live.length) {
        await this.admit();
        const rows = this.live;
        if (rows.length) {
          this.stats.peakBatch = Math.max(this.stats.peakBatch, rows.length);
          const out = await this.decoder.step(
            rows.map((c) => c.row),
            Int32Array.from(rows.map((c) => c.next)),
          );
          this.stats.steps++;
          const V = out.length / rows.length;
          rows.forEach((c, i) => {
            if (!c.owner.aborted) this.take(c, out.subarray(i * V, (i + 1) * V));
          });
          this.live = this.live.filter((c) => !c.finished && !c.owner.aborted);
        }
        this.stats.rows = this.decoder.size;
        // Let the HTTP side read new requests and notice closed sockets between steps.
        await new Promise((r) => setImmediate(r));
      }
    } catch (e) {
      // The engine failed (its process died): every request in flight fails; the server stays up.
      for (const p of new Set([...this.live.map((c) => c.owner), ...this.waiting.splice(0)])) p.reject(e);
      for (const c of this.live) this.decoder.drop(c.row);
      this.live = [];
    } finally {
      this.running = false;
      this.stats.rows = this.decoder.size;
      this.stats.waiting = this.waiting.length;
    }
  }

  /** Prefills waiting requests while their rows fit in the batch; each samples its first token at once. */
  private async admit(): Promise<void> {
    while (this.waiting.length && this.live.length + this.waiting[0]!.req.n <= this.maxBatch) {
      const p = this.waiting.shift()!;
      this.stats.waiting = this.waiting.length;
      const { rows, logits } = await this.decoder.add(p.req.prompt, p.req.n);
      if (p.aborted) {
        for (const r of rows) this.decoder.drop(r);
        continue;
      }
      p.choices = rows.map((row, index) => ({
        owner: p,
        index,
        row,
        rng: new Rng(p.req.seed + index),
        ids: [],
        pos: p.req.prompt.length,
        next: 0,
        sent: 0,
        text: '',
      }));
      for (const c of p.choices) {
        this.take(c, logits);
        if (!c.finished) this.live.push(c);
      }
      this.stats.rows = this.decoder.size;
    }
  }

  /** Samples a row's next token from its logits, as engine/sample.ts generate does, and streams its text. */
  private take(c: Row, logits: Float32Array): void {
    const r = c.owner.req;
    const next = sampleToken(logits, { temperature: r.temperature, topP: r.topP }, c.rng);
    if (r.stopIds.includes(next)) return this.finish(c, 'stop');
    c.ids.push(next);
    c.pos++;
    const text = this.tokenizer.decode(c.ids);
    const cut = firstStop(text, r.stop);
    if (cut >= 0) {
      c.text = text.slice(0, cut);
      return this.finish(c, 'stop');
    }
    c.text = text;
    const safe = text.length - heldBack(text, r.stop);
    if (safe > c.sent) {
      r.onText?.(c.index, text.slice(c.sent, safe));
      c.sent = safe;
    }
    if (c.ids.length >= r.maxTokens || c.pos >= this.context) return this.finish(c, 'length');
    c.next = next;
  }

  private finish(c: Row, reason: FinishReason): void {
    const p = c.owner;
    c.finished = reason;
    this.decoder.drop(c.row);
    if (c.text.length > c.sent) p.req.onText?.(c.index, c.text.slice(c.sent));
    c.sent = c.text.length;
    p.req.onFinish?.(c.index, reason);
    if (++p.done < p.req.n) return;
    const choices = p.choices.map((x) => ({ index: x.index, text: x.text, ids: x.ids, finishReason: x.finished! }));
    p.resolve({
      choices,
      promptTokens: p.req.prompt.length,
      completionTokens: choices.reduce((a, x) => a + x.ids.length, 0),
    });
  }
}

/** Index of the first stop string in text, or -1. */
export function firstStop(text: string, stops: readonly string[]): number {
  let at = -1;
  for (const s of stops) {
    const i = text.indexOf(s);
    if (i >= 0 && (at < 0 || i < at)) at = i;
  }
  return at;
}

/**
 * Characters at the end of text to hold back from a stream: the longest tail that could still grow
 * into a stop string, or an incomplete UTF-8 character (decoded as U+FFFD) that the next token completes.
 */
export function heldBack(text: string, stops: readonly string[]): number {
  let hold = 0;
  for (const s of stops)
    for (let k = Math.min(s.length - 1, text.length); k > hold; k--)
      if (text.endsWith(s.slice(0, k))) {
        hold = k;
        break;
      }
  let bad = 0;
  while (bad < 3 && text.charCodeAt(text.length - 1 - bad) === 0xfffd) bad++;
  return Math.max(hold, bad);
}
