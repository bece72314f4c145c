import { z } from 'zod';
import { evalSuiteFields } from './eval-schema.js';

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
      .describe(
        'How a .txt file splits into documents: each line, blank-line separated paragraphs, or the whole file.',
      ),
    weight: z
      .number()
      .positive()
      .default(1)
      .describe('Mixing weight: the share of training sequences drawn from this source.'),
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
    nearThreshold: z
      .number()
      .gt(0)
      .lte(1)
      .default(0.85)
      .describe('Estimated Jaccard similarity above which a document is a near duplicate.'),
    minhashPerms: z.number().int().min(16).max(512).default(128).describe('MinHash permutations (signature length).'),
    shingle: z.number().int().min(1).max(32).default(5).describe('Shingle size in characters for near-dedupe.'),
    pii: PiiSchema.prefault({}).describe('PII scrubbing per kind.'),
  })
  .describe('Cleaning.');

/** Continued pre-training: the base model's own kind of data, mixed back in so it forgets less. */
export const ReplaySchema = z
  .strictObject({
    ...SourceSchema.shape,
    weight: z
      .number()
      .gt(0)
      .lt(1)
      .default(0.25)
      .describe('Share of training sequences drawn from the replay data (the sources share the rest).'),
  })
  .describe(
    'Replay (continued pre-training, with `from`): text like the base model was trained on, mixed in at a share of the training sequences to limit forgetting; its held-out loss is reported as eval_loss_replay.',
  );

export const DataSchema = z
  .strictObject({
    sources: z
      .array(SourceSchema)
      .min(1, { error: 'add at least one source, e.g. {"path": "data/train.jsonl"}' })
      .describe('Data sources, mixed by weight.'),
    replay: ReplaySchema.optional(),
    clean: CleanSchema.prefault({}).describe('Cleaning, dedupe and PII scrubbing.'),
    onError: z
      .enum(['skip', 'fail'])
      .default('fail')
      .describe('On a malformed line: stop with file:line (fail), or skip it and count it (skip).'),
    valFraction: z
      .number()
      .min(0)
      .max(0.5)
      .default(0.05)
      .describe('Share of documents held out for evaluation, chosen by content hash.'),
  })
  .describe('Data: sources, cleaning and mixing.');

export const TokenizerSchema = z
  .strictObject({
    path: z.string().min(1).optional().describe('Load this HF tokenizer.json instead of training one.'),
    addTokens: z
      .array(z.string().min(1))
      .min(1)
      .optional()
      .describe(
        "Continued pre-training (`from`): tokens added to the base model's tokenizer, each matched whole in text and encoded as one new id; the embedding (and untied head) rows of new ids start at the mean of the base's rows.",
      ),
    vocabSize: z
      .number()
      .int()
      .min(300)
      .max(65_536)
      .default(1024)
      .describe('Vocabulary size when training (bytes, specials and merges).'),
    minFrequency: z.number().int().min(1).default(2).describe('A pair must occur this often to be merged.'),
    maxBytes: z
      .number()
      .int()
      .positive()
      .default(64 * 1024 * 1024)
      .describe('Train on at most this many bytes of cleaned text.'),
  })
  .describe('Tokenizer: byte-level BPE, trained on the recipe data or loaded.');

/** The Hugging Face architectures a model section can describe (its `model_type`). */
export const MODEL_FAMILIES = ['llama', 'mistral', 'qwen2', 'qwen3', 'mixtral', 'qwen3_moe'] as const;

/** RoPE scaling as transformers' `rope_parameters`: Llama 3.x's `llama3`, or position interpolation (`linear`). */
export const RopeScalingSchema = z.discriminatedUnion('type', [
  z
    .strictObject({
      type: z.literal('llama3'),
      factor: z.number().positive().describe('Scaling factor of the low frequencies.'),
      lowFreqFactor: z.number().positive().describe('Wavelengths above originalContext / lowFreqFactor are scaled.'),
      highFreqFactor: z
        .number()
        .positive()
        .describe('Wavelengths below originalContext / highFreqFactor are kept; in between they are blended.'),
      originalContext: z
        .number()
        .int()
        .positive()
        .describe('The context the model was first trained at (original_max_position_embeddings).'),
    })
    .describe('Llama 3.1 frequency scaling.'),
  z
    .strictObject({
      type: z.literal('linear'),
      factor: z.number().positive().describe('Positions are divided by this.'),
    })
    .describe('Linear position interpolation.'),
]);

