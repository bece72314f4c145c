/**
 * GGUF export: a run's checkpoint as one `.gguf` file that llama.cpp (and what is built on it:
 * llama-cpp-python, ollama, LM Studio) loads, for the dense (Llama) and MoE (Mixtral)
 * architectures. llama.cpp reads both as its `llama` architecture; a MoE model adds the expert
 * counts and stacked expert tensors.
 *
 * Written in TypeScript (gguf-file.ts, ggml-quant.ts) rather than through llama.cpp's `gguf`
 * Python package so that `lathe export` keeps working where only Node is installed, like the rest
 * of the tfjs side; the tests check the files with that package's reader and with llama.cpp.
 *
 * Conversions, as llama.cpp's own HF converter makes them:
 * - q_proj and k_proj rows are permuted per head from HF's rotate-half RoPE layout to llama.cpp's
 *   interleaved pairs (row s·hd/2 + j of a head becomes row 2j + s);
 * - Mixtral experts are stacked into one [experts, ...] tensor per projection (w1 gate, w3 up,
 *   w2 down); the router stays float32;
 * - the tokenizer is GPT-2 style byte-level BPE (`tokenizer.ggml.model = gpt2`, GPT-2 pre-split, llama.cpp's `gpt-2` pre-tokenizer),
 *   with its special tokens as control tokens, `<|bos|>` added in front, `<|eos|>` and `<|end|>`
 *   ending generation, and the chat template in `tokenizer.chat_template`.
 */
