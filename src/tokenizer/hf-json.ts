/**
 * Reading and writing Hugging Face `tokenizer.json` with a BPE model. Parsing checks every field
 * Lathe depends on, compiles each pipeline component (normalizer, pre-tokenizer, decoder,
 * post-processor) so that an unsupported one fails at load time, naming its field, e.g.
 * `tokenizer.json: pre_tokenizer.pretokenizers[1].type "Whitespace" is not supported`.
 * The components are written back as they were read.
 */
import type { AddedToken } from './added-tokens.js';
import { readDecoder } from './decoders.js';
import { describe, fail, isObject, optionalBool, typeOf, type Json } from './hf-components.js';
import { readNormalizer } from './normalizers.js';
import { readPostProcessor } from './post-processors.js';
import { readPreTokenizer } from './pre-tokenizers.js';

/** The pipeline components of a `tokenizer.json` other than the model, as JSON (null: none). */
export interface HfComponents {
  normalizer: Json | null;
  pre_tokenizer: Json | null;
  post_processor: Json | null;
  decoder: Json | null;
  truncation: Json | null;
  padding: Json | null;
}

/** Everything that determines a BPE tokenizer's behaviour. */
export interface TokenizerSpec {
  /** `model.vocab`: token -> id. */
  vocab: Map<string, number>;
  /** `model.merges` in rank order. */
  merges: Array<[string, string]>;
  /** `added_tokens`, including the special tokens. */
  addedTokens: AddedToken[];
  /** `pre_tokenizer.add_prefix_space` of a plain ByteLevel pipeline. */
  addPrefixSpace: boolean;
  /** `pre_tokenizer.use_regex` of a plain ByteLevel pipeline. */
  useRegex: boolean;
  /** `model.ignore_merges`: a word found whole in the vocab is emitted as one token. */
  ignoreMerges: boolean;
  /** `model.unk_token`, used for characters (or bytes) missing from the vocab. */
  unkToken: string | null;
  /** `model.fuse_unk`. */
  fuseUnk: boolean;
  /** `model.byte_fallback`: characters missing from the vocab become `<0xNN>` byte tokens. */
  byteFallback: boolean;
  /** `model.continuing_subword_prefix`. */
  continuingSubwordPrefix: string | null;
  /** `model.end_of_word_suffix`. */
  endOfWordSuffix: string | null;
  /**
   * The other components as read from the file; null for Lathe's own pipeline (no normalizer,
   * ByteLevel pre-tokenizer, decoder and post-processor).
   */
  components: HfComponents | null;
  /**
   * The model's own bos/eos/pad token strings when they stand for Lathe's (`special.bos`, ...),
   * kept in the file as `lathe_special_tokens` (HF ignores keys it does not know).
   */
  specialTokens: Partial<Record<'bos' | 'eos' | 'pad', string>>;
}

const SPECIALS_KEY = 'lathe_special_tokens';

function parseSpecialTokens(root: Json): Partial<Record<'bos' | 'eos' | 'pad', string>> {
  const v = root[SPECIALS_KEY];
  if (v === undefined || v === null) return {};
  if (!isObject(v)) fail(`${SPECIALS_KEY} must be an object (got ${describe(v)})`);
  const out: Partial<Record<'bos' | 'eos' | 'pad', string>> = {};
  for (const [key, token] of Object.entries(v)) {
    if (key !== 'bos' && key !== 'eos' && key !== 'pad') fail(`${SPECIALS_KEY}.${key} is not one of bos, eos, pad`);
    if (typeof token !== 'string' || token === '')
      fail(`${SPECIALS_KEY}.${key} must be a token string (got ${describe(token)})`);
    out[key] = token;
  }
  return out;
}

function parseAddedTokens(root: Json): AddedToken[] {
  const list = root['added_tokens'];
  if (list === undefined || list === null) return [];
  if (!Array.isArray(list)) fail(`added_tokens must be an array (got ${describe(list)})`);
  return list.map((t: unknown, i): AddedToken => {
    const field = `added_tokens[${i}]`;
    if (!isObject(t)) fail(`${field} must be an object (got ${describe(t)})`);
    const id = t['id'];
    if (typeof id !== 'number' || !Number.isInteger(id) || id < 0)
      fail(`${field}.id must be a non-negative integer (got ${describe(id)})`);
    const content = t['content'];
    if (typeof content !== 'string') fail(`${field}.content must be a string (got ${describe(content)})`);
    const special = optionalBool(t, 'special', field, false);
    return {
      id,
      content,
      special,
      singleWord: optionalBool(t, 'single_word', field, false),
      lstrip: optionalBool(t, 'lstrip', field, false),
      rstrip: optionalBool(t, 'rstrip', field, false),
      normalized: optionalBool(t, 'normalized', field, !special),
    };
  });
}

