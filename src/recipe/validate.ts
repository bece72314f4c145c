import { totalmem } from 'node:os';
import type { z } from 'zod';
import { RecipeError, type RecipeIssue } from '../errors.js';
import { familyIssues } from './families.js';
import {
  LORA_TARGETS,
  RecipeSchema,
  STAGES,
  type AnyResolvedRecipe,
  type ModelConfig,
  type ResolvedPipeline,
  type ResolvedRecipe,
} from './schema.js';

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

/** Keys the schema allows at a path, to suggest a fix for a typo; unions are resolved by the input's `stage`. */
function allowedKeys(path: PropertyKey[], input: unknown): string[] {
  let node: z.ZodType | undefined = RecipeSchema;
  let value: unknown = input;
  const pick = (n: z.ZodType, v: unknown): z.ZodType | undefined => {
    const def = (n as unknown as { def: { type: string; options?: z.ZodType[] } }).def;
    if (def.type !== 'union' || !def.options) return n;
    const stage = (v as { stage?: unknown } | null)?.stage;
    return (
      def.options.find(
        (o) => (o as unknown as { shape?: { stage?: { value?: unknown } } }).shape?.stage?.value === stage,
      ) ?? def.options[0]
    );
  };
  node = pick(node, value);
  for (const p of path) {
    if (!node) return [];
    node = unwrap(node);
    const def = (node as unknown as { def: { type: string; shape?: Record<string, z.ZodType>; element?: z.ZodType } })
      .def;
    value = value && typeof value === 'object' ? (value as Record<PropertyKey, unknown>)[p] : undefined;
    if (def.type === 'object' && typeof p === 'string') node = def.shape?.[p];
    else if (def.type === 'array') node = def.element;
    else return [];
    if (node) node = pick(unwrap(node), value);
  }
  if (!node) return [];
  const def = (unwrap(node) as unknown as { def: { type: string; shape?: Record<string, unknown> } }).def;
  return def.type === 'object' ? Object.keys(def.shape ?? {}) : [];
}

function unwrap(node: z.ZodType): z.ZodType {
  let n = node as unknown as { def: { type: string; innerType?: z.ZodType } };
  while (n.def.innerType && ['default', 'prefault', 'optional', 'nullable'].includes(n.def.type))
    n = n.def.innerType as never;
  return n as unknown as z.ZodType;
}

function valueAt(input: unknown, path: PropertyKey[]): unknown {
  let v = input;
  for (const p of path) v = v && typeof v === 'object' ? (v as Record<PropertyKey, unknown>)[p] : undefined;
  return v;
}

/** A value as a message shows it; JSON has no NaN or Infinity, so they are named. */
function show(v: unknown): string | undefined {
  if (typeof v === 'number' && !Number.isFinite(v)) return String(v);
  return JSON.stringify(v);
}