import { existsSync, statSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { LatheError } from '../errors.js';
import { familyOf, type ModelSpec } from '../model/spec.js';
import { OPEN_FIELDS } from '../recipe/model-spec.js';
import { loadModel } from '../runs/index.js';
import type { Tokenizer } from '../tokenizer/index.js';
import { VERSION } from '../version.js';
import { decodeTensor, encodeTensor, QK, type GgmlType } from './ggml-quant.js';
import { GgufWriter } from './gguf-file.js';
import type { NamedWeights } from './quantize.js';

/** The GGUF encodings `lathe export --format gguf --quant` offers. */
export const GGUF_QUANTS = ['f16', 'q8_0', 'q4_0'] as const;
/** A GGUF encoding of the weights. */
export type GgufQuant = (typeof GGUF_QUANTS)[number];

/** Options for {@link exportGguf}. */
export interface ExportGgufOptions {
  /** Checkpoint step to export; default the latest. */
  step?: number;
  /** Weight encoding (default f16). */
  quant?: GgufQuant;
}

/** What {@link exportGguf} wrote. */
export interface ExportGgufResult {
  /** The .gguf file. */
  path: string;
  bytes: number;
  step: number;
  /** The checkpoint folder exported, and newer ones skipped because they failed their checksums. */
  checkpoint: string;
  skipped: { step: number; reason: string }[];
  quant: GgufQuant;
  /** llama.cpp's `general.architecture`, and the HF class the run corresponds to. */
  architecture: 'llama';
  arch: ModelSpec['arch'];
  /** Tensors written per ggml type. */
  tensorTypes: Partial<Record<GgmlType, number>>;
  /** sqrt(sum (w - decode(encode(w)))^2 / sum w^2) over every weight written. */
  relativeRmsError: number;
}

// llama.cpp's `llama_ftype` values for general.file_type.
const FILE_TYPE: Record<GgufQuant, number> = { f16: 1, q8_0: 7, q4_0: 2 };
// llama.cpp's token types.
const TOKEN_NORMAL = 1;
const TOKEN_CONTROL = 3;
const TOKEN_USER_DEFINED = 4;
const TOKEN_UNUSED = 5;

/**
 * Writes a run's checkpoint as a GGUF file. `out` is the file (a name ending in .gguf) or a
 * directory, where `model-<quant>.gguf` is written; the file must not exist yet.
 */
export async function exportGguf(runDir: string, out: string, opts: ExportGgufOptions = {}): Promise<ExportGgufResult> {
  const quant = opts.quant ?? 'f16';
  if (!(GGUF_QUANTS as readonly string[]).includes(quant))
    throw new LatheError(`quant: "${String(quant)}" is not supported; use ${GGUF_QUANTS.join(', ')}`);
  const path = resolve(out.endsWith('.gguf') ? out : join(out, `model-${quant}.gguf`));
  if (existsSync(path)) throw new LatheError(`--out ${out}: ${path} exists; choose a new file name`);
  if (!out.endsWith('.gguf') && existsSync(out) && !statSync(out).isDirectory())
    throw new LatheError(`--out ${out}: exists and is neither a directory nor a .gguf file name`);
  const { model, tokenizer, step, checkpoint, skipped } = await loadModel(runDir, { step: opts.step });
  try {
    const spec = model.spec;
    checkSpec(spec);
    const w = new GgufWriter();
    writeModelMetadata(w, spec, { name: basename(resolve(runDir)), quant });
    writeTokenizerMetadata(w, tokenizer, spec.vocabSize);
    const stats = { err: 0, ref: 0, types: {} as Partial<Record<GgmlType, number>> };
    addTensors(w, spec, await model.weights(), quant, stats);
    await mkdir(dirname(path), { recursive: true });
    await w.write(path);
    return {
      path,
      bytes: w.size,
      step,
      checkpoint,
      skipped,
      quant,
      architecture: 'llama',
      arch: spec.arch,
      tensorTypes: stats.types,
      relativeRmsError: stats.ref > 0 ? Math.sqrt(stats.err / stats.ref) : 0,
    };
  } finally {
    await model.dispose();
  }
}

/**
 * Refuses what this writer does not map yet: families other than Lathe's own decoders (llama,
 * mixtral) and their open-model features (biases, q/k norms, RoPE scaling, sliding windows, dense
 * layers in a MoE, unnormalised top-k), which llama.cpp would read as a different model.
 */
function checkSpec(spec: ModelSpec): void {
  const family = familyOf(spec);
  const extra = OPEN_FIELDS.filter(
    (k) => k !== 'family' && spec[k] !== undefined && !(k === 'normTopK' && spec[k] === true),
  );
  if ((family !== 'llama' && family !== 'mixtral') || extra.length)
    throw new LatheError(
      `gguf export: ${family !== 'llama' && family !== 'mixtral' ? `model family ${family}` : `model.${extra[0]}`} is not supported; ` +
        "it writes Lathe's own dense (llama) and MoE (mixtral) decoders. Use --format hf, and llama.cpp's convert_hf_to_gguf.py on that folder",
    );
}

function writeModelMetadata(w: GgufWriter, s: ModelSpec, o: { name: string; quant: GgufQuant }): void {
  w.string('general.architecture', 'llama')
    .string('general.type', 'model')
    .string('general.name', o.name)
    .string('general.source.lathe_version', VERSION)
    .u32('general.file_type', FILE_TYPE[o.quant])
    .u32('general.quantization_version', 2)
    .u32('llama.vocab_size', s.vocabSize)
    .u32('llama.context_length', s.context)
    .u32('llama.embedding_length', s.dim)
    .u32('llama.block_count', s.layers)
    .u32('llama.feed_forward_length', s.ffnDim)
    .u32('llama.attention.head_count', s.heads)
    .u32('llama.attention.head_count_kv', s.kvHeads)
    .u32('llama.attention.key_length', s.headDim)
    .u32('llama.attention.value_length', s.headDim)
    .u32('llama.rope.dimension_count', s.headDim)
    .f32('llama.rope.freq_base', s.ropeTheta)
    .f32('llama.attention.layer_norm_rms_epsilon', s.normEps);
  if (s.arch === 'moe') w.u32('llama.expert_count', s.experts).u32('llama.expert_used_count', s.topK);
}

/** The vocabulary, merges, special ids and chat template, as llama.cpp's GPT-2 BPE tokenizer reads them. */
function writeTokenizerMetadata(w: GgufWriter, tok: Tokenizer, vocabSize: number): void {
  const json = tok.toJSON() as {
    added_tokens: { id: number; content: string; special: boolean }[];
    pre_tokenizer: { add_prefix_space: boolean; use_regex: boolean };
    model: { merges: [string, string][] };
  };
  if (json.pre_tokenizer.add_prefix_space || !json.pre_tokenizer.use_regex)
    throw new LatheError(
      'tokenizer: GGUF export needs the GPT-2 byte-level pre-tokenizer (add_prefix_space false, use_regex true), as Lathe trains it',
    );
  if (tok.vocabSize > vocabSize)
    throw new LatheError(`tokenizer: ${tok.vocabSize} ids do not fit the model's vocabulary of ${vocabSize}`);
  const added = new Map(json.added_tokens.map((t) => [t.id, t]));
  const tokens: string[] = [];
  const types = new Int32Array(vocabSize);
  for (let id = 0; id < vocabSize; id++) {
    const t = tok.idToToken(id);
    const a = added.get(id);
    // Ids no token uses (a grown embedding) get a placeholder name.
    tokens.push(t ?? `[PAD${id}]`);
    types[id] = t === undefined ? TOKEN_UNUSED : a ? (a.special ? TOKEN_CONTROL : TOKEN_USER_DEFINED) : TOKEN_NORMAL;
  }
  const merges = json.model.merges.map(([a, b], i) => {
    if (a.includes(' ') || b.includes(' '))
      throw new LatheError(`tokenizer: merge ${i} (${JSON.stringify([a, b])}) holds a space, which GGUF cannot store`);
    return `${a} ${b}`;
  });
  const sp = tok.special;
  w.string('tokenizer.ggml.model', 'gpt2')
    .string('tokenizer.ggml.pre', 'gpt-2')
    .strings('tokenizer.ggml.tokens', tokens)
    .i32s('tokenizer.ggml.token_type', types)
    .strings('tokenizer.ggml.merges', merges)
    .u32('tokenizer.ggml.bos_token_id', sp.bos)
    .u32('tokenizer.ggml.eos_token_id', sp.eos)
    .u32('tokenizer.ggml.eot_token_id', sp.end)
    .u32('tokenizer.ggml.padding_token_id', sp.pad)
    .u32('tokenizer.ggml.fim_pre_token_id', sp.fimPrefix)
    .u32('tokenizer.ggml.fim_suf_token_id', sp.fimSuffix)
    .u32('tokenizer.ggml.fim_mid_token_id', sp.fimMiddle)
    .bool('tokenizer.ggml.add_bos_token', true)
    .bool('tokenizer.ggml.add_eos_token', false)
    .string('tokenizer.chat_template', tok.chatTemplate);
}

interface Stats {
  err: number;
  ref: number;
  types: Partial<Record<GgmlType, number>>;
}

/** The ggml type of a weight: norms and the router in float32, the rest by `quant`. */
function typeOf(name: string, ne: readonly number[], quant: GgufQuant, tied: boolean): GgmlType {
  if (ne.length === 1 || name.endsWith('.ffn_gate_inp.weight')) return 'F32';
  if (quant === 'f16' || ne[0]! % QK) return 'F16';
  if (quant === 'q8_0') return 'Q8_0';
  // q4_0: the output projection (the embedding, when tied) keeps 8 bits, as llama.cpp's quantizer keeps it wider.
  return name === 'output.weight' || (tied && name === 'token_embd.weight') ? 'Q8_0' : 'Q4_0';
}

function addTensors(w: GgufWriter, s: ModelSpec, weights: NamedWeights, quant: GgufQuant, stats: Stats): void {
  const get = (name: string): Float32Array => {
    const t = weights.get(name);
    if (!t) throw new Error(`gguf export: weight ${name} is missing`);
    return t.data;
  };
  const add = (name: string, ne: number[], data: () => Float32Array) => {
    const type = typeOf(name, ne, quant, s.tieEmbeddings);
    stats.types[type] = (stats.types[type] ?? 0) + 1;
    w.tensor(name, type, ne, () => {
      const x = data();
      const bytes = encodeTensor(type, x, ne[0]!);
      const back = decodeTensor(type, bytes, x.length);
      for (let i = 0; i < x.length; i++) {
        stats.err += (back[i]! - x[i]!) ** 2;
        stats.ref += x[i]! ** 2;
      }
      return bytes;
    });
  };
  const hd = s.headDim;
  add('token_embd.weight', [s.dim, s.vocabSize], () => get('model.embed_tokens.weight'));
  for (let i = 0; i < s.layers; i++) {
    const p = `model.layers.${i}`;
    const b = `blk.${i}`;
    add(`${b}.attn_norm.weight`, [s.dim], () => get(`${p}.input_layernorm.weight`));
    add(`${b}.attn_q.weight`, [s.dim, s.heads * hd], () =>
      ropeInterleave(get(`${p}.self_attn.q_proj.weight`), s.heads, hd, s.dim),
    );
    add(`${b}.attn_k.weight`, [s.dim, s.kvHeads * hd], () =>
      ropeInterleave(get(`${p}.self_attn.k_proj.weight`), s.kvHeads, hd, s.dim),
    );
    add(`${b}.attn_v.weight`, [s.dim, s.kvHeads * hd], () => get(`${p}.self_attn.v_proj.weight`));
    add(`${b}.attn_output.weight`, [s.heads * hd, s.dim], () => get(`${p}.self_attn.o_proj.weight`));
    add(`${b}.ffn_norm.weight`, [s.dim], () => get(`${p}.post_attention_layernorm.weight`));
    if (s.arch === 'moe') {
      const m = `${p}.block_sparse_moe`;
      const stack = (w: string) => () =>
        concat(Array.from({ length: s.experts }, (_, e) => get(`${m}.experts.${e}.${w}.weight`)));
      add(`${b}.ffn_gate_inp.weight`, [s.dim, s.experts], () => get(`${m}.gate.weight`));
      add(`${b}.ffn_gate_exps.weight`, [s.dim, s.ffnDim, s.experts], stack('w1'));
      add(`${b}.ffn_up_exps.weight`, [s.dim, s.ffnDim, s.experts], stack('w3'));
      add(`${b}.ffn_down_exps.weight`, [s.ffnDim, s.dim, s.experts], stack('w2'));
    } else {
      add(`${b}.ffn_gate.weight`, [s.dim, s.ffnDim], () => get(`${p}.mlp.gate_proj.weight`));
      add(`${b}.ffn_up.weight`, [s.dim, s.ffnDim], () => get(`${p}.mlp.up_proj.weight`));
      add(`${b}.ffn_down.weight`, [s.ffnDim, s.dim], () => get(`${p}.mlp.down_proj.weight`));
    }
  }
  add('output_norm.weight', [s.dim], () => get('model.norm.weight'));
  if (!s.tieEmbeddings) add('output.weight', [s.dim, s.vocabSize], () => get('lm_head.weight'));
}

/**
 * Reorders the rows of a q or k projection [heads·hd, cols] from HF's rotate-half layout (pairs
 * j and j + hd/2 of a head) to llama.cpp's interleaved one (pairs 2j and 2j + 1).
 */
export function ropeInterleave(w: Float32Array, heads: number, hd: number, cols: number): Float32Array {
  const out = new Float32Array(w.length);
  const half = hd / 2;
  for (let h = 0; h < heads; h++)
    for (let s = 0; s < 2; s++)
      for (let j = 0; j < half; j++) {
        const from = (h * hd + s * half + j) * cols;
        out.set(w.subarray(from, from + cols), (h * hd + 2 * j + s) * cols);
      }
  return out;
}

function concat(parts: Float32Array[]): Float32Array {
  const out = new Float32Array(parts.reduce((a, p) => a + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}
