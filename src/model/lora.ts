import { LatheError } from '../errors.js';
import { LORA_TARGETS } from '../recipe/schema.js';
import { Rng } from '../random.js';
import { paramSpecsOf, type ModelSpec } from './spec.js';
import type { Weights } from './weights.js';

// LoRA (Hu et al. 2021) as PEFT defines it: a frozen Linear W [out, in] gains a low-rank update,
//   y = x W^T + (alpha / r) · dropout(x) A^T B^T,   A [r, in], B [out, r],
// A drawn from PEFT's default (kaiming-uniform with a = sqrt(5): U(-1/sqrt(in), 1/sqrt(in))) and
// B zero, so training starts from the base model exactly. Engine-neutral: names, shapes, the seeded
// initial adapters and merging live here; each engine computes the forward pass its own way.

export { LORA_TARGETS };

/** How the frozen base is held while adapters train (QLoRA): full precision, int8 per row, or NF4 (bitsandbytes). */
export type BaseQuantization = 'none' | 'int8' | 'nf4';

/** A LoRA configuration, as a recipe's `train.lora` resolves. */
export interface LoraConfig {
  rank: number;
  alpha: number;
  dropout: number;
  targets: string[];
  quantize: BaseQuantization;
}

/** One adapted projection: its module path, the base weight, the adapter tensors' names and the sizes. */
export interface LoraSite {
  /** HF module path, e.g. `model.layers.0.self_attn.q_proj`. */
  module: string;
  /** The base weight's name (`<module>.weight`). */
  weight: string;
  /** Adapter tensor names: `<module>.lora_A.weight` [r, in] and `<module>.lora_B.weight` [out, r]. */
  a: string;
  b: string;
  in: number;
  out: number;
}

/** PEFT's prefix of adapter tensor names in adapter_model.safetensors (a PeftModel wrapping a CausalLM). */
export const PEFT_PREFIX = 'base_model.model.';

/** The scale of the low-rank update: alpha / rank (PEFT without rsLoRA). */
export function loraScale(cfg: Pick<LoraConfig, 'rank' | 'alpha'>): number {
  return cfg.alpha / cfg.rank;
}

/**
 * Refuses targets the model does not have, naming the recipe field (`where`), and ranks larger
 * than a targeted projection.
 */
export function checkLoraTargets(
  spec: ModelSpec,
  cfg: Pick<LoraConfig, 'rank' | 'targets'>,
  where = 'train.lora',
): void {
  const allowed: readonly string[] = LORA_TARGETS[spec.arch];
  for (const [i, t] of cfg.targets.entries())
    if (!allowed.includes(t))
      throw new LatheError(
        `${where}.targets[${i}]: "${t}" is not a projection of a ${spec.arch} model; choose from ${allowed.join(', ')}`,
      );
  for (const s of loraSites(spec, cfg.targets))
    if (cfg.rank > Math.min(s.in, s.out))
      throw new LatheError(
        `${where}.rank: ${cfg.rank} exceeds ${s.module}'s smaller side (${Math.min(s.in, s.out)}); a low-rank update must be lower rank than the weight`,
      );
}

/** The adapted projections of a model, in parameter order. */
export function loraSites(spec: ModelSpec, targets: readonly string[]): LoraSite[] {
  const want = new Set(targets);
  const out: LoraSite[] = [];
  for (const ps of paramSpecsOf(spec)) {
    const m = /^(model\.layers\.\d+\..+)\.([a-z0-9_]+)\.weight$/.exec(ps.name);
    if (!m || ps.shape.length !== 2 || !want.has(m[2]!)) continue;
    // The MoE router (block_sparse_moe.gate) is not a target: only the experts' w1/w2/w3 are.
    if (m[2] === 'gate' || !m[1]!.startsWith('model.layers.')) continue;
    const module = `${m[1]}.${m[2]}`;
    out.push({
      module,
      weight: ps.name,
      a: `${module}.lora_A.weight`,
      b: `${module}.lora_B.weight`,
      in: ps.shape[1]!,
      out: ps.shape[0]!,
    });
  }
  return out;
}

