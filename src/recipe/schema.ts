import { z } from 'zod';

// One typed config per part of a recipe, each field with a doc line and a default (TRL's style).
// Canonical keys are camelCase; files may also use snake_case (see normalize.ts).

/** Where training text comes from. */
export const SourceSchema = z
  .strictObject({
    name: z.string().min(1).optional().describe('Name shown in reports and metrics; defaults to the file name.'),
    path: z
      .union([z.string().min(1), z.array(z.string().min(1)).min(1)])
      .describe('A file, a folder (read recursively) or a glob, relative to the recipe file; or a list of them.'),
    format: z
      .enum(['auto', 'txt', 'jsonl', 'csv'])
      .default('auto')
      .describe('File format; auto picks by extension (.txt, .jsonl/.json, .csv).'),
    field: z
      .string()
      .min(1)
      .default('text')
      .describe('The JSONL field or CSV column holding the text. Chat rows ({"messages": [...]}) are detected.'),
    split: z
      .enum(['line', 'paragraph', 'file'])
      .default('paragraph')
      .describe('How a .txt file splits into documents: each line, blank-line separated paragraphs, or the whole file.'),
    weight: z.number().positive().default(1).describe('Mixing weight: the share of training sequences drawn from this source.'),
  })
  .describe('A data source.');

/** PII kinds to scrub; each match is replaced by a typed placeholder such as <EMAIL>. */
export const PiiSchema = z
  .strictObject({
    email: z.boolean().default(true).describe('Scrub e-mail addresses.'),
    phone: z.boolean().default(true).describe('Scrub phone numbers.'),
    iban: z.boolean().default(true).describe('Scrub IBANs (checksum-verified).'),
    card: z.boolean().default(true).describe('Scrub payment card numbers (Luhn-verified).'),
    ip: z.boolean().default(true).describe('Scrub IPv4 and IPv6 addresses.'),
  })
  .describe('PII scrubbing.');

/** Cleaning applied to every document before tokenization; every action is counted. */
export const CleanSchema = z
  .strictObject({
    nfc: z.boolean().default(true).describe('Normalize Unicode to NFC.'),
    stripControl: z.boolean().default(true).describe('Remove control characters other than tab and newline.'),
    minChars: z.number().int().min(0).default(1).describe('Drop documents shorter than this (after cleaning).'),
    maxChars: z.number().int().positive().default(1_000_000).describe('Drop documents longer than this.'),
    dedupe: z
      .enum(['none', 'exact', 'near'])
      .default('exact')
      .describe('Remove exact duplicates, or also near duplicates (MinHash + LSH).'),
    nearThreshold: z.number().gt(0).lte(1).default(0.85).describe('Estimated Jaccard similarity above which a document is a near duplicate.'),
    minhashPerms: z.number().int().min(16).max(512).default(128).describe('MinHash permutations (signature length).'),
    shingle: z.number().int().min(1).max(32).default(5).describe('Shingle size in characters for near-dedupe.'),
    pii: PiiSchema.prefault({}).describe('PII scrubbing per kind.'),
  })
  .describe('Cleaning.');

export const DataSchema = z
  .strictObject({
    sources: z.array(SourceSchema).min(1, { error: 'add at least one source, e.g. {"path": "data/train.jsonl"}' }).describe('Data sources, mixed by weight.'),
    clean: CleanSchema.prefault({}).describe('Cleaning, dedupe and PII scrubbing.'),
    onError: z
      .enum(['skip', 'fail'])
      .default('fail')
      .describe('On a malformed line: stop with file:line (fail), or skip it and count it (skip).'),
    valFraction: z.number().min(0).max(0.5).default(0.05).describe('Share of documents held out for evaluation, chosen by content hash.'),
  })
  .describe('Data: sources, cleaning and mixing.');

export const TokenizerSchema = z
  .strictObject({
    path: z.string().min(1).optional().describe('Load this HF tokenizer.json instead of training one.'),
    vocabSize: z.number().int().min(300).max(65_536).default(1024).describe('Vocabulary size when training (bytes, specials and merges).'),
    minFrequency: z.number().int().min(1).default(2).describe('A pair must occur this often to be merged.'),
    maxBytes: z.number().int().positive().default(64 * 1024 * 1024).describe('Train on at most this many bytes of cleaned text.'),
  })
  .describe('Tokenizer: byte-level BPE, trained on the recipe data or loaded.');

