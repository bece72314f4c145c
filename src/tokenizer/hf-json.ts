/**
 * Reading and writing Hugging Face `tokenizer.json` for byte-level BPE tokenizers.
 * Parsing validates every field we depend on and rejects features we cannot reproduce exactly
 * (normalizers, other pre-tokenizers or models, template post-processors, dropout, ...), naming
 * the offending field.
 */
import type { AddedToken } from './added-tokens.js';

/** Everything that determines a byte-level BPE tokenizer's behaviour. */
export interface TokenizerSpec {
  /** `model.vocab`: token (byte-level string) -> id. */
  vocab: Map<string, number>;
  /** `model.merges` in rank order. */
  merges: Array<[string, string]>;
  /** `added_tokens`, including the special tokens. */
  addedTokens: AddedToken[];
  /** `pre_tokenizer.add_prefix_space`. */
  addPrefixSpace: boolean;
  /** `pre_tokenizer.use_regex`. */
  useRegex: boolean;
  /** `model.ignore_merges`: a word found whole in the vocab is emitted as one token. */
  ignoreMerges: boolean;
  /** `model.unk_token`, used for bytes missing from the vocab. */
  unkToken: string | null;
  /** `model.fuse_unk`. */
  fuseUnk: boolean;
}

const PREFIX = 'tokenizer.json:';

function fail(message: string): never {
  throw new Error(`${PREFIX} ${message}`);
}

type Json = Record<string, unknown>;

function isObject(v: unknown): v is Json {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function describe(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'an array';
  if (typeof v === 'string') return JSON.stringify(v);
  if (typeof v === 'number' || typeof v === 'boolean') return String(v);
  return typeof v;
}

function optionalBool(obj: Json, key: string, field: string, fallback: boolean): boolean {
  const v = obj[key];
  if (v === undefined || v === null) return fallback;
  if (typeof v !== 'boolean') fail(`${field}.${key} must be a boolean (got ${describe(v)})`);
  return v;
}

function typeOf(obj: Json, field: string): string | undefined {
  const t = obj['type'];
  if (t === undefined) return undefined;
  if (typeof t !== 'string') fail(`${field}.type must be a string (got ${describe(t)})`);
  return t;
}

function checkByteLevelComponent(root: Json, field: string, allowNull: boolean): Json | null {
  const v = root[field];
  if (v === undefined || v === null) {
    if (allowNull) return null;
    fail(`${field} is ${v === null ? 'null' : 'missing'} (expected {"type": "ByteLevel"})`);
  }
  if (!isObject(v)) fail(`${field} must be an object (got ${describe(v)})`);
  const t = typeOf(v, field);
  if (t !== 'ByteLevel') {
    fail(
      `${field}.type ${t === undefined ? 'is missing' : `"${t}" is not supported`} (expected "ByteLevel"${allowNull ? ' or null' : ''})`,
    );
  }
  return v;
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

function parseModel(root: Json): Pick<TokenizerSpec, 'vocab' | 'merges' | 'ignoreMerges' | 'unkToken' | 'fuseUnk'> {
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
    fail(`model.dropout ${describe(dropout)} is not supported (expected null)`);
  for (const key of ['continuing_subword_prefix', 'end_of_word_suffix']) {
    const v = model[key];
    if (v !== undefined && v !== null && v !== '') fail(`model.${key} ${describe(v)} is not supported (expected null)`);
  }
  if (optionalBool(model, 'byte_fallback', 'model', false))
    fail('model.byte_fallback true is not supported (byte-level BPE needs no fallback)');

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
  const merges = rawMerges.map((m: unknown, i): [string, string] => {
    let pair: [string, string] | null = null;
    if (typeof m === 'string') {
      // Legacy "left right" form; tokens never contain a plain space in byte-level vocabularies.
      const parts = m.split(' ');
      if (parts.length === 2) pair = [parts[0]!, parts[1]!];
    } else if (Array.isArray(m) && m.length === 2 && typeof m[0] === 'string' && typeof m[1] === 'string') {
      pair = [m[0], m[1]];
    }
    if (pair === null) fail(`model.merges[${i}] must be ["left", "right"] or "left right" (got ${JSON.stringify(m)})`);
    for (const part of [pair[0], pair[1], pair[0] + pair[1]]) {
      if (!vocab.has(part)) fail(`model.merges[${i}] uses ${JSON.stringify(part)}, which is not in model.vocab`);
    }
    return pair;
  });

  const unk = model['unk_token'];
  if (unk !== undefined && unk !== null && typeof unk !== 'string')
    fail(`model.unk_token must be a string or null (got ${describe(unk)})`);
  return {
    vocab,
    merges,
    ignoreMerges: optionalBool(model, 'ignore_merges', 'model', false),
    unkToken: typeof unk === 'string' ? unk : null,
    fuseUnk: optionalBool(model, 'fuse_unk', 'model', false),
  };
}

/** Validates a parsed `tokenizer.json` and extracts what a byte-level BPE tokenizer needs. */
export function parseTokenizerJson(obj: unknown): TokenizerSpec {
  if (!isObject(obj)) fail(`expected a JSON object at the top level (got ${describe(obj)})`);
  const normalizer = obj['normalizer'];
  if (normalizer !== undefined && normalizer !== null) {
    const t = isObject(normalizer) ? normalizer['type'] : undefined;
    fail(`normalizer${typeof t === 'string' ? `.type "${t}"` : ''} is not supported (expected null)`);
  }
  const pre = checkByteLevelComponent(obj, 'pre_tokenizer', false)!;
  checkByteLevelComponent(obj, 'decoder', false);
  checkByteLevelComponent(obj, 'post_processor', true);
  const model = parseModel(obj);
  return {
    ...model,
    addedTokens: parseAddedTokens(obj),
    addPrefixSpace: optionalBool(pre, 'add_prefix_space', 'pre_tokenizer', true),
    useRegex: optionalBool(pre, 'use_regex', 'pre_tokenizer', true),
  };
}

/** Serializes a spec as an HF `tokenizer.json` object (merges in the current `[left, right]` form). */
export function toTokenizerJson(spec: TokenizerSpec): Json {
  // Null prototype: a token may legitimately be spelled "__proto__".
  const vocab: Record<string, number> = Object.create(null) as Record<string, number>;
  for (const [token, id] of [...spec.vocab].sort((a, b) => a[1] - b[1])) vocab[token] = id;
  return {
    version: '1.0',
    truncation: null,
    padding: null,
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
    model: {
      type: 'BPE',
      dropout: null,
      unk_token: spec.unkToken,
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: spec.fuseUnk,
      byte_fallback: false,
      ignore_merges: spec.ignoreMerges,
      vocab,
      merges: spec.merges.map(([a, b]) => [a, b]),
    },
  };
}