/** Number of adapter parameters (what trains, and what the optimizer keeps moments for). */
export function loraParamCount(spec: ModelSpec, cfg: Pick<LoraConfig, 'rank' | 'targets'>): number {
  return loraSites(spec, cfg.targets).reduce((a, s) => a + cfg.rank * (s.in + s.out), 0);
}

/** The initial adapters under a seed: A uniform in ±1/sqrt(in) (PEFT's default), B zero. Both engines start from these. */
export function initAdapters(spec: ModelSpec, cfg: Pick<LoraConfig, 'rank' | 'targets'>, seed: number): Weights {
  const rng = Rng.derive(seed, 0x10a);
  const out: Weights = new Map();
  for (const s of loraSites(spec, cfg.targets)) {
    const bound = 1 / Math.sqrt(s.in);
    const a = new Float32Array(cfg.rank * s.in);
    for (let i = 0; i < a.length; i++) a[i] = (2 * rng.next() - 1) * bound;
    out.set(s.a, { shape: [cfg.rank, s.in], data: a });
    out.set(s.b, { shape: [s.out, cfg.rank], data: new Float32Array(s.out * cfg.rank) });
  }
  return out;
}

/** Checks that adapters hold exactly the tensors this spec and config expect, with their shapes. */
export function checkAdapters(
  spec: ModelSpec,
  cfg: Pick<LoraConfig, 'rank' | 'targets'>,
  adapters: Weights,
  where: string,
): void {
  const sites = loraSites(spec, cfg.targets);
  for (const s of sites)
    for (const [name, shape] of [
      [s.a, [cfg.rank, s.in]],
      [s.b, [s.out, cfg.rank]],
    ] as const) {
      const t = adapters.get(name);
      if (!t) throw new LatheError(`${where}: adapter ${name} is missing`);
      if (t.shape.join(',') !== shape.join(','))
        throw new LatheError(`${where}: adapter ${name} has shape [${t.shape}], expected [${shape}]`);
    }
  if (adapters.size !== 2 * sites.length) {
    const known = new Set(sites.flatMap((s) => [s.a, s.b]));
    const extra = [...adapters.keys()].find((k) => !known.has(k));
    throw new LatheError(
      `${where}: adapter ${extra} is not one of this LoRA configuration's (targets ${cfg.targets.join(', ')})`,
    );
  }
}

/** ΔW = scale · B A [out, in] of one site, accumulated in float64. */
export function loraDelta(
  a: Float32Array,
  b: Float32Array,
  rank: number,
  site: Pick<LoraSite, 'in' | 'out'>,
  scale: number,
): Float64Array {
  const d = new Float64Array(site.out * site.in);
  for (let o = 0; o < site.out; o++)
    for (let k = 0; k < rank; k++) {
      const bk = b[o * rank + k]! * scale;
      if (bk === 0) continue;
      const row = o * site.in;
      const ak = k * site.in;
      for (let i = 0; i < site.in; i++) d[row + i]! += bk * a[ak + i]!;
    }
  return d;
}

/** The base weights with every adapter merged in: W + (alpha / r) · B A (other tensors shared, not copied). */
export function mergeAdapters(spec: ModelSpec, base: Weights, adapters: Weights, cfg: LoraConfig): Weights {
  const out: Weights = new Map(base);
  const scale = loraScale(cfg);
  for (const s of loraSites(spec, cfg.targets)) {
    const w = base.get(s.weight);
    const a = adapters.get(s.a);
    const b = adapters.get(s.b);
    if (!w || !a || !b) throw new LatheError(`merging LoRA: ${!w ? s.weight : !a ? s.a : s.b} is missing`);
    const d = loraDelta(a.data, b.data, cfg.rank, s, scale);
    const merged = new Float32Array(w.data.length);
    for (let i = 0; i < merged.length; i++) merged[i] = w.data[i]! + d[i]!;
    out.set(s.weight, { shape: w.shape.slice(), data: merged });
  }
  return out;
}