export const ModelSchema = z
  .strictObject({
    arch: z
      .enum(['dense', 'moe'])
      .default('dense')
      .describe('Llama-style dense decoder, or Mixtral-style mixture of experts.'),
    dim: z.number().int().positive().default(128).describe('Hidden size.'),
    layers: z.number().int().positive().default(2).describe('Number of decoder blocks.'),
    heads: z.number().int().positive().default(4).describe('Attention heads.'),
    kvHeads: z
      .number()
      .int()
      .positive()
      .optional()
      .describe('Key/value heads for grouped-query attention; defaults to heads.'),
    ffnDim: z
      .number()
      .int()
      .positive()
      .optional()
      .describe('SwiGLU hidden size; defaults to 8/3·dim rounded up to a multiple of 32.'),
    context: z.number().int().min(8).default(128).describe('Sequence length in tokens.'),
    ropeTheta: z.number().positive().default(10_000).describe('RoPE base.'),
    normEps: z.number().positive().default(1e-5).describe('RMSNorm epsilon.'),
    tieEmbeddings: z.boolean().default(true).describe('Share the input embedding with the output head.'),
    initStd: z.number().positive().default(0.02).describe('Standard deviation of the normal weight init.'),
    experts: z.number().int().min(1).default(8).describe('MoE: experts per layer.'),
    topK: z.number().int().min(1).default(2).describe('MoE: experts each token is routed to.'),
    auxLossCoef: z.number().min(0).default(0.01).describe('MoE: load-balancing auxiliary loss weight.'),
    zLossCoef: z.number().min(0).default(0.001).describe('MoE: router z-loss weight.'),
    // Fields an imported open model sets (`from` a Hugging Face folder); a fresh model may use them too.
    // Absent means Lathe's own decoder, so recipes that name none keep their identity.
    family: z
      .enum(MODEL_FAMILIES)
      .optional()
      .describe(
        'The Hugging Face architecture the model exports as, and its parameter names: llama, mistral, qwen2, qwen3 (dense) or mixtral, qwen3_moe (moe); default llama for dense, mixtral for moe.',
      ),
    headDim: z
      .number()
      .int()
      .positive()
      .optional()
      .describe('Size of each attention head; defaults to dim / heads (imported models may differ).'),
    vocabSize: z
      .number()
      .int()
      .positive()
      .optional()
      .describe(
        "Embedding rows when there are more than the tokenizer's ids (an imported model's padded vocabulary); default the tokenizer's size.",
      ),
    attentionBias: z
      .enum(['qkv', 'all'])
      .optional()
      .describe('Biases on the q, k and v projections (qkv, as Qwen2), or on q, k, v and o (all); default none.'),
    qkNorm: z.boolean().optional().describe('RMSNorm over each head of q and k before RoPE (Qwen3); default off.'),
    ropeScaling: RopeScalingSchema.optional().describe('RoPE frequency scaling for long contexts; default none.'),
    slidingWindow: z
      .number()
      .int()
      .positive()
      .optional()
      .describe(
        'Sliding-window attention: each position sees itself and the N - 1 before it (Mistral), in training and decoding; default the whole context.',
      ),
    windowLayers: z
      .array(z.number().int().min(0))
      .optional()
      .describe('The layers slidingWindow applies to (Qwen2 layer_types); default every layer.'),
    normTopK: z
      .boolean()
      .optional()
      .describe(
        "MoE: renormalise each token's top-k router probabilities to sum to 1 (Mixtral; Qwen3-MoE's norm_topk_prob); default true.",
      ),
    denseLayers: z
      .array(z.number().int().min(0))
      .optional()
      .describe(
        "MoE: layers with one dense SwiGLU MLP instead of experts (Qwen3-MoE's mlp_only_layers and decoder_sparse_step); default none.",
      ),
    denseFfnDim: z
      .number()
      .int()
      .positive()
      .optional()
      .describe('MoE: hidden size of the denseLayers MLPs; default ffnDim.'),
  })
  .describe(
    "Model architecture. A fresh model must fit: its training state (16 bytes a parameter: fp32 weights, gradients and AdamW's two moments) within this machine's memory, or LATHE_MAX_MODEL_GIB GiB when set, and each tensor within 2^32 values.",
  );