function describeIssue(issue: z.core.$ZodIssue, input: unknown): RecipeIssue[] {
  const path = pathString(issue.path);
  const value = valueAt(input, issue.path);
  const got = show(value);
  // YAML's .nan and .inf parse to numbers that JSON cannot hold; say so rather than show them as null.
  if (typeof value === 'number' && !Number.isFinite(value)) {
    const expected = issue.code === 'invalid_type' ? issue.expected : undefined;
    const fix = expected === 'number' ? '; write a finite number' : expected ? `; expected ${expected}` : '';
    return [{ path, message: `${String(value)} is not allowed${fix}` }];
  }
  switch (issue.code) {
    case 'unrecognized_keys': {
      const known = allowedKeys(issue.path, input);
      return issue.keys.map((k) => {
        const best = known.map((c) => [c, editDistance(k, c)] as const).sort((a, b) => a[1] - b[1])[0];
        const hint =
          best && best[1] <= 3 ? `; did you mean "${best[0]}"?` : known.length ? `; allowed: ${known.join(', ')}` : '';
        return { path: path ? `${path}.${k}` : k, message: `unknown field${hint}` };
      });
    }
    case 'invalid_type':
      if (got === undefined) return [{ path, message: `is required (expected ${issue.expected})` }];
      return [{ path, message: `expected ${issue.expected}, got ${got}` }];
    case 'invalid_value':
      return [{ path, message: `must be one of ${issue.values.map((v) => JSON.stringify(v)).join(', ')}, got ${got}` }];
    case 'invalid_union':
      if (issue.path.at(-1) === 'stage' || issue.path.length === 0) {
        const at = issue.path.length ? issue.path : ['stage'];
        const options = (issue as { options?: unknown[] }).options ?? [...STAGES, 'pipeline'];
        const stage = valueAt(input, at);
        const hint = at.length > 1 && stage === 'pipeline' ? ' (a pipeline cannot hold a pipeline)' : '';
        return [
          {
            path: pathString(at),
            message: `must be one of ${options.map((o) => JSON.stringify(o)).join(', ')}${hint}, got ${JSON.stringify(stage)}`,
          },
        ];
      }
      return [{ path, message: issue.message }];
    case 'too_small':
      return [
        {
          path,
          message: issue.message.startsWith('add ')
            ? issue.message
            : `must be ${issue.inclusive === false ? '>' : '>='} ${String(issue.minimum)}, got ${got}`,
        },
      ];
    case 'too_big':
      return [
        { path, message: `must be ${issue.inclusive === false ? '<' : '<='} ${String(issue.maximum)}, got ${got}` },
      ];
    default:
      return [{ path, message: issue.message }];
  }
}

const num = (v: unknown): number | undefined => (typeof v === 'number' && Number.isFinite(v) ? v : undefined);

type Raw = Record<string, Record<string, unknown> | undefined>;

/** Per-stage defaults the cross-field rules need when a field is unset. */
const STAGE_DEFAULTS: Record<string, { steps: number; warmupSteps: number }> = {
  pretrain: { steps: 200, warmupSteps: 20 },
  sft: { steps: 100, warmupSteps: 10 },
  dpo: { steps: 100, warmupSteps: 10 },
  'online-dpo': { steps: 50, warmupSteps: 5 },
  grpo: { steps: 50, warmupSteps: 5 },
};

const REWARD_EXT = /\.(js|mjs|cjs|ts|mts|cts)$/i;

