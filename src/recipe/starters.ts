// The starter recipes: one preset per stage, sized to train on a CPU in a few minutes. Read by
// `lathe init` (src/cli/init.ts) and by the JupyterLab extension's "New recipe from template…"
// (extension/src/templates.ts), so the two cannot drift.
//
// The extension bundles this file for the browser (it imports the built dist/src/recipe/starters.js):
// keep it plain data and pure functions, with type-only imports, so no Node code follows it there.
import type { RecipeInput, Stage } from './schema.js';

/** The fresh model a starter trains when it has no `from`: a tiny dense decoder and its tokenizer. */
export const STARTER_MODEL = {
  tokenizer: { vocabSize: 1024 },
  model: { arch: 'dense', dim: 128, layers: 2, heads: 4, context: 128 },
} as const;

/** Each stage's data handling, schedule and evaluation (online-dpo's and grpo's `maxNewTokens` is a cap). */
export const STARTER_PRESETS = {
  pretrain: {
    data: { clean: { dedupe: 'exact' }, onError: 'skip', valFraction: 0.05 },
    train: { steps: 300, batchSize: 16, lr: 3e-3, minLr: 3e-4, warmupSteps: 30, checkpointEvery: 100 },
    eval: { every: 50, batches: 4 },
  },
  sft: {
    data: { onError: 'skip', valFraction: 0.1 },
    train: { steps: 100, batchSize: 8, lr: 1e-3, warmupSteps: 10, checkpointEvery: 50 },
    eval: { every: 25, batches: 4 },
  },
  dpo: {
    data: { onError: 'skip', valFraction: 0.1 },
    train: { steps: 100, batchSize: 8, lr: 5e-4, beta: 0.1, warmupSteps: 10, checkpointEvery: 50 },
    eval: { every: 25, batches: 4 },
  },
  'online-dpo': {
    data: { onError: 'skip', valFraction: 0.1 },
    train: {
      steps: 40,
      batchSize: 4,
      samplesPerPrompt: 4,
      lr: 5e-4,
      warmupSteps: 4,
      maxNewTokens: 32,
      checkpointEvery: 20,
    },
    eval: { every: 10, batches: 2 },
  },
  grpo: {
    data: { onError: 'skip', valFraction: 0.1 },
    train: { steps: 40, batchSize: 4, groupSize: 8, lr: 5e-4, warmupSteps: 4, maxNewTokens: 32, checkpointEvery: 20 },
    eval: { every: 10, batches: 2 },
  },
} as const satisfies Record<Stage, object>;

/**
 * What a starter trains when it adapts a model with LoRA (`lathe init --lora`, the extension's "from an
 * open model" templates): rank 16 adapters on the attention projections, at twice the preset's lr.
 */
export const STARTER_LORA = { rank: 16, alpha: 32, targets: ['q_proj', 'k_proj', 'v_proj', 'o_proj'] } as const;

/** Continued pre-training moves a trained model, not a fresh one: a tenth of the fresh learning rate. */
export const CONTINUED_PRETRAIN_LR = { lr: 3e-4, minLr: 3e-5 } as const;

/** The stages with a starter, in menu order (every stage has one: the record above is keyed by Stage). */
export const STARTER_STAGES = Object.keys(STARTER_PRESETS) as Stage[];

/** What a starter is filled in with; paths are already as the recipe should hold them. */
export interface StarterInput {
  stage: Stage;
  /** Data sources (pretrain may name a JSONL field or CSV column per source). */
  sources: { path: string; field?: string }[];
  /** Base model (post-training, continued pre-training): the recipe's `from`. Without it the starter trains STARTER_MODEL. */
  from?: string;
  /** Continued pre-training: replay data like the base's (data.replay, at its default share). */
  replay?: string | string[];
  /** Reward module: grpo's reward, or online-dpo's judge. */
  reward?: { module: string; export?: string };
  /** Reward-model run that judges online-dpo, instead of `reward`. */
  judgeModel?: string;
  /** Context length of the `from` model, when known: rollouts keep room for the prompt. */
  baseContext?: number;
  /** Train LoRA adapters (STARTER_LORA) on the `from` model instead of all its weights. */
  lora?: boolean;
}

/** A preset's train section, with LoRA adapters at twice the learning rate when asked. */
function trainOf<T extends { lr: number }>(train: T, lora: boolean | undefined) {
  if (!lora) return { ...train };
  return { ...train, lr: 2 * train.lr, lora: { ...STARTER_LORA, targets: [...STARTER_LORA.targets] } };
}

/** A stage's starter recipe. Throws a plain Error on input that the callers check first (a missing reward). */
export function starterRecipe(input: StarterInput): RecipeInput {
  const { stage, sources } = input;
  const common = { seed: 1337, backend: 'auto' } as const;
  // The key order is the one `lathe init` has always written.
  if (stage === 'pretrain') {
    const p = STARTER_PRESETS.pretrain;
    if (input.from)
      // Continued pre-training: the base's model and tokenizer, a gentler learning rate.
      return {
        name: 'starter',
        stage,
        ...common,
        from: input.from,
        data: { sources, ...(input.replay ? { replay: { path: input.replay } } : {}), ...p.data },
        train: trainOf({ ...p.train, ...CONTINUED_PRETRAIN_LR }, input.lora),
        eval: { ...p.eval },
      };
    return {
      name: 'starter',
      stage,
      ...common,
      data: { sources, ...p.data },
      ...STARTER_MODEL,
      train: { ...p.train },
      eval: { ...p.eval },
    };
  }
  const post = {
    name: `starter-${stage}`,
    ...common,
    ...(input.from ? { from: input.from } : STARTER_MODEL),
    data: { sources, ...STARTER_PRESETS[stage].data },
  };
  switch (stage) {
    case 'sft':
    case 'dpo': {
      const p = STARTER_PRESETS[stage];
      return { ...post, stage, train: trainOf(p.train, input.lora), eval: { ...p.eval } };
    }
    case 'online-dpo': {
      const p = STARTER_PRESETS[stage];
      const judge = input.judgeModel ? { model: input.judgeModel } : { reward: required(input.reward, stage) };
      const train = {
        ...trainOf(p.train, input.lora),
        maxNewTokens: rolloutLength(p.train.maxNewTokens, input.baseContext),
      };
      return { ...post, stage, judge, train, eval: { ...p.eval } };
    }
    case 'grpo': {
      const p = STARTER_PRESETS[stage];
      const train = {
        ...trainOf(p.train, input.lora),
        maxNewTokens: rolloutLength(p.train.maxNewTokens, input.baseContext),
      };
      return { ...post, stage, reward: required(input.reward, stage), train, eval: { ...p.eval } };
    }
  }
}

/** A quarter of the context (the fresh model's unless the base's is known), at least 4, at most the preset's cap. */
function rolloutLength(cap: number, context: number = STARTER_MODEL.model.context): number {
  return Math.max(4, Math.min(cap, Math.floor(context / 4)));
}

function required<T>(reward: T | undefined, stage: Stage): T {
  if (!reward) throw new Error(`starter ${stage}: needs a reward module`);
  return reward;
}