/** The projections LoRA can adapt, by PEFT's `target_modules` names, per architecture. */
export const LORA_TARGETS = {
  dense: ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'],
  moe: ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'w1', 'w2', 'w3'],
} as const;

/** LoRA (PEFT's): low-rank adapters train on a frozen model; QLoRA holds that model quantized. */
export const LoraSchema = z
  .strictObject({
    rank: z.number().int().min(1).max(1024).default(8).describe('Rank r of each adapter: A is r x in, B is out x r.'),
    alpha: z
      .number()
      .positive()
      .default(16)
      .describe('Scale of the update: the adapted weight is W + (alpha / rank) · B A (PEFT lora_alpha).'),
    dropout: z
      .number()
      .min(0)
      .lt(1)
      .default(0)
      .describe("Dropout on the adapters' input while training (PEFT lora_dropout)."),
    targets: z
      .array(z.enum([...new Set([...LORA_TARGETS.dense, ...LORA_TARGETS.moe])]))
      .min(1, { error: 'add at least one projection, e.g. ["q_proj", "v_proj"]' })
      .default(['q_proj', 'v_proj'])
      .describe(
        'Projections to adapt in every block (PEFT target_modules): q_proj, k_proj, v_proj, o_proj, and gate_proj, up_proj, down_proj (dense) or w1, w2, w3 (MoE experts).',
      ),
    quantize: z
      .enum(['none', 'int8', 'nf4'])
      .default('none')
      .describe(
        "QLoRA: hold the frozen model's projections quantized: int8 per row (both engines), or nf4 (the torch engine on CUDA, with bitsandbytes).",
      ),
  })
  .describe(
    'Train LoRA adapters instead of the whole model: the starting model stays frozen, only the adapters and their optimizer state train and are checkpointed; `lathe export --format peft` writes them for PEFT.',
  );

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
    checkpointActivations: z
      .boolean()
      .optional()
      .describe(
        'torch engine: recompute each block in the backward pass instead of keeping its activations (less memory).',
      ),
    lora: LoraSchema.optional(),
    fimRate: z
      .number()
      .min(0)
      .max(1)
      .default(0)
      .describe('Share of sequences turned into fill-in-the-middle examples.'),
    logEvery: z.number().int().positive().default(1).describe('Write metrics every N steps.'),
    checkpointEvery: z.number().int().min(0).default(100).describe('Checkpoint every N steps (0: only at the end).'),
  })
  .describe('Pre-training hyper-parameters.');

export const EvalSchema = z
  .strictObject({
    every: z.number().int().min(0).default(50).describe('Evaluate held-out loss every N steps (0: only at the end).'),
    batches: z.number().int().positive().default(4).describe('Held-out batches per evaluation.'),
    onStart: z
      .boolean()
      .optional()
      .describe(
        "Also evaluate the starting model before the first step (a step-0 line in metrics.jsonl): with `from`, the base model's held-out loss, the baseline of continued pre-training. Default off.",
      ),
    ...evalSuiteFields,
  })
  .describe('Evaluation during training.');

export const BackendSchema = z.enum(['cpu', 'wasm', 'webgpu', 'auto']);

const nameField = z
  .string()
  .min(1)
  .optional()
  .describe('A name for humans; not part of the run identity beyond the lock.');
const seedField = z
  .number()
  .int()
  .min(0)
  .max(2 ** 32 - 1)
  .default(1337)
  .describe('Seed for init, data order and sampling.');
const backendField = BackendSchema.default('cpu').describe(
  'tfjs backend: cpu, wasm, webgpu, or auto (best available, said aloud).',
);
/** Where a torch run's ranks go: GPUs (or CPU processes) per node, nodes, and how the model spreads. */
export const ResourcesSchema = z
  .strictObject({
    gpus: z
      .number()
      .int()
      .min(1)
      .default(1)
      .describe('Ranks per node: one per GPU on cuda; processes on cpu (gloo). More than 1 needs the torch engine.'),
    nodes: z
      .number()
      .int()
      .min(1)
      .default(1)
      .describe('Machines (Slurm nodes, Kubernetes pods), each running `gpus` ranks.'),
    parallel: z
      .enum(['ddp', 'fsdp'])
      .default('ddp')
      .describe(
        'ddp replicates the model on every rank; fsdp (FSDP2) shards parameters, gradients and optimizer state.',
      ),
    timeoutSeconds: z
      .number()
      .positive()
      .default(600)
      .describe('A collective or reply that waits longer fails the run (a hung rank) instead of blocking it.'),
    restarts: z
      .number()
      .int()
      .min(0)
      .default(0)
      .describe('When a rank or the engine process dies, resume from the last checkpoint up to this many times.'),
  })
  .describe('Several GPUs or nodes for one run (torch.distributed). Not part of the run identity.');