/** Rules that span fields of one stage recipe; `at` prefixes paths (e.g. `stages[1].`). */
function stageIssues(
  r: Raw,
  at: string,
  where: { inPipeline: boolean; first: boolean; pipelineFrom?: boolean },
): RecipeIssue[] {
  const out: RecipeIssue[] = [];
  const p = (s: string) => at + s;
  const stage = typeof r.stage === 'string' ? (r.stage as unknown as string) : 'pretrain';
  const post = stage !== 'pretrain';
  const m = r.model ?? {};
  const dim = num(m.dim) ?? 128;
  const heads = num(m.heads) ?? 4;
  const kvHeads = num(m.kvHeads) ?? heads;
  const headDim = num(m.headDim);
  if (headDim !== undefined) {
    if (headDim % 2 !== 0) out.push({ path: p('model.headDim'), message: `${headDim} must be even for RoPE` });
  } else if (heads > 0 && dim % heads !== 0)
    out.push({
      path: p('model.heads'),
      message: `${heads} does not divide model.dim ${dim}; pick heads from the divisors of ${dim}, or set model.headDim`,
    });
  else if (heads > 0 && (dim / heads) % 2 !== 0)
    out.push({ path: p('model.heads'), message: `head size ${dim}/${heads} = ${dim / heads} must be even for RoPE` });
  for (const f of familyIssues({ ...(m as Parameters<typeof familyIssues>[0]), layers: num(m.layers) ?? 2 }))
    out.push({ path: p(`model.${f.field}`), message: f.message });
  if (kvHeads > 0 && heads % kvHeads !== 0)
    out.push({ path: p('model.kvHeads'), message: `${kvHeads} does not divide model.heads ${heads}` });
  if (kvHeads > heads) out.push({ path: p('model.kvHeads'), message: `${kvHeads} exceeds model.heads ${heads}` });
  const experts = num(m.experts) ?? 8;
  const topK = num(m.topK) ?? 2;
  if (topK > experts) out.push({ path: p('model.topK'), message: `${topK} exceeds model.experts ${experts}` });
  const from = (r as Record<string, unknown>).from;
  const fresh = from === undefined && !(post && where.inPipeline && !where.first);
  if (fresh && heads > 0 && (headDim !== undefined || dim % heads === 0)) {
    const vocab = num((r.tokenizer ?? {}).vocabSize) ?? 1024;
    out.push(...modelSizeIssues(m, vocab, p));
  }
  const t = r.train ?? {};
  const d = STAGE_DEFAULTS[stage] ?? STAGE_DEFAULTS.pretrain!;
  const steps = num(t.steps) ?? d.steps;
  const warm = num(t.warmupSteps) ?? d.warmupSteps;
  if (warm > steps)
    out.push({
      path: p('train.warmupSteps'),
      message: `${warm} exceeds train.steps ${steps}; lower it or raise steps`,
    });
  const lr = num(t.lr);
  const minLr = num(t.minLr);
  if (lr !== undefined && minLr !== undefined && minLr > lr)
    out.push({ path: p('train.minLr'), message: `${minLr} exceeds train.lr ${lr}` });
  out.push(...loraIssues(r, p, fresh));
  const tok = r.tokenizer ?? {};
  const ctx = num(m.context) ?? 128;
  if (ctx > 8192)
    out.push({ path: p('model.context'), message: `${ctx} is too long for this engine; use at most 8192` });
  if (tok.path !== undefined && (tok as Record<string, unknown>).vocabSize !== undefined) {
    out.push({
      path: p('tokenizer.vocabSize'),
      message: 'is set together with tokenizer.path; a loaded tokenizer has its own vocabulary, so remove one',
    });
  }
  if (!post) {
    if (where.inPipeline && !where.first)
      out.push({
        path: p('stage'),
        message:
          'pretrain starts a model (fresh, or `from` one), so it can only be the first stage of a pipeline; move it first or use sft to continue training',
      });
    const data = (r.data ?? {}) as Record<string, unknown>;
    const tokenizer = (r.tokenizer ?? {}) as Record<string, unknown>;
    const continued = from !== undefined || (where.inPipeline && where.first && where.pipelineFrom);
    if (continued) {
      // Continued pre-training: the base fixes the architecture and the tokenizer.
      if (r.model !== undefined)
        out.push({
          path: p('model'),
          message: 'comes from the base model named by from; remove model, or remove from to train a fresh model',
        });
      for (const k of Object.keys(tokenizer).filter((k) => k !== 'addTokens'))
        out.push({
          path: p(`tokenizer.${k}`),
          message: "the base model's tokenizer is kept with from; only tokenizer.addTokens applies",
        });
    } else {
      if (data.replay !== undefined)
        out.push({
          path: p('data.replay'),
          message:
            "mixes the base model's kind of data back in during continued pre-training; set from, or remove replay",
        });
      if (tokenizer.addTokens !== undefined)
        out.push({
          path: p('tokenizer.addTokens'),
          message:
            "adds tokens to a base model's tokenizer (with from); a trained tokenizer learns its own, so remove addTokens",
        });
    }
    const added = tokenizer.addTokens;
    if (Array.isArray(added)) {
      const seen = new Set<unknown>();
      added.forEach((t, i) => {
        if (seen.has(t))
          out.push({ path: p(`tokenizer.addTokens[${i}]`), message: `${JSON.stringify(t)} is listed twice` });
        seen.add(t);
      });
    }
    return out;
  }
  // Where the starting model comes from.
  const inherited = where.inPipeline && !where.first;
  if (inherited && from !== undefined)
    out.push({
      path: p('from'),
      message: "a pipeline stage after the first starts from the previous stage's checkpoint; remove from",
    });
  for (const k of ['model', 'tokenizer'] as const) {
    if (r[k] === undefined) continue;
    if (inherited) out.push({ path: p(k), message: `comes from the previous stage of the pipeline; remove ${k}` });
    else if (from !== undefined)
      out.push({
        path: p(k),
        message: `comes from the base model named by from; remove ${k}, or remove from to train a fresh model`,
      });
  }
  const rewardIssues = (rw: Record<string, unknown> | undefined, path: string) => {
    if (rw && typeof rw === 'object' && (rw.module === undefined) === (rw.grader === undefined))
      out.push({
        path: p(path),
        message:
          rw.module === undefined
            ? 'name a reward module ({"module": "reward.mjs"}) or a grader file ({"grader": "grader.json"})'
            : 'set only one of module and grader',
      });
    if (!rw || typeof rw.module !== 'string') return;
    if (!REWARD_EXT.test(rw.module))
      out.push({
        path: p(`${path}.module`),
        message: `${JSON.stringify(rw.module)} is not a JavaScript or TypeScript module; name a .js, .mjs, .cjs, .ts or .mts file`,
      });
  };
  if (stage === 'grpo') rewardIssues(r.reward, 'reward');
  if (stage === 'online-dpo') {
    const j = r.judge;
    if (j && typeof j === 'object') {
      const has = [j.reward !== undefined, j.model !== undefined].filter(Boolean).length;
      if (has !== 1)
        out.push({
          path: p('judge'),
          message: has
            ? 'set only one of judge.reward and judge.model'
            : 'set judge.reward ({"module": "reward.mjs"}) or judge.model (a reward-model run directory)',
        });
      rewardIssues(j.reward as Record<string, unknown> | undefined, 'judge.reward');
    }
  }
  if (stage === 'grpo' || stage === 'online-dpo') {
    const maxNew = num(t.maxNewTokens) ?? 32;
    if (from === undefined && !inherited && maxNew >= ctx)
      out.push({
        path: p('train.maxNewTokens'),
        message: `${maxNew} leaves no room for the prompt in model.context ${ctx}; lower it`,
      });
  }
  return out;
}

