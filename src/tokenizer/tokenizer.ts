/**
 * BPE tokenizer, compatible with Hugging Face `tokenizers` (`tokenizer.json`).
 *
 * Id layout of tokenizers trained here: 0..9 are the special tokens in {@link SPECIAL_TOKENS}
 * order, 10..265 are the 256 bytes (id = 10 + byte value), then merged tokens in merge order.
 * Loaded tokenizers keep the file's ids; special tokens the file lacks are appended after its
 * highest id. Lathe's own pipeline (byte-level, no normalizer) runs on a fast path; other
 * `tokenizer.json` pipelines (Llama 3, Qwen2, Mistral, SmolLM2, ...) run on {@link HfPipeline}.
 */
import { mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import { randomBytes } from 'node:crypto';
import { AddedTokenSplitter, type AddedToken } from './added-tokens.js';
import { BpeModel } from './bpe.js';
import { BYTE_TO_CHAR, byteLevelToBytes } from './bytes.js';
import { chatTemplateFor, renderChatText, type ChatMessage, type ToolSpec } from './chat-template.js';
import { componentsOf, parseTokenizerJson, toTokenizerJson, type TokenizerSpec } from './hf-json.js';
import { HfPipeline } from './pipeline.js';
import type { Wrap } from './post-processors.js';
import { nextPretoken } from './pretokenize.js';
import { SPECIAL_TOKEN_NAMES, SPECIAL_TOKENS, type SpecialTokenIds, type SpecialTokenName } from './special-tokens.js';
import { trainBpe, type TrainInput, type TrainOptions } from './train.js';

/** Options for {@link Tokenizer.encode}. */
export interface EncodeOptions {
  /** Prepend {@link Tokenizer.special}`.bos`. */
  bos?: boolean;
  /** Append {@link Tokenizer.special}`.eos`. */
  eos?: boolean;
  /**
   * Add the special tokens the file's post-processor adds, as HF `encode(text)` and transformers'
   * `tokenizer(text)` do (Llama 3's `<|begin_of_text|>`, Llama 2's `<s>`, ...). transformers 5 ignores
   * tokenizer_config.json's `add_bos_token`/`add_eos_token` when there is a tokenizer.json, and so does Lathe.
   */
  addSpecialTokens?: boolean;
}

/** What an HF folder's tokenizer_config.json (or special_tokens_map.json) says about the tokenizer. */
export interface HfTokenizerInfo {
  /** `bos_token`, `eos_token`, `pad_token`, `unk_token` (null when unset). */
  bosToken: string | null;
  eosToken: string | null;
  padToken: string | null;
  unkToken: string | null;
  /** `add_bos_token` / `add_eos_token`, when set (transformers 5 ignores them when there is a tokenizer.json). */
  addBosToken?: boolean;
  addEosToken?: boolean;
  /** The model's own Jinja chat template (`chat_template`, or chat_template.jinja), or null. */
  chatTemplate: string | null;
  /** `model_max_length`, when set. */
  modelMaxLength?: number;
  /** `tokenizer_class`, when set. */
  tokenizerClass?: string;
}

/** Options for {@link Tokenizer.fromJSON}. */
export interface FromJsonOptions {
  /**
   * The strings of the bos, eos and pad tokens (e.g. `<|begin_of_text|>`), which then stand for
   * `special.bos`/`eos`/`pad` instead of Lathe's `<|bos|>`, `<|eos|>`, `<|pad|>`.
   */
  specialTokens?: Partial<Record<'bos' | 'eos' | 'pad', string>>;
  /** What the folder's tokenizer_config.json says, kept as {@link Tokenizer.hf}. */
  hf?: HfTokenizerInfo;
}

/** Options for {@link Tokenizer.decode}. */
export interface DecodeOptions {
  /** Drop special tokens from the output. */
  skipSpecial?: boolean;
}

/** Options for {@link Tokenizer.renderChat}. */
export interface RenderChatOptions {
  /** End with `<|assistant|>` so a model continues as the assistant. */
  addGenerationPrompt?: boolean;
  /** Tool definitions the chat may call, rendered first (HF `apply_chat_template(..., tools=...)`). */
  tools?: readonly ToolSpec[];
}

/** Token ids of a rendered chat and its loss mask (1 = train on this token). */
export interface RenderedChatIds {
  ids: number[];
  mask: number[];
}

/** Options for {@link Tokenizer.hfTokenizerConfig}. */
export interface HfTokenizerConfigOptions {
  /** `model_max_length`: the model's context length. Default 2048. */
  modelMaxLength?: number;
}

const utf8Decoder = new TextDecoder('utf-8', { ignoreBOM: true });

/** A BPE tokenizer. Immutable once built. */
export class Tokenizer {
  /**
   * Ids of the special tokens (`<|bos|>`, `<|eos|>`, `<|pad|>`, chat roles, `<|end|>`, FIM markers);
   * for a tokenizer loaded with `loadHfTokenizer`, bos, eos and pad are the model's own.
   */
  readonly special: SpecialTokenIds;
  /** The token strings of {@link special}. */
  readonly specialTokens: Readonly<Record<SpecialTokenName, string>>;
  /** Jinja chat template for HF `apply_chat_template`; renders the same text as {@link renderChat}. */
  readonly chatTemplate: string;
  /** What the HF folder's tokenizer_config.json said, for a tokenizer loaded with `loadHfTokenizer`. */
  readonly hf: HfTokenizerInfo | null;

  private readonly spec: TokenizerSpec;
  private readonly idToTokenTable: Array<string | undefined>;
  private readonly tokenToIdTable = new Map<string, number>();
  private readonly tokenBytes: Array<Uint8Array | undefined>;
  private readonly isSpecial: Uint8Array;
  private readonly model: BpeModel;
  /** Null on the fast path: Lathe's own byte-level pipeline. */
  private readonly pipeline: HfPipeline | null;
  private readonly splitter: AddedTokenSplitter;
  private readonly wrap: Wrap;

  private constructor(
    spec: TokenizerSpec,
    specialContents: Readonly<Record<SpecialTokenName, string>> = SPECIAL_TOKENS,
    hf: HfTokenizerInfo | null = null,
  ) {
    this.spec = spec;
    this.hf = hf;
    this.specialTokens = Object.freeze({ ...specialContents });
    let size = 0;
    for (const id of spec.vocab.values()) size = Math.max(size, id + 1);
    for (const t of spec.addedTokens) size = Math.max(size, t.id + 1);

    this.idToTokenTable = new Array<string | undefined>(size);
    for (const [token, id] of spec.vocab) {
      this.idToTokenTable[id] = token;
      this.tokenToIdTable.set(token, id);
    }
    for (const t of spec.addedTokens) {
      this.idToTokenTable[t.id] = t.content;
      this.tokenToIdTable.set(t.content, t.id);
    }

    // As HF's ByteLevel decoder: a token made only of byte-level chars decodes to those bytes,
    // anything else (e.g. most added tokens) to its own UTF-8.
    this.tokenBytes = this.idToTokenTable.map((t) =>
      t === undefined ? undefined : (byteLevelToBytes(t) ?? Buffer.from(t, 'utf8')),
    );
    this.isSpecial = new Uint8Array(size);
    for (const t of spec.addedTokens) if (t.special) this.isSpecial[t.id] = 1;

    this.model = new BpeModel(spec);
    // The fast path needs Lathe's pipeline and a model that sees bytes the way the byte table does.
    this.pipeline =
      spec.components === null && this.model.bytesExact ? null : new HfPipeline(componentsOf(spec), this.model);
    this.splitter = new AddedTokenSplitter(spec.addedTokens, this.pipeline?.normalize ?? null);

    const special: Partial<Record<SpecialTokenName, number>> = {};
    for (const name of SPECIAL_TOKEN_NAMES) {
      const id = spec.addedTokens.find((t) => t.content === specialContents[name])?.id;
      if (id === undefined) throw new Error(`tokenizer: special token ${specialContents[name]} is missing`);
      special[name] = id;
    }
    this.special = Object.freeze(special as Record<SpecialTokenName, number>);
    this.chatTemplate = chatTemplateFor(specialContents.bos);
    // transformers 5 also takes the post-processor from tokenizer.json (it drops add_bos_token/add_eos_token then).
    this.wrap = this.pipeline?.wrap ?? { before: [], after: [] };
  }

  /**
   * Trains a new tokenizer. `opts.vocabSize` counts everything: the 10 special tokens, the 256
   * byte tokens and the learned merges; the result has exactly that size unless the corpus runs
   * out of pairs occurring `minFrequency` (default 2) times.
   */
  static async train(texts: TrainInput | string, opts: TrainOptions): Promise<Tokenizer> {
    const specialStrings = SPECIAL_TOKEN_NAMES.map((n) => SPECIAL_TOKENS[n]);
    const { merges } = await trainBpe(texts, { ...opts, specialTokens: specialStrings });
    const vocab = new Map<string, number>();
    specialStrings.forEach((s) => vocab.set(s, vocab.size));
    for (const ch of BYTE_TO_CHAR) vocab.set(ch, vocab.size);
    for (const [a, b] of merges) if (!vocab.has(a + b)) vocab.set(a + b, vocab.size);
    const addedTokens: AddedToken[] = specialStrings.map((content, id) => ({
      id,
      content,
      special: true,
      singleWord: false,
      lstrip: false,
      rstrip: false,
      normalized: false,
    }));
    return new Tokenizer({
      vocab,
      merges,
      addedTokens,
      addPrefixSpace: false,
      useRegex: true,
      ignoreMerges: false,
      unkToken: null,
      fuseUnk: false,
      byteFallback: false,
      continuingSubwordPrefix: null,
      endOfWordSuffix: null,
      components: null,
      specialTokens: {},
    });
  }

  /**
   * Builds a tokenizer from a parsed HF `tokenizer.json` (a BPE model; see README for the pipeline
   * components it accepts). Special tokens the file lacks are added as special added tokens
   * (reusing a vocab id if the string is in the vocab).
   */
  static fromJSON(obj: unknown, opts: FromJsonOptions = {}): Tokenizer {
    const spec = parseTokenizerJson(obj);
    let next = 0;
    for (const id of spec.vocab.values()) next = Math.max(next, id + 1);
    for (const t of spec.addedTokens) next = Math.max(next, t.id + 1);
    const addedTokens = [...spec.addedTokens];
    // The file's own record (a tokenizer Lathe saved after loadHfTokenizer), unless the caller says otherwise.
    const chosen = { ...spec.specialTokens, ...opts.specialTokens };
    const contents: Record<SpecialTokenName, string> = { ...SPECIAL_TOKENS, ...chosen };
    for (const name of SPECIAL_TOKEN_NAMES) {
      const content = contents[name];
      const existing = addedTokens.findIndex((t) => t.content === content);
      if (existing >= 0) {
        // Must be cut out of text before BPE for chat rendering to work; HF would do the same.
        addedTokens[existing] = { ...addedTokens[existing]!, special: true };
        continue;
      }
      const id = spec.vocab.get(content) ?? next++;
      addedTokens.push({
        id,
        content,
        special: true,
        singleWord: false,
        lstrip: false,
        rstrip: false,
        normalized: false,
      });
    }
    const specialTokens: Partial<Record<'bos' | 'eos' | 'pad', string>> = {};
    for (const name of ['bos', 'eos', 'pad'] as const)
      if (contents[name] !== SPECIAL_TOKENS[name]) specialTokens[name] = contents[name];
    return new Tokenizer({ ...spec, addedTokens, specialTokens }, contents, opts.hf ?? null);
  }

  /** Loads a `tokenizer.json` written by {@link save} or by HF `tokenizers` (a BPE model). */
  static async load(path: string): Promise<Tokenizer> {
    const text = await readFile(path, 'utf8');
    let obj: unknown;
    try {
      obj = JSON.parse(text);
    } catch (err) {
      throw new Error(`tokenizer.json: invalid JSON in ${path}: ${(err as Error).message}`, { cause: err });
    }
    try {
      return Tokenizer.fromJSON(obj);
    } catch (err) {
      throw new Error(`${(err as Error).message} (in ${path})`, { cause: err });
    }
  }

  /** Writes HF `tokenizer.json` to `path` atomically (temporary file, then rename). */
  async save(path: string): Promise<void> {
    await mkdir(dirname(path), { recursive: true });
    const tmp = `${path}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`;
    try {
      await writeFile(tmp, JSON.stringify(this.toJSON()));
      await rename(tmp, path);
    } catch (err) {
      await rm(tmp, { force: true });
      throw err;
    }
  }

  /** The HF `tokenizer.json` object for this tokenizer. */
  toJSON(): Record<string, unknown> {
    return toTokenizerJson(this.spec);
  }

  /** Contents for HF `tokenizer_config.json` (special tokens, chat template, tokenizer class). */
  hfTokenizerConfig(opts: HfTokenizerConfigOptions = {}): Record<string, unknown> {
    const decoder: Record<string, unknown> = {};
    for (const t of [...this.spec.addedTokens].sort((a, b) => a.id - b.id)) {
      decoder[String(t.id)] = {
        content: t.content,
        lstrip: t.lstrip,
        normalized: t.normalized,
        rstrip: t.rstrip,
        single_word: t.singleWord,
        special: t.special,
      };
    }
    const roleTokens: SpecialTokenName[] = [
      'system',
      'user',
      'assistant',
      'end',
      'fimPrefix',
      'fimMiddle',
      'fimSuffix',
    ];
    const hf = this.hf;
    return {
      added_tokens_decoder: decoder,
      additional_special_tokens: roleTokens.map((n) => this.specialTokens[n]),
      bos_token: this.specialTokens.bos,
      eos_token: this.specialTokens.eos,
      pad_token: this.specialTokens.pad,
      ...(hf?.unkToken ? { unk_token: hf.unkToken } : {}),
      chat_template: this.chatTemplate,
      clean_up_tokenization_spaces: false,
      model_max_length: opts.modelMaxLength ?? 2048,
      tokenizer_class: 'PreTrainedTokenizerFast',
    };
  }

  /** Number of ids (highest id + 1), i.e. the embedding table size a model needs. */
  get vocabSize(): number {
    return this.idToTokenTable.length;
  }

  /** The token string for an id (byte-level spelling for BPE tokens), or undefined. */
  idToToken(id: number): string | undefined {
    return this.idToTokenTable[id];
  }

  /** The id of a token string (byte-level spelling, or an added token's content), or undefined. */
  tokenToId(token: string): number | undefined {
    return this.tokenToIdTable.get(token);
  }

  /**
   * Encodes text as HF `encode(text, add_special_tokens=False)` does (unless `addSpecialTokens`).
   * Added-token strings in the text (special or not) become their ids, as in HF.
   */
  encode(text: string, opts: EncodeOptions = {}): number[] {
    const out: number[] = [];
    if (opts.bos) out.push(this.special.bos);
    if (opts.addSpecialTokens) out.push(...this.wrap.before);
    if (this.pipeline === null) {
      for (const piece of this.splitter.split(text)) {
        if (piece.id >= 0) out.push(piece.id);
        else
          this.encodeOrdinary(
            piece.start === 0 && piece.end === text.length ? text : text.slice(piece.start, piece.end),
            out,
          );
      }
    } else {
      for (const piece of this.splitter.splitNormalized(text)) {
        if (piece.id >= 0) out.push(piece.id);
        else this.pipeline.encodePiece(piece.text, piece.first, out);
      }
    }
    if (opts.addSpecialTokens) out.push(...this.wrap.after);
    if (opts.eos) out.push(this.special.eos);
    return out;
  }

  /**
   * Decodes ids to text as HF `decode` does; for byte-level tokenizers the exact inverse of
   * {@link encode}. Byte sequences that are not valid UTF-8 (e.g. a character cut between tokens)
   * become U+FFFD. Unknown ids are skipped, as in HF.
   */
  decode(ids: ArrayLike<number>, opts: DecodeOptions = {}): string {
    const skip = opts.skipSpecial === true;
    if (this.pipeline !== null && !this.pipeline.byteLevelDecoder) {
      const tokens: string[] = [];
      for (let i = 0; i < ids.length; i++) {
        const id = ids[i]!;
        const t = this.idToTokenTable[id];
        if (t !== undefined && !(skip && this.isSpecial[id] === 1)) tokens.push(t);
      }
      return this.pipeline.decodeTokens(tokens);
    }
    let total = 0;
    for (let i = 0; i < ids.length; i++) {
      const id = ids[i]!;
      const bytes = this.tokenBytes[id];
      if (bytes !== undefined && !(skip && this.isSpecial[id] === 1)) total += bytes.length;
    }
    const buf = new Uint8Array(total);
    let pos = 0;
    for (let i = 0; i < ids.length; i++) {
      const id = ids[i]!;
      const bytes = this.tokenBytes[id];
      if (bytes !== undefined && !(skip && this.isSpecial[id] === 1)) {
        buf.set(bytes, pos);
        pos += bytes.length;
      }
    }
    return utf8Decoder.decode(buf);
  }

  /**
   * Tokenizes a chat as {@link chatTemplate} renders it. `mask[i]` is 1 for the content, tool calls
   * and closing `<|end|>` of assistant messages whose weight is not 0, else 0. The ids equal `encode`
   * of the rendered text.
   */
  renderChat(messages: readonly ChatMessage[], opts: RenderChatOptions = {}): RenderedChatIds {
    const { text, trainedSpans } = renderChatText(
      messages,
      opts.addGenerationPrompt === true,
      opts.tools,
      this.specialTokens.bos,
    );
    const ids: number[] = [];
    const mask: number[] = [];
    let span = 0;
    // Each piece encodes to ids at input offset `at`; pieces never straddle a span boundary, as every
    // span starts after and ends with a special token.
    const pieces: Array<{ at: number; encode: () => void }> = [];
    if (this.pipeline === null) {
      for (const p of this.splitter.split(text))
        pieces.push({
          at: p.at,
          encode: () => (p.id >= 0 ? ids.push(p.id) : this.encodeOrdinary(text.slice(p.start, p.end), ids)),
        });
    } else {
      const pipeline = this.pipeline;
      for (const p of this.splitter.splitNormalized(text))
        pieces.push({
          at: p.at,
          encode: () => (p.id >= 0 ? ids.push(p.id) : pipeline.encodePiece(p.text, p.first, ids)),
        });
    }
    for (const piece of pieces) {
      while (span < trainedSpans.length && trainedSpans[span]![1] <= piece.at) span++;
      const inSpan = span < trainedSpans.length && trainedSpans[span]![0] <= piece.at ? 1 : 0;
      const before = ids.length;
      piece.encode();
      for (let i = before; i < ids.length; i++) mask.push(inSpan);
    }
    return { ids, mask };
  }

  /** Encodes text that contains no added tokens. */
  private encodeOrdinary(text: string, out: number[]): void {
    if (this.spec.addPrefixSpace && !text.startsWith(' ')) text = ' ' + text;
    if (!this.spec.useRegex) {
      this.encodeWord(text, out);
      return;
    }
    for (let i = 0; i < text.length;) {
      const end = nextPretoken(text, i);
      this.encodeWord(text.slice(i, end), out);
      i = end;
    }
  }

  private encodeWord(word: string, out: number[]): void {
    this.model.encodeBytes(word, out);
  }
}