function optionalString(obj: Json, key: string, field: string): string | null {
  const v = obj[key];
  if (v === undefined || v === null) return null;
  if (typeof v !== 'string') fail(`${field}.${key} must be a string or null (got ${describe(v)})`);
  return v;
}

type ModelFields = Omit<TokenizerSpec, 'addedTokens' | 'addPrefixSpace' | 'useRegex' | 'components' | 'specialTokens'>;

function parseModel(root: Json): ModelFields {
  const model = root['model'];
  if (model === undefined || model === null)
    fail(`model is ${model === null ? 'null' : 'missing'} (expected an object with "type": "BPE")`);
  if (!isObject(model)) fail(`model must be an object (got ${describe(model)})`);
  const type = typeOf(model, 'model');
  // HF also infers BPE from the fields when "type" is absent.
  if (type !== 'BPE' && !(type === undefined && 'merges' in model)) {
    fail(`model.type ${type === undefined ? 'is missing' : `"${type}" is not supported`} (expected "BPE")`);
  }
  const dropout = model['dropout'];
  if (dropout !== undefined && dropout !== null && dropout !== 0)
    fail(`model.dropout ${describe(dropout)} is not supported (expected null: dropout makes encoding random)`);
  const prefix = optionalString(model, 'continuing_subword_prefix', 'model');
  const suffix = optionalString(model, 'end_of_word_suffix', 'model');

  const rawVocab = model['vocab'];
  if (!isObject(rawVocab)) fail(`model.vocab must be an object mapping tokens to ids (got ${describe(rawVocab)})`);
  const vocab = new Map<string, number>();
  for (const [token, id] of Object.entries(rawVocab)) {
    if (typeof id !== 'number' || !Number.isInteger(id) || id < 0) {
      fail(`model.vocab[${JSON.stringify(token)}] must be a non-negative integer id (got ${describe(id)})`);
    }
    vocab.set(token, id);
  }

  const rawMerges = model['merges'] ?? [];
  if (!Array.isArray(rawMerges)) fail(`model.merges must be an array (got ${describe(rawMerges)})`);
  const merges: Array<[string, string]> = [];
  rawMerges.forEach((m: unknown, i) => {
    let pair: [string, string] | null = null;
    if (typeof m === 'string') {
      if (m.startsWith('#version')) return; // HF skips these header lines of merges.txt
      // Legacy "left right" form: exactly one space, as HF requires.
      const parts = m.split(' ');
      if (parts.length === 2) pair = [parts[0]!, parts[1]!];
    } else if (Array.isArray(m) && m.length === 2 && typeof m[0] === 'string' && typeof m[1] === 'string') {
      pair = [m[0], m[1]];
    }
    if (pair === null) fail(`model.merges[${i}] must be ["left", "right"] or "left right" (got ${JSON.stringify(m)})`);
    const merged = pair[0] + pair[1].slice(prefix?.length ?? 0);
    for (const part of [pair[0], pair[1], merged]) {
      if (!vocab.has(part)) fail(`model.merges[${i}] uses ${JSON.stringify(part)}, which is not in model.vocab`);
    }
    merges.push(pair);
  });

  return {
    vocab,
    merges,
    ignoreMerges: optionalBool(model, 'ignore_merges', 'model', false),
    unkToken: optionalString(model, 'unk_token', 'model'),
    fuseUnk: optionalBool(model, 'fuse_unk', 'model', false),
    byteFallback: optionalBool(model, 'byte_fallback', 'model', false),
    continuingSubwordPrefix: prefix,
    endOfWordSuffix: suffix,
  };
}

function component(root: Json, key: keyof HfComponents): Json | null {
  const v = root[key];
  if (v === undefined || v === null) return null;
  if (!isObject(v)) fail(`${key} must be an object or null (got ${describe(v)})`);
  return v;
}