/** train.lora: targets listed once and present in the model (when its architecture is known here), nf4 on torch. */
function loraIssues(r: Raw, p: (s: string) => string, archKnown: boolean): RecipeIssue[] {
  const lora = (r.train ?? {}).lora as Record<string, unknown> | undefined;
  if (!lora || typeof lora !== 'object') return [];
  const out: RecipeIssue[] = [];
  const targets = lora.targets;
  if (Array.isArray(targets)) {
    const arch = (r.model ?? {}).arch === 'moe' ? 'moe' : 'dense';
    const allowed: readonly unknown[] = LORA_TARGETS[arch];
    const known = new Set<unknown>([...LORA_TARGETS.dense, ...LORA_TARGETS.moe]);
    const seen = new Set<unknown>();
    targets.forEach((t, i) => {
      if (seen.has(t)) out.push({ path: p(`train.lora.targets[${i}]`), message: `${show(t)} is listed twice` });
      seen.add(t);
      if (archKnown && known.has(t) && !allowed.includes(t))
        out.push({
          path: p(`train.lora.targets[${i}]`),
          message: `${show(t)} is not a projection of a ${arch} model; choose from ${allowed.join(', ')}`,
        });
    });
  }
  if ((r.tokenizer ?? {}).addTokens !== undefined)
    out.push({
      path: p('train.lora'),
      message:
        'is set together with tokenizer.addTokens: LoRA trains the projections only, so the new tokens would keep their initial rows; drop one (add the tokens in a run without train.lora first)',
    });
  const res = ((r as Record<string, unknown>).resources ?? {}) as Record<string, unknown>;
  const ranks = (typeof res.gpus === 'number' ? res.gpus : 1) * (typeof res.nodes === 'number' ? res.nodes : 1);
  if (ranks > 1)
    out.push({
      path: p('train.lora'),
      message: `trains in one process, but resources ask for ${ranks} ranks; drop resources.gpus/nodes, or drop train.lora to train all weights on several ranks`,
    });
  const engine = (r as Record<string, unknown>).engine;
  const device = (r as Record<string, unknown>).device;
  if (lora.quantize === 'nf4' && (engine === 'tfjs' || device === 'cpu'))
    out.push({
      path: p('train.lora.quantize'),
      message: `nf4 runs on the torch engine on CUDA (bitsandbytes), not on ${engine === 'tfjs' ? 'the tfjs engine' : 'the CPU'}; set engine "torch" and device "cuda", or use int8`,
    });
  return out;
}

