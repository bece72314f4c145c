/**
 * Hugging Face import: an HF folder of a Llama, Mistral, Qwen2, Qwen3, Mixtral or Qwen3-MoE causal LM
 * (Lathe's export, or one saved by transformers) as a Lathe spec, weights and tokenizer. It depends on no run machinery,
 * so training code can use it for `--from <hf-dir>` without an import cycle.
 */
import { existsSync, statSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { LatheError } from '../errors.js';
import { familyOf, isMoeLayer, moeNames, paramSpecsOf } from './spec.js';
import type { ModelSpec } from './spec.js';
import { readSafetensors, toFloat32, type StoredTensor } from './safetensors.js';
import { Tokenizer } from '../tokenizer/index.js';
import {
  HF_ARCHITECTURE_OF,
  specFromHfConfig,
  type HfConfigInfo,
  type SpecFromHfOptions,
} from '../recipe/hf-config.js';
import type { Weights as NamedWeights } from './weights.js';
import { resizeVocab } from './vocab.js';

/** Options for {@link importHf}. */
export interface ImportHfOptions extends SpecFromHfOptions {
  /**
   * When the tokenizer has more ids than the model's vocab_size (Lathe adds its special tokens,
   * e.g. `<|bos|>`, to tokenizers that lack them), add embedding (and untied head) rows, set to
   * the mean of the existing rows. Default true; false throws instead.
   */
  growVocab?: boolean;
}

/** A model read from an HF folder. */
export interface HfImport {
  spec: ModelSpec;
  weights: NamedWeights;
  tokenizer: Tokenizer;
  /** What the config said besides the spec (architecture, dtype, token ids). */
  info: HfConfigInfo;
  /** The weight files read. */
  files: string[];
  /** Embedding rows added for tokenizer ids past the config's vocab_size: [from, to). */
  grownVocab?: [number, number];
}

/**
 * Reads an HF model folder (see recipe/hf-config.ts for the architectures): config.json, model.safetensors or a sharded
 * model.safetensors.index.json (F32, F16 or BF16, converted to float32), and tokenizer.json
 * (ByteLevel BPE). Errors are {@link LatheError}s that name the file and the field or tensor.
 */
export async function importHf(dir: string, opts: ImportHfOptions = {}): Promise<HfImport> {
  if (!existsSync(dir) || !statSync(dir).isDirectory()) throw new LatheError(`${dir}: not a directory`);
  const configPath = join(dir, 'config.json');
  const { spec, info } = specFromHfConfig(await readJson(configPath), configPath, opts);
  const tokenizer = await readTokenizer(dir);
  const { tensors, files, owner } = await readWeights(dir);
  const weights = mapWeights(spec, tensors, owner, configPath);
  let grownVocab: [number, number] | undefined;
  if (tokenizer.vocabSize > spec.vocabSize) {
    if (opts.growVocab === false) {
      throw new LatheError(
        `${join(dir, 'tokenizer.json')}: has ${tokenizer.vocabSize} ids (with Lathe's special tokens), more than ${configPath} vocab_size ${spec.vocabSize}`,
      );
    }
    grownVocab = [spec.vocabSize, tokenizer.vocabSize];
    resizeVocab(spec, weights, tokenizer.vocabSize);
  }
  return { spec, weights, tokenizer, info, files, grownVocab };
}

async function readJson(path: string): Promise<unknown> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (e) {
    throw new LatheError(
      `${path}: cannot read (${(e as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : (e as Error).message})`,
    );
  }
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new LatheError(`${path}: invalid JSON (${(e as Error).message})`);
  }
}

/** Reads every tensor of the folder's safetensors weights; `owner` says which file held each. */
async function readWeights(
  dir: string,
): Promise<{ tensors: Map<string, StoredTensor>; files: string[]; owner: Map<string, string> }> {
  const indexPath = join(dir, 'model.safetensors.index.json');
  const single = join(dir, 'model.safetensors');
  let files: string[];
  let expected: Map<string, string> | undefined;
  if (existsSync(indexPath)) {
    const index = await readJson(indexPath);
    const map = (index as { weight_map?: unknown }).weight_map;
    if (typeof map !== 'object' || map === null || Array.isArray(map))
      throw new LatheError(`${indexPath}: weight_map: missing or not an object`);
    expected = new Map();
    for (const [name, file] of Object.entries(map)) {
      if (typeof file !== 'string' || file.includes('/') || file.includes('\\'))
        throw new LatheError(
          `${indexPath}: weight_map.${name}: must be a file name in the folder, got ${JSON.stringify(file)}`,
        );
      expected.set(name, join(dir, file));
    }
    files = [...new Set(expected.values())];
    for (const f of files)
      if (!existsSync(f)) throw new LatheError(`${f}: missing (listed in ${indexPath} weight_map)`);
  } else if (existsSync(single)) {
    files = [single];
  } else {
    const bin = ['pytorch_model.bin', 'pytorch_model.bin.index.json'].find((f) => existsSync(join(dir, f)));
    throw new LatheError(
      `${single}: missing (and no model.safetensors.index.json)${bin ? `; ${bin} is a pickle checkpoint, which Lathe does not read: re-save it with save_pretrained(..., safe_serialization=True)` : ''}`,
    );
  }
  const tensors = new Map<string, StoredTensor>();
  const owner = new Map<string, string>();
  for (const f of files) {
    for (const [name, t] of (await readSafetensors(f)).tensors) {
      if (tensors.has(name)) throw new LatheError(`${f}: tensor ${name} also appears in ${owner.get(name)}`);
      tensors.set(name, t);
      owner.set(name, f);
    }
  }
  if (expected) {
    for (const [name, f] of expected)
      if (owner.get(name) !== f) throw new LatheError(`${f}: lacks tensor ${name} (listed in ${indexPath} weight_map)`);
  }
  return { tensors, files, owner };
}