/** The engine fields: optional, so a recipe that names none keeps its identity (tfjs on `backend`). */
const engineFields = {
  resources: ResourcesSchema.optional(),
  engine: z
    .enum(['tfjs', 'torch', 'auto'])
    .optional()
    .describe(
      'The engine: tfjs (in this process; the default), torch (PyTorch in a child process), or auto (the fastest here, said aloud).',
    ),
  device: z
    .enum(['cpu', 'cuda'])
    .optional()
    .describe('torch engine: cpu, or cuda (a GPU); default cpu, or cuda under auto where torch sees one.'),
  dtype: z
    .enum(['fp32', 'bf16'])
    .optional()
    .describe(
      'torch engine: fp32 (default), or bf16 autocast with fp32 master weights. tfjs on webgpu: f16 weight storage where the adapter has shader-f16 unless fp32 is named.',
    ),
};

/** Which checkpoints a run keeps: the last few, milestones, and the best by held-out loss. */
export const CheckpointsSchema = z
  .strictObject({
    keep: z.number().int().min(1).default(3).describe('Keep the last N checkpoints (older ones are deleted).'),
    keepEvery: z
      .number()
      .int()
      .min(0)
      .default(0)
      .describe('Also keep every checkpoint whose step is a multiple of this, as milestones (0: none).'),
    keepBest: z.boolean().default(true).describe('Also keep the checkpoint with the lowest held-out loss.'),
  })
  .describe(
    'Checkpoint retention, applied after each new checkpoint; default: the last 3 plus the best by eval loss. Not part of the run identity.',
  );

export const PretrainRecipeSchema = z
  .strictObject({
    name: nameField,
    stage: z.literal('pretrain').describe('The training stage.'),
    seed: seedField,
    backend: backendField,
    ...engineFields,
    from: z
      .string()
      .min(1)
      .optional()
      .describe(
        "Continued pre-training: start from this model (a Lathe run directory, or a Hugging Face folder of a Llama, Mistral, Qwen2, Qwen3, Mixtral or Qwen3-MoE model), relative to the recipe. Its architecture and tokenizer are kept (tokenizer.addTokens may add tokens); data.replay mixes in data like the base's. Unset: a fresh model.",
      ),
    data: DataSchema.describe('Training data.'),
    tokenizer: TokenizerSchema.prefault({}).describe('Tokenizer.'),
    model: ModelSchema.prefault({}).describe('Model.'),
    train: PretrainSchema.prefault({}).describe('Training hyper-parameters.'),
    eval: EvalSchema.prefault({}).describe('Evaluation.'),
    checkpoints: CheckpointsSchema.optional(),
  })
  .describe('A Lathe pre-training recipe.');

// ---- Post-training stages (TRL-style: one typed config per stage, every field documented and defaulted) ----

/** A post-training data file: structured rows (chat, preference pairs or prompts), not free text. */
export const PostSourceSchema = z
  .strictObject({
    name: z.string().min(1).optional().describe('Name shown in reports and metrics; defaults to the file name.'),
    path: z
      .union([z.string().min(1), z.array(z.string().min(1)).min(1)])
      .describe('A file, a folder (read recursively) or a glob, relative to the recipe file; or a list of them.'),
    format: z
      .enum(['auto', 'jsonl', 'csv'])
      .default('auto')
      .describe('File format; auto picks by extension (.jsonl/.json, .csv).'),
  })
  .describe('A post-training data source.');

/** Rows for a post-training stage: which files, what to do with a malformed row, what to hold out. */
export const PostDataSchema = z
  .strictObject({
    sources: z
      .array(PostSourceSchema)
      .min(1, { error: 'add at least one source, e.g. {"path": "data/chat.jsonl"}' })
      .describe('Data files; their rows are concatenated.'),
    onError: z
      .enum(['skip', 'fail'])
      .default('fail')
      .describe(
        'On a malformed row (bad JSON, a missing field, roles out of order, an empty completion): stop with file:line (fail), or skip and count it (skip).',
      ),
    valFraction: z
      .number()
      .min(0)
      .max(0.5)
      .default(0.1)
      .describe('Share of rows held out for evaluation, chosen by content hash.'),
    dedupe: z.boolean().default(true).describe('Drop rows that repeat an earlier row exactly.'),
  })
  .describe('Post-training data.');

