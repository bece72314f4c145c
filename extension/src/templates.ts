// "New recipe from template…": notebooks with a filled-in starter recipe for the user's data. The
// recipe objects match `lathe init` (a root test checks them against the core's starterRecipe).

export const STAGES = ['pretrain', 'sft', 'dpo', 'online-dpo', 'grpo'] as const;
export type Stage = (typeof STAGES)[number];

export const STAGE_LABELS: Record<Stage, string> = {
  pretrain: 'Pre-training',
  sft: 'SFT (supervised fine-tuning)',
  dpo: 'DPO (preference pairs)',
  'online-dpo': 'Online DPO',
  grpo: 'GRPO (verifiable rewards)',
};

/** What the data file holds, per stage (shown in the dialog). */
export const DATA_HINTS: Record<Stage, string> = {
  pretrain: 'text files, JSONL or CSV',
  sft: 'chat JSONL (messages)',
  dpo: 'preference pairs JSONL (prompt, chosen, rejected)',
  'online-dpo': 'prompts JSONL',
  grpo: 'prompts JSONL',
};

/** Defaults that work on a fresh clone (the bundled Tally example), relative to the server root. */
export const DEFAULT_DATA: Record<Stage, string> = {
  pretrain: 'examples/data/tally/train.jsonl',
  sft: 'examples/data/tally-post/sft.jsonl',
  dpo: 'examples/data/tally-post/pairs.jsonl',
  'online-dpo': 'examples/data/tally-post/prompts.jsonl',
  grpo: 'examples/data/tally-post/prompts.jsonl',
};
export const DEFAULT_REWARD = 'examples/tally/reward.ts#programReward';

export interface TemplateInput {
  stage: Stage;
  /** Data paths relative to the server root. */
  data: string[];
  /** Folder of the new notebook, relative to the server root ('' is the root). */
  notebookDir: string;
  /** Base model (run dir or HF folder) for post-training stages; omitted trains a fresh small model. */
  from?: string;
  /** Reward module `file#export` (grpo, online-dpo). */
  reward?: string;
}

/** POSIX relative path from folder `from` to `to`, both relative to one root. */
export function relativePath(from: string, to: string): string {
  const a = from.split('/').filter(Boolean);
  const b = to.split('/').filter(Boolean);
  let i = 0;
  while (i < a.length && i < b.length && a[i] === b[i]) i++;
  const up = a.slice(i).map(() => '..');
  const rel = [...up, ...b.slice(i)].join('/');
  return rel || '.';
}

function rewardOf(spec: string, dir: string): { module: string; export?: string } {
  const [file = '', name] = spec.split('#');
  const module = relativePath(dir, file);
  return name ? { module, export: name } : { module };
}

/** The starter recipe for a stage, as `lathe init` writes it (paths relative to the notebook). */
export function starterRecipe(t: TemplateInput): Record<string, unknown> {
  const rel = (p: string) => relativePath(t.notebookDir, p);
  if (t.stage === 'pretrain')
    return {
      name: 'starter',
      stage: 'pretrain',
      seed: 1337,
      backend: 'auto',
      data: {
        sources: t.data.map((p) => ({ path: rel(p) })),
        clean: { dedupe: 'exact' },
        onError: 'skip',
        valFraction: 0.05,
      },
      tokenizer: { vocabSize: 1024 },
      model: { arch: 'dense', dim: 128, layers: 2, heads: 4, context: 128 },
      train: { steps: 300, batchSize: 16, lr: 3e-3, minLr: 3e-4, warmupSteps: 30, checkpointEvery: 100 },
      eval: { every: 50, batches: 4 },
    };
  const common = {
    name: `starter-${t.stage}`,
    seed: 1337,
    backend: 'auto',
    ...(t.from
      ? { from: rel(t.from) }
      : { tokenizer: { vocabSize: 1024 }, model: { arch: 'dense', dim: 128, layers: 2, heads: 4, context: 128 } }),
    data: { sources: t.data.map((p) => ({ path: rel(p) })), onError: 'skip', valFraction: 0.1 },
  };
  const reward = rewardOf(t.reward ?? DEFAULT_REWARD, t.notebookDir);
  // As init does without reading the base's context: a quarter of 128 tokens for the completion.
  const maxNewTokens = 32;
  switch (t.stage) {
    case 'sft':
      return {
        ...common,
        stage: 'sft',
        train: { steps: 100, batchSize: 8, lr: 1e-3, warmupSteps: 10, checkpointEvery: 50 },
        eval: { every: 25, batches: 4 },
      };
    case 'dpo':
      return {
        ...common,
        stage: 'dpo',
        train: { steps: 100, batchSize: 8, lr: 5e-4, beta: 0.1, warmupSteps: 10, checkpointEvery: 50 },
        eval: { every: 25, batches: 4 },
      };
    case 'online-dpo':
      return {
        ...common,
        stage: 'online-dpo',
        judge: { reward },
        train: {
          steps: 40,
          batchSize: 4,
          samplesPerPrompt: 4,
          lr: 5e-4,
          warmupSteps: 4,
          maxNewTokens,
          checkpointEvery: 20,
        },
        eval: { every: 10, batches: 2 },
      };
    case 'grpo':
      return {
        ...common,
        stage: 'grpo',
        reward,
        train: { steps: 40, batchSize: 4, groupSize: 8, lr: 5e-4, warmupSteps: 4, maxNewTokens, checkpointEvery: 20 },
        eval: { every: 10, batches: 2 },
      };
  }
}

