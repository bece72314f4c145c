/**
 * Helpers shared by the readers of `tokenizer.json` components: field checks whose errors name
 * the component and field (`tokenizer.json: pre_tokenizer.pretokenizers[1].type "X" is not supported`).
 */
import { LiteralPattern, OnigRegex, type Matcher } from './onig-regex.js';

/** A JSON object. */
export type Json = Record<string, unknown>;

const PREFIX = 'tokenizer.json:';

/** Throws a `tokenizer.json: ...` error. */
export function fail(message: string): never {
  throw new Error(`${PREFIX} ${message}`);
}

/** Whether `v` is a plain JSON object. */
export function isObject(v: unknown): v is Json {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** A short description of a JSON value for error messages. */
export function describe(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'an array';
  if (typeof v === 'string') return JSON.stringify(v);
  if (typeof v === 'number' || typeof v === 'boolean') return String(v);
  return typeof v;
}

/** `obj[key]` as a boolean; `fallback` when absent or null. */
export function optionalBool(obj: Json, key: string, field: string, fallback: boolean): boolean {
  const v = obj[key];
  if (v === undefined || v === null) return fallback;
  if (typeof v !== 'boolean') fail(`${field}.${key} must be a boolean (got ${describe(v)})`);
  return v;
}

/** `obj[key]` as a string; `fallback` when absent (or null, if `fallback` is given). */
export function requireString(obj: Json, key: string, field: string, fallback?: string): string {
  const v = obj[key];
  if ((v === undefined || v === null) && fallback !== undefined) return fallback;
  if (typeof v !== 'string') fail(`${field}.${key} must be a string (got ${describe(v)})`);
  return v;
}

/** `obj[key]` as a single character (a Rust `char`). */
export function requireChar(obj: Json, key: string, field: string, fallback?: string): string {
  const s = requireString(obj, key, field, fallback);
  if ([...s].length !== 1) fail(`${field}.${key} must be one character (got ${describe(s)})`);
  return s;
}

/** `obj[key]` as a non-negative integer. */
export function requireCount(obj: Json, key: string, field: string, fallback?: number): number {
  const v = obj[key];
  if ((v === undefined || v === null) && fallback !== undefined) return fallback;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 0)
    fail(`${field}.${key} must be a non-negative integer (got ${describe(v)})`);
  return v;
}

/** A component's `type`, or undefined when it has none. */
export function typeOf(obj: Json, field: string): string | undefined {
  const t = obj['type'];
  if (t === undefined) return undefined;
  if (typeof t !== 'string') fail(`${field}.type must be a string (got ${describe(t)})`);
  return t;
}

/** `obj[key]` as an array of component objects. */
export function requireList(obj: Json, key: string, field: string): Json[] {
  const v = obj[key];
  if (!Array.isArray(v)) fail(`${field}.${key} must be an array (got ${describe(v)})`);
  return v.map((x, i) => {
    if (!isObject(x)) fail(`${field}.${key}[${i}] must be an object (got ${describe(x)})`);
    return x;
  });
}

/** Refuses a component type, listing the supported ones. */
export function unsupported(field: string, type: string | undefined, supported: readonly string[]): never {
  return fail(
    `${field}.type ${type === undefined ? 'is missing' : `"${type}" is not supported`} (supported: ${supported.join(', ')})`,
  );
}

/** A `{"String": s}` or `{"Regex": r}` pattern (Split, Replace) as a matcher. */
export function readPattern(obj: Json, key: string, field: string): Matcher {
  const p = obj[key];
  const where = `${field}.${key}`;
  if (!isObject(p)) fail(`${where} must be {"String": ...} or {"Regex": ...} (got ${describe(p)})`);
  if (typeof p['String'] === 'string') return new LiteralPattern(p['String']);
  if (typeof p['Regex'] === 'string') return new OnigRegex(p['Regex'], `${PREFIX} ${where}.Regex`);
  return fail(`${where} must be {"String": ...} or {"Regex": ...} (got ${JSON.stringify(p)})`);
}