/** Optimizer and schedule fields shared by every post-training stage; defaults differ per stage. */
function optimizerFields(d: {
  steps: number;
  batchSize: number;
  lr: number;
  minLr: number;
  warmupSteps: number;
  weightDecay: number;
  checkpointEvery: number;
}) {
  return {
    steps: z.number().int().positive().default(d.steps).describe('Optimizer steps.'),
    batchSize: z.number().int().positive().default(d.batchSize).describe('Examples per micro-batch.'),
    gradAccum: z.number().int().positive().default(1).describe('Micro-batches accumulated per optimizer step.'),
    lr: z.number().positive().default(d.lr).describe('Peak learning rate.'),
    minLr: z.number().min(0).default(d.minLr).describe('Learning rate at the end of the cosine decay.'),
    warmupSteps: z.number().int().min(0).default(d.warmupSteps).describe('Linear warmup steps.'),
    weightDecay: z
      .number()
      .min(0)
      .default(d.weightDecay)
      .describe('AdamW decoupled weight decay (not applied to norms).'),
    beta1: z.number().min(0).lt(1).default(0.9).describe('AdamW beta1.'),
    beta2: z.number().min(0).lt(1).default(0.95).describe('AdamW beta2.'),
    eps: z.number().positive().default(1e-8).describe('AdamW epsilon.'),
    gradClip: z.number().min(0).default(1).describe('Clip the global gradient norm to this; 0 disables.'),
    checkpointActivations: z
      .boolean()
      .optional()
      .describe(
        'torch engine: recompute each block in the backward pass instead of keeping its activations (less memory).',
      ),
    lora: LoraSchema.optional(),
    logEvery: z.number().int().positive().default(1).describe('Write metrics every N steps.'),
    checkpointEvery: z
      .number()
      .int()
      .min(0)
      .default(d.checkpointEvery)
      .describe('Checkpoint every N steps (0: only at the end).'),
  };
}

/** Sampling fields of the online stages (the policy generates its own completions). */
const samplingFields = {
  maxNewTokens: z
    .number()
    .int()
    .positive()
    .default(32)
    .describe('Completion length limit in tokens (TRL max_completion_length).'),
  temperature: z.number().gt(0).default(1).describe('Sampling temperature for rollouts.'),
  topK: z.number().int().min(0).default(0).describe('Sample among the k most likely tokens (0: off).'),
  topP: z.number().gt(0).lte(1).default(1).describe('Nucleus sampling mass (1: off).'),
  stop: z
    .array(z.string().min(1))
    .default([])
    .describe(
      'Strings that end a completion (cut before them), besides the end-of-sequence token; e.g. ["\\n"] for one-line answers.',
    ),
};

/**
 * A reward: a JS/TS module's export called as (completion, example) => number | Promise<number>, or a
 * grader file whose judge model scores each completion in [0, 1] (exactly one of module and grader).
 */
export const RewardSchema = z
  .strictObject({
    module: z
      .string()
      .min(1)
      .optional()
      .describe('The module file (.js, .mjs, .cjs, .ts, .mts), relative to the recipe file.'),
    grader: z
      .string()
      .min(1)
      .optional()
      .describe(
        'Instead of a module: a grader file (a judge model and its rubric; see lathe eval graders), relative to the recipe file. The reward is its score in [0, 1]; an answer with no score is counted in reward_errors and skipped.',
      ),
    export: z
      .string()
      .min(1)
      .default('default')
      .describe(
        'The exported function: (completion: string, example: row) => number | Promise<number>; example is the whole prompt row.',
      ),
    timeoutMs: z
      .number()
      .int()
      .positive()
      .default(5000)
      .describe('A call that takes longer is abandoned (its process is restarted) and counted in reward_errors.'),
    loadTimeoutMs: z
      .number()
      .int()
      .positive()
      .default(30_000)
      .describe('Loading the module (its top level) must finish within this; else the run stops before training.'),
    memoryMb: z
      .number()
      .int()
      .min(64)
      .default(1024)
      .describe("Memory limit of the module's process (MB); a process past it is killed and the stage stops."),
    network: z
      .boolean()
      .default(false)
      .describe('On a worker: ask for network access for the module (granted only if the worker allows it too).'),
    onError: z
      .enum(['skip', 'fail'])
      .default('skip')
      .describe(
        'When a call throws, times out or returns a non-finite number: skip that completion and count it (skip), or stop the run with a checkpoint (fail).',
      ),
    maxErrorRate: z
      .number()
      .min(0)
      .max(1)
      .default(0.5)
      .describe(
        "With onError skip: stop the run (with a checkpoint) when more than this share of a step's completions fail.",
      ),
  })
  .describe('A reward function.');