/** Bytes of training state per parameter: fp32 weights, gradients and AdamW's two moments. */
export const TRAIN_BYTES_PER_PARAM = 16;
/** The most values one tensor may hold: the longest typed array Node allocates (tfjs keeps a tensor in one). */
export const MAX_TENSOR_VALUES = 2 ** 32;
const GIB = 2 ** 30;

/**
 * The memory a fresh model's training state may take: `LATHE_MAX_MODEL_GIB` (GiB) when set, else this machine's
 * memory (what the in-process engine can hold at most).
 */
export function modelMemoryLimit(): { bytes: number; source: string } {
  const env = process.env.LATHE_MAX_MODEL_GIB;
  const gib = env === undefined || env === '' ? NaN : Number(env);
  if (Number.isFinite(gib) && gib > 0) return { bytes: gib * GIB, source: 'LATHE_MAX_MODEL_GIB' };
  return { bytes: totalmem(), source: "this machine's memory; set LATHE_MAX_MODEL_GIB to another number of GiB" };
}

/** Parameter counts of a model section by part, as src/model/spec.ts lays the parameters out. */
export function paramCounts(
  m: Partial<
    Pick<ModelConfig, 'arch' | 'dim' | 'layers' | 'heads' | 'kvHeads' | 'ffnDim' | 'experts' | 'tieEmbeddings'>
  >,
  vocab: number,
): { embeddings: number; attention: number; mlp: number; total: number; largestTensor: number } {
  const dim = m.dim ?? 128;
  const layers = m.layers ?? 2;
  const heads = m.heads ?? 4;
  const kv = m.kvHeads ?? heads;
  const ffn = ffnDimOf({ dim, ffnDim: m.ffnDim });
  const experts = m.arch === 'moe' ? (m.experts ?? 8) : 0;
  const headDim = dim / heads;
  const embeddings = vocab * dim * (m.tieEmbeddings === false ? 2 : 1);
  // q, k, v, o projections and the two norms of each block.
  const attention = layers * (2 * heads * headDim * dim + 2 * kv * headDim * dim + 2 * dim);
  // SwiGLU: gate, up, down; MoE: that per expert, plus the router.
  const mlp = layers * (experts ? experts * 3 * ffn * dim + experts * dim : 3 * ffn * dim);
  return {
    embeddings,
    attention,
    mlp,
    total: embeddings + attention + mlp + dim,
    largestTensor: Math.max(vocab * dim, ffn * dim, heads * headDim * dim),
  };
}

const sci = (n: number): string => (n < 1e6 ? String(n) : n.toExponential(2));
const bytesText = (b: number): string => {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  let i = 0;
  while (b >= 1024 && i < units.length - 1) {
    b /= 1024;
    i++;
  }
  return `${b.toFixed(1)} ${units[i]}`;
};

/** A fresh model must fit: each tensor in one typed array, its training state in the memory limit. */
function modelSizeIssues(m: Record<string, unknown>, vocab: number, p: (s: string) => string): RecipeIssue[] {
  const moe = m.arch === 'moe';
  const c = paramCounts(
    {
      arch: moe ? 'moe' : 'dense',
      dim: num(m.dim),
      layers: num(m.layers),
      heads: num(m.heads),
      kvHeads: num(m.kvHeads),
      ffnDim: num(m.ffnDim),
      experts: num(m.experts),
      tieEmbeddings: m.tieEmbeddings === false ? false : true,
    },
    vocab,
  );
  const fields = moe
    ? 'model.dim, model.layers, model.ffnDim or model.experts'
    : 'model.dim, model.layers or model.ffnDim';
  const out: RecipeIssue[] = [];
  if (c.largestTensor > MAX_TENSOR_VALUES)
    out.push({
      path: p('model'),
      message: `its largest tensor has ${sci(c.largestTensor)} values, over the ${MAX_TENSOR_VALUES} one tensor can hold (the longest typed array); lower model.dim or model.ffnDim`,
    });
  const need = c.total * TRAIN_BYTES_PER_PARAM;
  const limit = modelMemoryLimit();
  if (need > limit.bytes)
    out.push({
      path: p('model'),
      message:
        `about ${sci(c.total)} parameters (embeddings ${sci(c.embeddings)}, attention ${sci(c.attention)}, ` +
        `${moe ? 'experts' : 'MLP'} ${sci(c.mlp)}) need at least ${bytesText(need)} to train ` +
        `(${TRAIN_BYTES_PER_PARAM} bytes a parameter: fp32 weights, gradients and two AdamW moments), ` +
        `over the limit of ${bytesText(limit.bytes)} (${limit.source}); lower ${fields}`,
    });
  return out;
}