const FACTORY: Record<Stage, string> = {
  pretrain: 'pretrain',
  sft: 'sft',
  dpo: 'dpo',
  'online-dpo': 'onlineDpo',
  grpo: 'grpo',
};

type Cell = {
  cell_type: 'markdown' | 'code';
  id: string;
  metadata: Record<string, unknown>;
  source: string;
  outputs?: unknown[];
  execution_count?: null;
};

function code(id: string, source: string): Cell {
  return { cell_type: 'code', id, metadata: {}, source, outputs: [], execution_count: null };
}

function markdown(id: string, source: string): Cell {
  return { cell_type: 'markdown', id, metadata: {}, source };
}

/** A notebook (nbformat 4) for the `lathe` kernel: the recipe card, a run with its live chart, samples. */
export function recipeNotebook(t: TemplateInput): Record<string, unknown> {
  const r = starterRecipe(t);
  const { stage: _stage, ...fields } = r;
  void _stage;
  const body = JSON.stringify(fields, null, 2).replace(/"([A-Za-z_$][\w$]*)":/g, '$1:');
  const cells: Cell[] = [
    markdown(
      'lathe-0',
      `# ${STAGE_LABELS[t.stage]} on your data\n\nA starter recipe sized for a CPU (a few minutes). Edit the fields, run the cells; the chart updates live.\nData: ${t.data.map((d) => '`' + d + '`').join(', ')}.`,
    ),
    code(
      'lathe-1',
      `import { recipe, runs } from 'lathe';\n\n// Tests set LATHE_STEPS to train a few steps; unset, the recipe's own schedule runs.\nconst steps = process.env.LATHE_STEPS ? Number(process.env.LATHE_STEPS) : undefined;`,
    ),
    code('lathe-2', `const r = recipe.${FACTORY[t.stage]}(${body});\nr`),
    markdown(
      'lathe-3',
      'Train in this kernel. The stop button stops at the next step boundary with a checkpoint; `await run.resume()` continues.',
    ),
    code('lathe-4', 'const run = await r.run({ steps });\nrun.summary'),
  ];
  return {
    cells,
    metadata: {
      kernelspec: { name: 'lathe', display_name: 'Lathe (TypeScript)', language: 'typescript' },
      language_info: { name: 'typescript', file_extension: '.ts', mimetype: 'text/x.typescript' },
    },
    nbformat: 4,
    nbformat_minor: 5,
  };
}

/** A blank Lathe notebook. */
export function blankNotebook(): Record<string, unknown> {
  return {
    cells: [code('lathe-0', "import { recipe, runs, evaluate } from 'lathe';\n")],
    metadata: { kernelspec: { name: 'lathe', display_name: 'Lathe (TypeScript)', language: 'typescript' } },
    nbformat: 4,
    nbformat_minor: 5,
  };
}