const fromField = z
  .string()
  .min(1)
  .optional()
  .describe(
    'Start from this model: a Lathe run directory (its latest checkpoint; a pipeline run: its last stage) or a Hugging Face folder (Llama, Mistral, Qwen2, Qwen3, Mixtral, Qwen3-MoE), relative to the recipe. The model and tokenizer then come from it. Unset: a fresh model (model and tokenizer sections apply). In a pipeline, stages after the first start from the previous stage.',
  );

/** Evaluation during a post-training stage. */
export const PostEvalSchema = z
  .strictObject({
    every: z
      .number()
      .int()
      .min(0)
      .default(50)
      .describe('Evaluate on held-out rows every N steps (0: only at the end).'),
    batches: z
      .number()
      .int()
      .positive()
      .default(4)
      .describe('Held-out micro-batches (of train.batchSize rows or prompts) per evaluation.'),
    onStart: z
      .boolean()
      .default(false)
      .describe(
        'Also evaluate the starting model before the first step: a step-0 line in metrics.jsonl, the baseline of the curves.',
      ),
    ...evalSuiteFields,
  })
  .describe('Evaluation during post-training.');

function postRecipeFields() {
  return {
    name: nameField,
    seed: seedField,
    backend: backendField,
    ...engineFields,
    from: fromField,
    tokenizer: TokenizerSchema.prefault({}).describe('Tokenizer, when not starting `from` a model.'),
    model: ModelSchema.prefault({}).describe(
      "Model, when not starting `from` a model (otherwise the base model's architecture is used).",
    ),
    checkpoints: CheckpointsSchema.optional(),
  };
}

export const SftTrainSchema = z
  .strictObject({
    ...optimizerFields({
      steps: 100,
      batchSize: 8,
      lr: 1e-3,
      minLr: 1e-4,
      warmupSteps: 10,
      weightDecay: 0,
      checkpointEvery: 50,
    }),
    packing: z
      .boolean()
      .default(true)
      .describe(
        'Pack several conversations into each context window (whole conversations, never split); false: one per row, padded.',
      ),
    assistantOnly: z
      .boolean()
      .default(true)
      .describe('Compute the loss on assistant tokens only (TRL assistant_only_loss); false trains on every token.'),
  })
  .describe('SFT hyper-parameters.');

export const SftRecipeSchema = z
  .strictObject({
    ...postRecipeFields(),
    stage: z.literal('sft').describe('Supervised fine-tuning on chat data.'),
    data: PostDataSchema.describe(
      'Chat JSONL: {"messages": [{"role": "system"|"user"|"assistant"|"tool", "content", "weight"?}], "tools"?: [...]} per line (Mistral / OpenAI format; weight 0 excludes an assistant message from the loss; an assistant message may carry "tool_calls", each answered by a "tool" message with its "tool_call_id"), or {"prompt", "completion"} strings.',
    ),
    train: SftTrainSchema.prefault({}).describe('Training hyper-parameters.'),
    eval: PostEvalSchema.prefault({}).describe('Held-out assistant-token loss every N steps.'),
  })
  .describe('A Lathe SFT recipe.');

export const DpoTrainSchema = z
  .strictObject({
    ...optimizerFields({
      steps: 100,
      batchSize: 8,
      lr: 5e-4,
      minLr: 5e-5,
      warmupSteps: 10,
      weightDecay: 0,
      checkpointEvery: 50,
    }),
    beta: z
      .number()
      .positive()
      .default(0.1)
      .describe('Strength of the implicit KL constraint to the reference (DPO beta).'),
    labelSmoothing: z
      .number()
      .min(0)
      .lt(0.5)
      .default(0)
      .describe('Assumed share of flipped labels (conservative DPO); 0 is plain sigmoid DPO.'),
  })
  .describe('DPO hyper-parameters.');

