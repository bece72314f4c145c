import type { ModelConfig, MODEL_FAMILIES } from './schema.js';

type ModelFamily = (typeof MODEL_FAMILIES)[number];

// Which open-model fields go with which HF family (model_type): the rules validation applies to a
// model section, so every spec that passes is one its family's transformers class computes exactly.

/** The spec's family: its own, or the default for its arch. */
export function familyOf(s: { arch: 'dense' | 'moe'; family?: ModelFamily }): ModelFamily {
  return s.family ?? (s.arch === 'moe' ? 'mixtral' : 'llama');
}

/** The open-model fields of a spec. */
type OpenField =
  | 'family'
  | 'attentionBias'
  | 'qkNorm'
  | 'ropeScaling'
  | 'slidingWindow'
  | 'windowLayers'
  | 'normTopK'
  | 'denseLayers'
  | 'denseFfnDim';

/**
 * What a model section's open-model fields may not combine to, each with the field to fix: every
 * spec that passes is one its family's HF class computes exactly (so export writes it back).
 */
export function familyIssues(
  m: Partial<Pick<ModelConfig, OpenField | 'arch' | 'layers'>>,
): { field: string; message: string }[] {
  const out: { field: string; message: string }[] = [];
  const arch = m.arch ?? 'dense';
  const family = familyOf({ arch, family: m.family });
  const moeFamily = family === 'mixtral' || family === 'qwen3_moe';
  if (moeFamily !== (arch === 'moe'))
    out.push({
      field: 'family',
      message: `${family} is ${moeFamily ? 'a mixture of experts: set arch "moe"' : 'dense: set arch "dense"'}`,
    });
  if (family === 'qwen2' && m.attentionBias !== 'qkv')
    out.push({ field: 'attentionBias', message: 'qwen2 has q/k/v biases: set "qkv"' });
  if (m.attentionBias === 'qkv' && family !== 'qwen2')
    out.push({ field: 'attentionBias', message: `"qkv" is Qwen2's; ${family} has "all" or none` });
  if (m.attentionBias === 'all' && (family === 'mistral' || family === 'mixtral' || family === 'qwen2'))
    out.push({ field: 'attentionBias', message: `${family} has no attention_bias option` });
  const qk = family === 'qwen3' || family === 'qwen3_moe';
  if (qk !== Boolean(m.qkNorm))
    out.push({ field: 'qkNorm', message: qk ? `${family} has q/k norms: set true` : `${family} has no q/k norms` });
  if (m.slidingWindow !== undefined && family === 'llama')
    out.push({ field: 'slidingWindow', message: 'llama has no sliding window; set family mistral or qwen2' });
  if (m.windowLayers !== undefined && family !== 'qwen2' && family !== 'qwen3')
    out.push({ field: 'windowLayers', message: `${family} applies its window to every layer; remove windowLayers` });
  if (m.windowLayers !== undefined && m.slidingWindow === undefined)
    out.push({ field: 'windowLayers', message: 'is set without slidingWindow' });
  for (const k of ['normTopK', 'denseLayers', 'denseFfnDim'] as const)
    if (m[k] !== undefined && family !== 'qwen3_moe')
      out.push({ field: k, message: `is a Qwen3-MoE setting: set family "qwen3_moe"` });
  for (const k of ['windowLayers', 'denseLayers'] as const) {
    const list: unknown = m[k];
    const bad = Array.isArray(list) ? list.find((i) => typeof i === 'number' && i >= m.layers!) : undefined;
    if (bad !== undefined)
      out.push({ field: k, message: `layer ${String(bad)} is past the last layer ${m.layers! - 1}` });
  }
  if (Array.isArray(m.denseLayers) && m.layers !== undefined && new Set(m.denseLayers).size >= m.layers)
    out.push({ field: 'denseLayers', message: 'leaves no layer with experts' });
  return out;
}