/** Rules that span fields; they read raw input defensively so they run even when other fields are wrong. */
function crossFieldIssues(input: unknown): RecipeIssue[] {
  const r = (input ?? {}) as Raw;
  if ((r.stage as unknown) !== 'pipeline') return stageIssues(r, '', { inPipeline: false, first: true });
  const stages = (r as Record<string, unknown>).stages;
  if (!Array.isArray(stages)) return [];
  const out: RecipeIssue[] = [];
  const from = (r as Record<string, unknown>).from;
  stages.forEach((st, i) => {
    if (!st || typeof st !== 'object') return;
    const sr = st as Raw;
    out.push(
      ...stageIssues(sr, `stages[${i}].`, { inPipeline: true, first: i === 0, pipelineFrom: from !== undefined }),
    );
    if (i === 0 && from !== undefined && (sr as Record<string, unknown>).from !== undefined)
      out.push({ path: 'from', message: 'is set on the pipeline and on stages[0]; keep one' });
  });
  return out;
}

/** Validates a recipe object; returns the resolved recipe (defaults filled) or every issue found. */
export function checkRecipe(
  raw: unknown,
): { ok: true; recipe: AnyResolvedRecipe } | { ok: false; issues: RecipeIssue[] } {
  const input = normalizeKeys(raw);
  if (!input || typeof input !== 'object' || Array.isArray(input)) {
    return {
      ok: false,
      issues: [{ path: '', message: 'a recipe must be an object with at least "stage" and "data"' }],
    };
  }
  const parsed = RecipeSchema.safeParse(input);
  const issues: RecipeIssue[] = parsed.success ? [] : parsed.error.issues.flatMap((i) => describeIssue(i, input));
  issues.push(...crossFieldIssues(input));
  if (issues.length) return { ok: false, issues: dedupeIssues(issues) };
  const recipe = parsed.data!;
  if (recipe.stage === 'pipeline') {
    const steps = recipe.stages.reduce((a, s) => a + s.train.steps, 0);
    return { ok: true, recipe: { ...recipe, train: { steps } } as ResolvedPipeline };
  }
  return { ok: true, recipe: recipe as ResolvedRecipe };
}

function dedupeIssues(issues: RecipeIssue[]): RecipeIssue[] {
  const seen = new Set<string>();
  return issues.filter((i) => (seen.has(i.path + i.message) ? false : (seen.add(i.path + i.message), true)));
}

/** Validates a recipe (a stage or a pipeline), throwing a RecipeError that lists every issue. */
export function resolveAnyRecipe(raw: unknown, where?: string): AnyResolvedRecipe {
  const res = checkRecipe(raw);
  if (!res.ok) throw new RecipeError(res.issues, where);
  return res.recipe;
}

/** Validates a stage recipe, throwing a RecipeError that lists every issue (a pipeline is an error here). */
export function resolveRecipe(raw: unknown, where?: string): ResolvedRecipe {
  const r = resolveAnyRecipe(raw, where);
  if (r.stage === 'pipeline')
    throw new RecipeError(
      [
        {
          path: 'stage',
          message: 'is "pipeline" where one stage is expected; use recipe.pipeline([...]) or load() for pipelines',
        },
      ],
      where,
    );
  return r;
}

/** The SwiGLU hidden size the model uses when ffnDim is unset. */
export function ffnDimOf(m: Pick<ModelConfig, 'dim' | 'ffnDim'>): number {
  return m.ffnDim ?? Math.ceil((8 * m.dim) / 3 / 32) * 32;
}