export const DpoRecipeSchema = z
  .strictObject({
    ...postRecipeFields(),
    stage: z.literal('dpo').describe('Direct preference optimisation on preference pairs.'),
    data: PostDataSchema.describe(
      'JSONL pairs {"prompt", "chosen", "rejected"}; each a string, or a list of chat messages (TRL conversational format).',
    ),
    train: DpoTrainSchema.prefault({}).describe('Training hyper-parameters.'),
    eval: PostEvalSchema.prefault({}).describe('Held-out preference accuracy every N steps.'),
  })
  .describe('A Lathe DPO recipe.');

export const OnlineDpoTrainSchema = z
  .strictObject({
    ...optimizerFields({
      steps: 50,
      batchSize: 4,
      lr: 5e-4,
      minLr: 5e-5,
      warmupSteps: 5,
      weightDecay: 0,
      checkpointEvery: 25,
    }),
    samplesPerPrompt: z
      .number()
      .int()
      .min(2)
      .default(4)
      .describe("Completions the policy samples per prompt each step (k); the judge's best and worst form the pair."),
    beta: z.number().positive().default(0.1).describe('DPO beta.'),
    ...samplingFields,
  })
  .describe('Online DPO hyper-parameters; batchSize is prompts per micro-batch.');

export const JudgeSchema = z
  .strictObject({
    reward: RewardSchema.optional().describe('Rank completions by this reward function.'),
    model: z
      .string()
      .min(1)
      .optional()
      .describe(
        "Rank completions by a reward-model run (a Lathe run directory, relative to the recipe): score = that model's mean log-probability per completion token, given the prompt.",
      ),
  })
  .describe('The judge: a reward function or a reward-model run (exactly one).');

export const OnlineDpoRecipeSchema = z
  .strictObject({
    ...postRecipeFields(),
    stage: z
      .literal('online-dpo')
      .describe('Online DPO: the policy samples, a judge ranks, best vs worst is a DPO pair.'),
    data: PostDataSchema.describe('JSONL prompts: {"prompt": string | messages, ...any other fields the judge reads}.'),
    judge: JudgeSchema.describe('How completions are ranked.'),
    train: OnlineDpoTrainSchema.prefault({}).describe('Training hyper-parameters.'),
    eval: PostEvalSchema.prefault({}).describe('Held-out greedy judged reward every N steps.'),
  })
  .describe('A Lathe online DPO recipe.');

export const GrpoTrainSchema = z
  .strictObject({
    ...optimizerFields({
      steps: 50,
      batchSize: 4,
      lr: 5e-4,
      minLr: 5e-5,
      warmupSteps: 5,
      weightDecay: 0,
      checkpointEvery: 25,
    }),
    groupSize: z
      .number()
      .int()
      .min(2)
      .default(8)
      .describe('Completions sampled per prompt; advantages are normalised within the group (TRL num_generations).'),
    innerSteps: z
      .number()
      .int()
      .min(1)
      .default(2)
      .describe(
        'Optimizer updates per rollout batch (TRL num_iterations); above 1 the ratio moves off 1 and the clip matters.',
      ),
    clipEpsilon: z
      .number()
      .gt(0)
      .lt(1)
      .default(0.2)
      .describe('PPO clip range: the ratio is clipped to [1 - eps, 1 + eps].'),
    beta: z
      .number()
      .min(0)
      .default(0.04)
      .describe(
        'Weight of the KL penalty to the reference (k3 estimator); 0 disables it, and the reference is then not loaded (the kl metric reads 0).',
      ),
    scaleRewards: z
      .boolean()
      .default(true)
      .describe('Divide advantages by the group standard deviation (false: centre only, as in Dr. GRPO).'),
    ...samplingFields,
  })
  .describe('GRPO hyper-parameters; batchSize is prompts per micro-batch.');

export const GrpoRecipeSchema = z
  .strictObject({
    ...postRecipeFields(),
    stage: z.literal('grpo').describe('Group relative policy optimisation with verifiable rewards.'),
    data: PostDataSchema.describe(
      'JSONL prompts: {"prompt": string | messages, ...any other fields the reward reads}.',
    ),
    reward: RewardSchema.describe('The reward function.'),
    train: GrpoTrainSchema.prefault({}).describe('Training hyper-parameters.'),
    eval: PostEvalSchema.prefault({}).describe('Held-out greedy reward every N steps.'),
  })
  .describe('A Lathe GRPO recipe.');