export const ModelSchema = z
  .strictObject({
    arch: z.enum(['dense', 'moe']).default('dense').describe('Llama-style dense decoder, or Mixtral-style mixture of experts.'),
    dim: z.number().int().positive().default(128).describe('Hidden size.'),
    layers: z.number().int().positive().default(2).describe('Number of decoder blocks.'),
    heads: z.number().int().positive().default(4).describe('Attention heads.'),
    kvHeads: z.number().int().positive().optional().describe('Key/value heads for grouped-query attention; defaults to heads.'),
    ffnDim: z.number().int().positive().optional().describe('SwiGLU hidden size; defaults to 8/3·dim rounded up to a multiple of 32.'),
    context: z.number().int().min(8).default(128).describe('Sequence length in tokens.'),
    ropeTheta: z.number().positive().default(10_000).describe('RoPE base.'),
    normEps: z.number().positive().default(1e-5).describe('RMSNorm epsilon.'),
    tieEmbeddings: z.boolean().default(true).describe('Share the input embedding with the output head.'),
    initStd: z.number().positive().default(0.02).describe('Standard deviation of the normal weight init.'),
    experts: z.number().int().min(1).default(8).describe('MoE: experts per layer.'),
    topK: z.number().int().min(1).default(2).describe('MoE: experts each token is routed to.'),
    auxLossCoef: z.number().min(0).default(0.01).describe('MoE: load-balancing auxiliary loss weight.'),
    zLossCoef: z.number().min(0).default(0.001).describe('MoE: router z-loss weight.'),
  })
  .describe('Model architecture.');

export const PretrainSchema = z
  .strictObject({
    steps: z.number().int().positive().default(200).describe('Optimizer steps.'),
    batchSize: z.number().int().positive().default(16).describe('Sequences per micro-batch.'),
    gradAccum: z.number().int().positive().default(1).describe('Micro-batches accumulated per optimizer step.'),
    lr: z.number().positive().default(3e-3).describe('Peak learning rate.'),
    minLr: z.number().min(0).default(3e-4).describe('Learning rate at the end of the cosine decay.'),
    warmupSteps: z.number().int().min(0).default(20).describe('Linear warmup steps.'),
    weightDecay: z.number().min(0).default(0.1).describe('AdamW decoupled weight decay (not applied to norms).'),
    beta1: z.number().min(0).lt(1).default(0.9).describe('AdamW beta1.'),
    beta2: z.number().min(0).lt(1).default(0.95).describe('AdamW beta2.'),
    eps: z.number().positive().default(1e-8).describe('AdamW epsilon.'),
    gradClip: z.number().min(0).default(1).describe('Clip the global gradient norm to this; 0 disables.'),
    fimRate: z.number().min(0).max(1).default(0).describe('Share of sequences turned into fill-in-the-middle examples.'),
    logEvery: z.number().int().positive().default(1).describe('Write metrics every N steps.'),
    checkpointEvery: z.number().int().min(0).default(100).describe('Checkpoint every N steps (0: only at the end).'),
  })
  .describe('Pre-training hyper-parameters.');

export const EvalSchema = z
  .strictObject({
    every: z.number().int().min(0).default(50).describe('Evaluate held-out loss every N steps (0: only at the end).'),
    batches: z.number().int().positive().default(4).describe('Held-out batches per evaluation.'),
  })
  .describe('Evaluation during training.');

export const BackendSchema = z.enum(['cpu', 'wasm', 'webgpu', 'auto']);

export const PretrainRecipeSchema = z
  .strictObject({
    name: z.string().min(1).optional().describe('A name for humans; not part of the run identity beyond the lock.'),
    stage: z.literal('pretrain').describe('The training stage.'),
    seed: z.number().int().min(0).max(2 ** 32 - 1).default(1337).describe('Seed for init, data order and sampling.'),
    backend: BackendSchema.default('cpu').describe('tfjs backend: cpu, wasm, webgpu, or auto (best available, said aloud).'),
    data: DataSchema.describe('Training data.'),
    tokenizer: TokenizerSchema.prefault({}).describe('Tokenizer.'),
    model: ModelSchema.prefault({}).describe('Model.'),
    train: PretrainSchema.prefault({}).describe('Training hyper-parameters.'),
    eval: EvalSchema.prefault({}).describe('Evaluation.'),
  })
  .describe('A Lathe pre-training recipe.');

/** The recipe schema, one branch per stage. */
export const RecipeSchema = z.discriminatedUnion('stage', [PretrainRecipeSchema]);

export type SourceConfig = z.output<typeof SourceSchema>;
export type CleanConfig = z.output<typeof CleanSchema>;
export type PiiConfig = z.output<typeof PiiSchema>;
export type DataConfig = z.output<typeof DataSchema>;
export type TokenizerConfig = z.output<typeof TokenizerSchema>;
export type ModelConfig = z.output<typeof ModelSchema>;
export type PretrainConfig = z.output<typeof PretrainSchema>;
export type EvalConfig = z.output<typeof EvalSchema>;
export type Backend = z.output<typeof BackendSchema>;
/** A recipe with every default filled in. */
export type ResolvedRecipe = z.output<typeof RecipeSchema>;
/** A recipe as a user writes it: everything with a default is optional. */
export type RecipeInput = z.input<typeof RecipeSchema>;
export type Stage = ResolvedRecipe['stage'];

/** JSON Schema (draft 2020-12) of a recipe file, as users write it. */
export function recipeJsonSchema(): object {
  return z.toJSONSchema(RecipeSchema, { io: 'input', unrepresentable: 'any' });
}