/** Whether the components are Lathe's own pipeline, which {@link toTokenizerJson} writes from the spec alone. */
function isLathePipeline(c: HfComponents): boolean {
  return (
    c.normalizer === null &&
    c.pre_tokenizer !== null &&
    c.pre_tokenizer['type'] === 'ByteLevel' &&
    c.decoder !== null &&
    c.decoder['type'] === 'ByteLevel' &&
    (c.post_processor === null || c.post_processor['type'] === 'ByteLevel') &&
    c.truncation === null &&
    c.padding === null
  );
}

/** Validates a parsed `tokenizer.json` and extracts a {@link TokenizerSpec}. */
export function parseTokenizerJson(obj: unknown): TokenizerSpec {
  if (!isObject(obj)) fail(`expected a JSON object at the top level (got ${describe(obj)})`);
  const components: HfComponents = {
    normalizer: component(obj, 'normalizer'),
    pre_tokenizer: component(obj, 'pre_tokenizer'),
    post_processor: component(obj, 'post_processor'),
    decoder: component(obj, 'decoder'),
    truncation: component(obj, 'truncation'),
    padding: component(obj, 'padding'),
  };
  // Compile each component once so that anything unsupported fails here, naming its field.
  if (components.normalizer) readNormalizer(components.normalizer, 'normalizer');
  if (components.pre_tokenizer) readPreTokenizer(components.pre_tokenizer, 'pre_tokenizer');
  if (components.decoder) readDecoder(components.decoder, 'decoder');
  if (components.post_processor) readPostProcessor(components.post_processor, 'post_processor');
  const model = parseModel(obj);
  const pre = components.pre_tokenizer;
  const byteLevelPre = pre !== null && pre['type'] === 'ByteLevel';
  return {
    ...model,
    addedTokens: parseAddedTokens(obj),
    addPrefixSpace: byteLevelPre ? optionalBool(pre, 'add_prefix_space', 'pre_tokenizer', true) : false,
    useRegex: byteLevelPre ? optionalBool(pre, 'use_regex', 'pre_tokenizer', true) : true,
    components: isLathePipeline(components) ? null : components,
    specialTokens: parseSpecialTokens(obj),
  };
}

/** The components of a spec: as read, or Lathe's own byte-level pipeline. */
export function componentsOf(spec: TokenizerSpec): HfComponents {
  if (spec.components !== null) return spec.components;
  return {
    normalizer: null,
    pre_tokenizer: {
      type: 'ByteLevel',
      add_prefix_space: spec.addPrefixSpace,
      trim_offsets: true,
      use_regex: spec.useRegex,
    },
    post_processor: {
      type: 'ByteLevel',
      add_prefix_space: spec.addPrefixSpace,
      trim_offsets: false,
      use_regex: spec.useRegex,
    },
    decoder: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true },
    truncation: null,
    padding: null,
  };
}

/** Serializes a spec as an HF `tokenizer.json` object (merges in the current `[left, right]` form). */
export function toTokenizerJson(spec: TokenizerSpec): Json {
  // Null prototype: a token may legitimately be spelled "__proto__".
  const vocab: Record<string, number> = Object.create(null) as Record<string, number>;
  for (const [token, id] of [...spec.vocab].sort((a, b) => a[1] - b[1])) vocab[token] = id;
  const c = componentsOf(spec);
  return {
    version: '1.0',
    truncation: c.truncation,
    padding: c.padding,
    added_tokens: [...spec.addedTokens]
      .sort((a, b) => a.id - b.id)
      .map((t) => ({
        id: t.id,
        content: t.content,
        single_word: t.singleWord,
        lstrip: t.lstrip,
        rstrip: t.rstrip,
        normalized: t.normalized,
        special: t.special,
      })),
    normalizer: c.normalizer,
    pre_tokenizer: c.pre_tokenizer,
    post_processor: c.post_processor,
    decoder: c.decoder,
    model: {
      type: 'BPE',
      dropout: null,
      unk_token: spec.unkToken,
      continuing_subword_prefix: spec.continuingSubwordPrefix,
      end_of_word_suffix: spec.endOfWordSuffix,
      fuse_unk: spec.fuseUnk,
      byte_fallback: spec.byteFallback,
      ignore_merges: spec.ignoreMerges,
      vocab,
      merges: spec.merges.map(([a, b]) => [a, b]),
    },
    ...(Object.keys(spec.specialTokens).length > 0 ? { [SPECIALS_KEY]: { ...spec.specialTokens } } : {}),
  };
}