/** The recipe of one training stage. */
export const StageRecipeSchema = z.discriminatedUnion('stage', [
  PretrainRecipeSchema,
  SftRecipeSchema,
  DpoRecipeSchema,
  OnlineDpoRecipeSchema,
  GrpoRecipeSchema,
]);

export const PipelineRecipeSchema = z
  .strictObject({
    name: nameField,
    stage: z
      .literal('pipeline')
      .describe("Several stages in order; each starts from the previous stage's final checkpoint."),
    backend: BackendSchema.optional().describe("tfjs backend for every stage; defaults to the first stage's."),
    ...engineFields,
    from: fromField.describe(
      'Start the first stage from this model (a run directory or an HF folder), as its own `from` would.',
    ),
    stages: z
      .array(StageRecipeSchema)
      .min(1, { error: 'add at least one stage' })
      .describe('The stage recipes, run in order.'),
  })
  .describe('A Lathe pipeline recipe.');

/** The recipe schema, one branch per stage, and pipelines. */
export const RecipeSchema = z.discriminatedUnion('stage', [
  PretrainRecipeSchema,
  SftRecipeSchema,
  DpoRecipeSchema,
  OnlineDpoRecipeSchema,
  GrpoRecipeSchema,
  PipelineRecipeSchema,
]);

/** The stages a recipe (or a pipeline step) can train. */
export const STAGES = ['pretrain', 'sft', 'dpo', 'online-dpo', 'grpo'] as const;

export type SourceConfig = z.output<typeof SourceSchema>;
export type CleanConfig = z.output<typeof CleanSchema>;
export type PiiConfig = z.output<typeof PiiSchema>;
export type DataConfig = z.output<typeof DataSchema>;
export type TokenizerConfig = z.output<typeof TokenizerSchema>;
export type ModelConfig = z.output<typeof ModelSchema>;
export type PretrainConfig = z.output<typeof PretrainSchema>;
export type LoraRecipeConfig = z.output<typeof LoraSchema>;
export type EvalConfig = z.output<typeof EvalSchema>;
export type CheckpointsConfig = z.output<typeof CheckpointsSchema>;
export type Resources = z.output<typeof ResourcesSchema>;
export type Backend = z.output<typeof BackendSchema>;
export type PostSourceConfig = z.output<typeof PostSourceSchema>;
export type PostDataConfig = z.output<typeof PostDataSchema>;
export type RewardConfig = z.output<typeof RewardSchema>;
export type SftConfig = z.output<typeof SftTrainSchema>;
export type DpoConfig = z.output<typeof DpoTrainSchema>;
export type OnlineDpoConfig = z.output<typeof OnlineDpoTrainSchema>;
export type GrpoConfig = z.output<typeof GrpoTrainSchema>;
export type PretrainRecipe = z.output<typeof PretrainRecipeSchema>;
export type SftRecipe = z.output<typeof SftRecipeSchema>;
export type DpoRecipe = z.output<typeof DpoRecipeSchema>;
export type OnlineDpoRecipe = z.output<typeof OnlineDpoRecipeSchema>;
export type GrpoRecipe = z.output<typeof GrpoRecipeSchema>;
/** A post-training stage recipe, resolved. */
export type PostRecipe = SftRecipe | DpoRecipe | OnlineDpoRecipe | GrpoRecipe;
/** A stage recipe with every default filled in (what a run directory's lock holds). */
export type ResolvedRecipe = z.output<typeof StageRecipeSchema>;
/** A stage recipe as a user writes it: everything with a default is optional. */
export type RecipeInput = z.input<typeof StageRecipeSchema>;
/** A pipeline recipe, resolved; `train.steps` is the sum of its stages' steps (for progress). */
export type ResolvedPipeline = z.output<typeof PipelineRecipeSchema> & { train: { steps: number } };
/** A pipeline recipe as written. */
export type PipelineInput = z.input<typeof PipelineRecipeSchema>;
/** Any recipe file's content, resolved. */
export type AnyResolvedRecipe = ResolvedRecipe | ResolvedPipeline;
export type Stage = ResolvedRecipe['stage'];

/** JSON Schema (draft 2020-12) of a recipe file, as users write it. */
export function recipeJsonSchema(): object {
  return z.toJSONSchema(RecipeSchema, { io: 'input', unrepresentable: 'any' });
}
