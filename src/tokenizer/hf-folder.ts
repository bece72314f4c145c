/**
 * Loading the tokenizer of an HF model folder: tokenizer.json, plus what tokenizer_config.json
 * (or special_tokens_map.json, chat_template.jinja) says about bos/eos/pad, `add_bos_token`,
 * `add_eos_token` and the chat template, as transformers reads them.
 */
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Tokenizer, type HfTokenizerInfo } from './tokenizer.js';

type Json = Record<string, unknown>;

async function readJsonFile(path: string): Promise<unknown> {
  const text = await readFile(path, 'utf8');
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new Error(`${path}: invalid JSON (${(err as Error).message})`, { cause: err });
  }
}

function isObject(v: unknown): v is Json {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** A special token entry: a string, `{"content": ...}` (an AddedToken), or null. */
function tokenString(obj: Json, key: string, path: string): string | null | undefined {
  const v = obj[key];
  if (v === undefined) return undefined;
  if (v === null || typeof v === 'string') return v;
  if (isObject(v) && typeof v['content'] === 'string') return v['content'];
  throw new Error(`${path}: ${key} must be a string, {"content": "..."} or null (got ${JSON.stringify(v)})`);
}

function optionalBool(obj: Json, key: string, path: string): boolean | undefined {
  const v = obj[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'boolean') throw new Error(`${path}: ${key} must be a boolean (got ${JSON.stringify(v)})`);
  return v;
}

/** `chat_template`: a string, or a list of `{name, template}` whose "default" entry transformers uses. */
function chatTemplate(obj: Json, path: string): string | null | undefined {
  const v = obj['chat_template'];
  if (v === undefined || v === null) return v as null | undefined;
  if (typeof v === 'string') return v;
  if (Array.isArray(v)) {
    const entry = v.find((t) => isObject(t) && t['name'] === 'default') ?? v[0];
    if (isObject(entry) && typeof entry['template'] === 'string') return entry['template'];
  }
  throw new Error(`${path}: chat_template must be a string or a list of {"name", "template"}`);
}

/** What an HF folder says about its tokenizer besides tokenizer.json. */
export async function readHfTokenizerInfo(dir: string): Promise<HfTokenizerInfo> {
  const configPath = join(dir, 'tokenizer_config.json');
  const mapPath = join(dir, 'special_tokens_map.json');
  const config = existsSync(configPath) ? await readJsonFile(configPath) : {};
  if (!isObject(config)) throw new Error(`${configPath}: expected a JSON object`);
  const map = existsSync(mapPath) ? await readJsonFile(mapPath) : {};
  if (!isObject(map)) throw new Error(`${mapPath}: expected a JSON object`);
  const token = (key: string): string | null => {
    const fromConfig = tokenString(config, key, configPath);
    if (fromConfig !== undefined) return fromConfig;
    return tokenString(map, key, mapPath) ?? null;
  };
  // As transformers: chat_template.jinja comes before the config's chat_template.
  const jinja = join(dir, 'chat_template.jinja');
  const template = existsSync(jinja) ? await readFile(jinja, 'utf8') : (chatTemplate(config, configPath) ?? null);
  const maxLength = config['model_max_length'];
  const cls = config['tokenizer_class'];
  return {
    bosToken: token('bos_token'),
    eosToken: token('eos_token'),
    padToken: token('pad_token'),
    unkToken: token('unk_token'),
    addBosToken: optionalBool(config, 'add_bos_token', configPath),
    addEosToken: optionalBool(config, 'add_eos_token', configPath),
    chatTemplate: template,
    ...(typeof maxLength === 'number' && Number.isFinite(maxLength) ? { modelMaxLength: maxLength } : {}),
    ...(typeof cls === 'string' ? { tokenizerClass: cls } : {}),
  };
}

/**
 * Loads the tokenizer of an HF model folder (tokenizer.json with a BPE model, and
 * tokenizer_config.json when present). The model's bos, eos and pad tokens become
 * `special.bos`/`eos`/`pad`; Lathe's chat-role and FIM tokens are appended when missing.
 * `encode(text, { addSpecialTokens: true })` gives transformers' `tokenizer(text).input_ids`.
 * Errors name the file and the field.
 */
export async function loadHfTokenizer(dir: string): Promise<Tokenizer> {
  const path = join(dir, 'tokenizer.json');
  if (!existsSync(path)) {
    const slow = ['tokenizer.model', 'vocab.json', 'tekken.json'].find((f) => existsSync(join(dir, f)));
    throw new Error(
      `${path}: missing; Lathe needs a fast tokenizer (tokenizer.json)${slow ? ` (${slow} alone is not enough: save the fast tokenizer with AutoTokenizer.save_pretrained)` : ''}`,
    );
  }
  const info = await readHfTokenizerInfo(dir);
  const obj = await readJsonFile(path);
  const specialTokens: Partial<Record<'bos' | 'eos' | 'pad', string>> = {};
  if (info.bosToken) specialTokens.bos = info.bosToken;
  if (info.eosToken) specialTokens.eos = info.eosToken;
  if (info.padToken) specialTokens.pad = info.padToken;
  try {
    return Tokenizer.fromJSON(obj, { specialTokens, hf: info });
  } catch (err) {
    throw new Error(`${(err as Error).message} (in ${path})`, { cause: err });
  }
}