// Tensors that carry no weights in HF Llama checkpoints (old saves keep RoPE's inv_freq).
const IGNORED = /\.rotary_emb\.inv_freq$/;

/** Checks and converts the stored tensors into the spec's parameters (float32). */
function mapWeights(
  spec: ModelSpec,
  tensors: Map<string, StoredTensor>,
  owner: Map<string, string>,
  configPath: string,
): NamedWeights {
  const where = (name: string) => owner.get(name) ?? 'model.safetensors';
  const anyFile = owner.values().next().value ?? 'model.safetensors';
  const toF32 = (name: string, t: StoredTensor): Float32Array => {
    if (t.dtype !== 'F32' && t.dtype !== 'F16' && t.dtype !== 'BF16')
      throw new LatheError(`${where(name)}: tensor ${name}: dtype ${t.dtype} is not supported (F32, F16 or BF16)`);
    return toFloat32(t);
  };
  const pending = new Map(tensors);
  const got: NamedWeights = new Map();
  const take = (name: string) => {
    const t = pending.get(name)!;
    pending.delete(name);
    return t;
  };
  // transformers 5 in memory (and any save that did not revert it): fused Mixtral / Qwen3-MoE experts.
  if (spec.arch === 'moe') {
    for (let i = 0; i < spec.layers; i++) {
      if (!isMoeLayer(spec, i)) continue;
      const fused = `model.layers.${i}.mlp.experts.gate_up_proj`;
      const down = `model.layers.${i}.mlp.experts.down_proj`;
      const router = `model.layers.${i}.mlp.gate.weight`;
      const names = moeNames(spec, i);
      if (pending.has(router))
        got.set(names.router, { shape: pending.get(router)!.shape, data: toF32(router, take(router)) });
      if (pending.has(fused)) {
        const t = take(fused);
        const [e, twoF, d] = t.shape as [number, number, number];
        if (t.shape.length !== 3 || e !== spec.experts || twoF !== 2 * spec.ffnDim || d !== spec.dim) {
          throw new LatheError(
            `${where(fused)}: tensor ${fused}: shape [${t.shape}] does not match [${spec.experts}, ${2 * spec.ffnDim}, ${spec.dim}] from ${configPath}`,
          );
        }
        const data = toF32(fused, t);
        const block = spec.ffnDim * spec.dim;
        for (let x = 0; x < e; x++) {
          got.set(names.expert(x).gate, {
            shape: [spec.ffnDim, spec.dim],
            data: data.slice(2 * x * block, (2 * x + 1) * block),
          });
          got.set(names.expert(x).up, {
            shape: [spec.ffnDim, spec.dim],
            data: data.slice((2 * x + 1) * block, (2 * x + 2) * block),
          });
        }
      }
      if (pending.has(down)) {
        const t = take(down);
        if (
          t.shape.length !== 3 ||
          t.shape[0] !== spec.experts ||
          t.shape[1] !== spec.dim ||
          t.shape[2] !== spec.ffnDim
        ) {
          throw new LatheError(
            `${where(down)}: tensor ${down}: shape [${t.shape}] does not match [${spec.experts}, ${spec.dim}, ${spec.ffnDim}] from ${configPath}`,
          );
        }
        const data = toF32(down, t);
        const block = spec.dim * spec.ffnDim;
        for (let x = 0; x < spec.experts; x++)
          got.set(names.expert(x).down, {
            shape: [spec.dim, spec.ffnDim],
            data: data.slice(x * block, (x + 1) * block),
          });
      }
    }
  }
  // A tied model's file may still carry the head; transformers ignores it, and so do we.
  if (spec.tieEmbeddings) pending.delete('lm_head.weight');
  for (const ps of paramSpecsOf(spec)) {
    if (got.has(ps.name)) continue;
    const t = pending.get(ps.name);
    if (!t) {
      const why = ps.name === 'lm_head.weight' ? ` (${configPath} tie_word_embeddings is false)` : '';
      throw new LatheError(`${anyFile}: tensor ${ps.name}: missing${why}`);
    }
    if (t.shape.join(',') !== ps.shape.join(',')) {
      throw new LatheError(
        `${where(ps.name)}: tensor ${ps.name}: shape [${t.shape}] does not match [${ps.shape}] from ${configPath}`,
      );
    }
    got.set(ps.name, { shape: ps.shape.slice(), data: toF32(ps.name, take(ps.name)) });
  }
  for (const name of [...pending.keys()]) if (IGNORED.test(name)) pending.delete(name);
  if (pending.size) {
    const names = [...pending.keys()].sort();
    const first = names[0]!;
    const hint = /\.bias$/.test(first)
      ? ' (this architecture has no such bias; check attention_bias and mlp_bias)'
      : '';
    throw new LatheError(
      `${where(first)}: tensor ${first}: not part of a ${HF_ARCHITECTURE_OF[familyOf(spec)]} model of ${configPath}${hint}${names.length > 1 ? ` (and ${names.length - 1} more)` : ''}`,
    );
  }
  return got;
}

async function readTokenizer(dir: string): Promise<Tokenizer> {
  const path = join(dir, 'tokenizer.json');
  if (!existsSync(path)) {
    const slow = ['tokenizer.model', 'vocab.json'].find((f) => existsSync(join(dir, f)));
    throw new LatheError(
      `${path}: missing; Lathe needs a fast (tokenizer.json) ByteLevel BPE tokenizer${slow ? ` (${slow} alone is not enough: save the fast tokenizer with AutoTokenizer.save_pretrained)` : ''}`,
    );
  }
  try {
    return await Tokenizer.load(path);
  } catch (e) {
    throw new LatheError(`${path}: ${(e as Error).message}`);
  }
}
