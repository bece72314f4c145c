import type { z } from 'zod';
import { RecipeError, type RecipeIssue } from '../errors.js';
import { RecipeSchema, type ModelConfig, type ResolvedRecipe } from './schema.js';

// Validation lives here, in one place: schema errors, then cross-field rules, each with a fix hint.

const snakeToCamel = (k: string): string => k.replace(/_([a-z0-9])/g, (_, c: string) => c.toUpperCase());

/** Accepts snake_case keys (as in YAML/HF configs) by rewriting them to the canonical camelCase. */
export function normalizeKeys(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(normalizeKeys);
  if (value && typeof value === 'object' && Object.getPrototypeOf(value) === Object.prototype) {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value as Record<string, unknown>)) out[snakeToCamel(k)] = normalizeKeys(v);
    return out;
  }
  return value;
}

function pathString(path: PropertyKey[]): string {
  let s = '';
  for (const p of path) s += typeof p === 'number' ? `[${p}]` : s ? `.${String(p)}` : String(p);
  return s;
}

function editDistance(a: string, b: string): number {
  const d = Array.from({ length: a.length + 1 }, (_, i) => [i, ...Array<number>(b.length).fill(0)]);
  for (let j = 1; j <= b.length; j++) d[0]![j] = j;
  for (let i = 1; i <= a.length; i++)
    for (let j = 1; j <= b.length; j++)
      d[i]![j] = Math.min(d[i - 1]![j]! + 1, d[i]![j - 1]! + 1, d[i - 1]![j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
  return d[a.length]![b.length]!;
}

/** Keys the schema allows at a path, to suggest a fix for a typo. */
function allowedKeys(path: PropertyKey[], stage: unknown): string[] {
  let node: z.ZodType | undefined = RecipeSchema.options.find((o) => o.shape.stage.value === stage) ?? RecipeSchema.options[0];
  for (const p of path) {
    if (!node) return [];
    node = unwrap(node);
    const def = (node as unknown as { def: { type: string; shape?: Record<string, z.ZodType>; element?: z.ZodType } }).def;
    if (def.type === 'object' && typeof p === 'string') node = def.shape?.[p];
    else if (def.type === 'array') node = def.element;
    else return [];
  }
  if (!node) return [];
  const def = (unwrap(node) as unknown as { def: { type: string; shape?: Record<string, unknown> } }).def;
  return def.type === 'object' ? Object.keys(def.shape ?? {}) : [];
}

function unwrap(node: z.ZodType): z.ZodType {
  let n = node as unknown as { def: { type: string; innerType?: z.ZodType } };
  while (n.def.innerType && ['default', 'prefault', 'optional', 'nullable'].includes(n.def.type)) n = n.def.innerType as never;
  return n as unknown as z.ZodType;
}

function valueAt(input: unknown, path: PropertyKey[]): unknown {
  let v = input;
  for (const p of path) v = v && typeof v === 'object' ? (v as Record<PropertyKey, unknown>)[p] : undefined;
  return v;
}

function describeIssue(issue: z.core.$ZodIssue, input: unknown): RecipeIssue[] {
  const path = pathString(issue.path);
  const got = JSON.stringify(valueAt(input, issue.path));
  switch (issue.code) {
    case 'unrecognized_keys': {
      const stage = (input as { stage?: unknown } | null)?.stage;
      const known = allowedKeys(issue.path, stage);
      return issue.keys.map((k) => {
        const best = known.map((c) => [c, editDistance(k, c)] as const).sort((a, b) => a[1] - b[1])[0];
        const hint = best && best[1] <= 3 ? `; did you mean "${best[0]}"?` : known.length ? `; allowed: ${known.join(', ')}` : '';
        return { path: path ? `${path}.${k}` : k, message: `unknown field${hint}` };
      });
    }
    case 'invalid_type':
      if (got === undefined) return [{ path, message: `is required (expected ${issue.expected})` }];
      return [{ path, message: `expected ${issue.expected}, got ${got}` }];
    case 'invalid_value':
      return [{ path, message: `must be one of ${issue.values.map((v) => JSON.stringify(v)).join(', ')}, got ${got}` }];
    case 'invalid_union':
      if (issue.path.length === 0 || path === 'stage') {
        return [{ path: 'stage', message: `must be one of "pretrain" (more stages come with post-training), got ${JSON.stringify((input as { stage?: unknown })?.stage)}` }];
      }
      return [{ path, message: issue.message }];
    case 'too_small':
      return [{ path, message: issue.message.startsWith('add ') ? issue.message : `must be ${issue.inclusive === false ? '>' : '>='} ${String(issue.minimum)}, got ${got}` }];
    case 'too_big':
      return [{ path, message: `must be ${issue.inclusive === false ? '<' : '<='} ${String(issue.maximum)}, got ${got}` }];
    default:
      return [{ path, message: issue.message }];
  }
}

const num = (v: unknown): number | undefined => (typeof v === 'number' && Number.isFinite(v) ? v : undefined);

/** Rules that span fields; they read raw input defensively so they run even when other fields are wrong. */
function crossFieldIssues(input: unknown): RecipeIssue[] {
  const out: RecipeIssue[] = [];
  const r = (input ?? {}) as Record<string, Record<string, unknown> | undefined>;
  const m = r.model ?? {};
  const dim = num(m.dim) ?? 128;
  const heads = num(m.heads) ?? 4;
  const kvHeads = num(m.kvHeads) ?? heads;
  if (heads > 0 && dim % heads !== 0) out.push({ path: 'model.heads', message: `${heads} does not divide model.dim ${dim}; pick heads from the divisors of ${dim}` });
  else if (heads > 0 && (dim / heads) % 2 !== 0) out.push({ path: 'model.heads', message: `head size ${dim}/${heads} = ${dim / heads} must be even for RoPE` });
  if (kvHeads > 0 && heads % kvHeads !== 0) out.push({ path: 'model.kvHeads', message: `${kvHeads} does not divide model.heads ${heads}` });
  if (kvHeads > heads) out.push({ path: 'model.kvHeads', message: `${kvHeads} exceeds model.heads ${heads}` });
  const experts = num(m.experts) ?? 8;
  const topK = num(m.topK) ?? 2;
  if (topK > experts) out.push({ path: 'model.topK', message: `${topK} exceeds model.experts ${experts}` });
  const t = r.train ?? {};
  const steps = num(t.steps) ?? 200;
  const warm = num(t.warmupSteps) ?? 20;
  if (warm > steps) out.push({ path: 'train.warmupSteps', message: `${warm} exceeds train.steps ${steps}; lower it or raise steps` });
  const lr = num(t.lr);
  const minLr = num(t.minLr);
  if (lr !== undefined && minLr !== undefined && minLr > lr) out.push({ path: 'train.minLr', message: `${minLr} exceeds train.lr ${lr}` });
  const tok = r.tokenizer ?? {};
  const ctx = num(m.context) ?? 128;
  if (ctx > 8192) out.push({ path: 'model.context', message: `${ctx} is too long for this engine; use at most 8192` });
  if (tok.path !== undefined && (tok as Record<string, unknown>).vocabSize !== undefined) {
    out.push({ path: 'tokenizer.vocabSize', message: 'is set together with tokenizer.path; a loaded tokenizer has its own vocabulary, so remove one' });
  }
  return out;
}

/** Validates a recipe object; returns the resolved recipe (defaults filled) or every issue found. */
export function checkRecipe(raw: unknown): { ok: true; recipe: ResolvedRecipe } | { ok: false; issues: RecipeIssue[] } {
  const input = normalizeKeys(raw);
  if (!input || typeof input !== 'object' || Array.isArray(input)) {
    return { ok: false, issues: [{ path: '', message: 'a recipe must be an object with at least "stage" and "data"' }] };
  }
  const parsed = RecipeSchema.safeParse(input);
  const issues: RecipeIssue[] = parsed.success ? [] : parsed.error.issues.flatMap((i) => describeIssue(i, input));
  issues.push(...crossFieldIssues(input));
  if (issues.length) return { ok: false, issues: dedupeIssues(issues) };
  return { ok: true, recipe: parsed.data as ResolvedRecipe };
}

function dedupeIssues(issues: RecipeIssue[]): RecipeIssue[] {
  const seen = new Set<string>();
  return issues.filter((i) => (seen.has(i.path + i.message) ? false : (seen.add(i.path + i.message), true)));
}

/** Validates a recipe, throwing a RecipeError that lists every issue. */
export function resolveRecipe(raw: unknown, where?: string): ResolvedRecipe {
  const res = checkRecipe(raw);
  if (!res.ok) throw new RecipeError(res.issues, where);
  return res.recipe;
}

/** The SwiGLU hidden size the model uses when ffnDim is unset. */
export function ffnDimOf(m: Pick<ModelConfig, 'dim' | 'ffnDim'>): number {
  return m.ffnDim ?? Math.ceil((8 * m.dim) / 3 / 32) * 32;
}
