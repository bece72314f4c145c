/**
 * Byte-level BPE tokenizer, compatible with Hugging Face `tokenizers` (`tokenizer.json`).
 *
 * Id layout of tokenizers trained here: 0..9 are the special tokens in {@link SPECIAL_TOKENS}
 * order, 10..265 are the 256 bytes (id = 10 + byte value), then merged tokens in merge order.
 * Loaded tokenizers keep the file's ids; special tokens the file lacks are appended after its
 * highest id.
 */
import { mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import { randomBytes } from 'node:crypto';
import { AddedTokenSplitter, type AddedToken } from './added-tokens.js';
import { BYTE_TO_CHAR, byteLevelToBytes, writeUtf8 } from './bytes.js';
import { CHAT_TEMPLATE, renderChatText, type ChatMessage, type ToolSpec } from './chat-template.js';
import { parseTokenizerJson, toTokenizerJson, type TokenizerSpec } from './hf-json.js';
import { MergeRanks } from './merge-ranks.js';
import { nextPretoken } from './pretokenize.js';
import { SPECIAL_TOKEN_NAMES, SPECIAL_TOKENS, type SpecialTokenIds, type SpecialTokenName } from './special-tokens.js';
import { trainBpe, type TrainInput, type TrainOptions } from './train.js';

/** Options for {@link Tokenizer.encode}. */
export interface EncodeOptions {
  /** Prepend `<|bos|>`. */
  bos?: boolean;
  /** Append `<|eos|>`. */
  eos?: boolean;
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

// Words longer than this (in UTF-16 units) are not cached, as in HF.
const MAX_CACHED_WORD = 256;
// Entries per cache generation; at most two generations are alive.
const CACHE_GENERATION = 1 << 16;

const utf8Decoder = new TextDecoder('utf-8', { ignoreBOM: true });

/** A byte-level BPE tokenizer. Immutable once built. */
export class Tokenizer {
  /** Ids of the special tokens (`<|bos|>`, `<|eos|>`, `<|pad|>`, chat roles, `<|end|>`, FIM markers). */
  readonly special: SpecialTokenIds;
  /** Jinja chat template for HF `apply_chat_template`; renders the same text as {@link renderChat}. */
  readonly chatTemplate: string = CHAT_TEMPLATE;

  private readonly spec: TokenizerSpec;
  private readonly idToTokenTable: Array<string | undefined>;
  private readonly tokenToIdTable = new Map<string, number>();
  private readonly tokenBytes: Array<Uint8Array | undefined>;
  private readonly isSpecial: Uint8Array;
  private readonly byteToId = new Int32Array(256).fill(-1);
  private readonly unkId: number;
  private readonly ranks: MergeRanks;
  private readonly splitter: AddedTokenSplitter;
  // Two-generation word cache: hits in the old generation are promoted; a full current generation
  // becomes the old one. Values: a single id, or several.
  private cache = new Map<string, number | number[]>();
  private oldCache = new Map<string, number | number[]>();
  private scratch = new Int32Array(256);

  private constructor(spec: TokenizerSpec) {
    this.spec = spec;
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

    for (let b = 0; b < 256; b++) this.byteToId[b] = spec.vocab.get(BYTE_TO_CHAR[b]!) ?? -1;
    this.unkId = spec.unkToken === null ? -1 : (spec.vocab.get(spec.unkToken) ?? -1);
    this.ranks = new MergeRanks(
      spec.merges.map(([a, b]) => [spec.vocab.get(a)!, spec.vocab.get(b)!, spec.vocab.get(a + b)!] as const),
    );
    this.splitter = new AddedTokenSplitter(spec.addedTokens);

    const special: Partial<Record<SpecialTokenName, number>> = {};
    for (const name of SPECIAL_TOKEN_NAMES) {
      const id = spec.addedTokens.find((t) => t.content === SPECIAL_TOKENS[name])?.id;
      if (id === undefined) throw new Error(`tokenizer: special token ${SPECIAL_TOKENS[name]} is missing`);
      special[name] = id;
    }
    this.special = Object.freeze(special as Record<SpecialTokenName, number>);
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
    });
  }

  /**
   * Builds a tokenizer from a parsed HF `tokenizer.json` (ByteLevel BPE). Special tokens the file
   * lacks are added as special added tokens (reusing a vocab id if the string is in the vocab).
   */
  static fromJSON(obj: unknown): Tokenizer {
    const spec = parseTokenizerJson(obj);
    let next = 0;
    for (const id of spec.vocab.values()) next = Math.max(next, id + 1);
    for (const t of spec.addedTokens) next = Math.max(next, t.id + 1);
    const addedTokens = [...spec.addedTokens];
    for (const name of SPECIAL_TOKEN_NAMES) {
      const content = SPECIAL_TOKENS[name];
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
    return new Tokenizer({ ...spec, addedTokens });
  }

  /** Loads a `tokenizer.json` written by {@link save} or by HF `tokenizers` (ByteLevel BPE). */
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
    return {
      added_tokens_decoder: decoder,
      additional_special_tokens: roleTokens.map((n) => SPECIAL_TOKENS[n]),
      bos_token: SPECIAL_TOKENS.bos,
      eos_token: SPECIAL_TOKENS.eos,
      pad_token: SPECIAL_TOKENS.pad,
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

  /** Encodes text. Special-token strings in the text become their special ids, as in HF. */
  encode(text: string, opts: EncodeOptions = {}): number[] {
    const out: number[] = [];
    if (opts.bos) out.push(this.special.bos);
    for (const piece of this.splitter.split(text)) {
      if (piece.id >= 0) out.push(piece.id);
      else
        this.encodeOrdinary(
          piece.start === 0 && piece.end === text.length ? text : text.slice(piece.start, piece.end),
          out,
        );
    }
    if (opts.eos) out.push(this.special.eos);
    return out;
  }

  /**
   * Decodes ids to text; the exact inverse of {@link encode}. Byte sequences that are not valid
   * UTF-8 (e.g. a character cut between tokens) become U+FFFD. Unknown ids are skipped, as in HF.
   */
  decode(ids: ArrayLike<number>, opts: DecodeOptions = {}): string {
    const skip = opts.skipSpecial === true;
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
    const { text, trainedSpans } = renderChatText(messages, opts.addGenerationPrompt === true, opts.tools);
    const ids: number[] = [];
    const mask: number[] = [];
    let span = 0;
    for (const piece of this.splitter.split(text)) {
      // Pieces never straddle a span boundary: every span starts after and ends with a special token.
      while (span < trainedSpans.length && trainedSpans[span]![1] <= piece.at) span++;
      const inSpan = span < trainedSpans.length && trainedSpans[span]![0] <= piece.at ? 1 : 0;
      const before = ids.length;
      if (piece.id >= 0) ids.push(piece.id);
      else this.encodeOrdinary(text.slice(piece.start, piece.end), ids);
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
    let hit = this.cache.get(word);
    if (hit === undefined) {
      hit = this.oldCache.get(word);
      if (hit === undefined) hit = this.bpe(word);
      if (word.length <= MAX_CACHED_WORD) {
        if (this.cache.size >= CACHE_GENERATION) {
          this.oldCache = this.cache;
          this.cache = new Map();
        }
        this.cache.set(word, hit);
      }
    }
    if (typeof hit === 'number') out.push(hit);
    else for (let i = 0; i < hit.length; i++) out.push(hit[i]!);
  }

  /** BPE for one pre-token word (uncached). */
  private bpe(word: string): number | number[] {
    if (this.spec.ignoreMerges) {
      let spelled = '';
      const bytes = Buffer.from(word, 'utf8');
      for (const b of bytes) spelled += BYTE_TO_CHAR[b]!;
      const id = this.spec.vocab.get(spelled);
      if (id !== undefined) return id;
    }
    if (this.scratch.length < word.length * 3) this.scratch = new Int32Array(word.length * 3);
    const sym = this.scratch;
    const nBytes = writeUtf8(word, 0, word.length, sym, 0);
    let n = 0;
    let lastWasUnk = false;
    for (let i = 0; i < nBytes; i++) {
      const id = this.byteToId[sym[i]!]!;
      if (id >= 0) {
        sym[n++] = id;
        lastWasUnk = false;
      } else if (this.unkId >= 0) {
        // HF: bytes missing from the vocab become unk (consecutive ones fused if fuse_unk), or vanish.
        if (!(this.spec.fuseUnk && lastWasUnk)) sym[n++] = this.unkId;
        lastWasUnk = true;
      }
    }
    n = this.ranks.apply(sym, n);
    if (n === 1) return sym[0]!;
    const ids = new Array<number>(n);
    for (let i = 0; i < n; i++) ids[i] = sym[i]!;
    return ids;
  }
}
