// "New recipe from template…": notebooks with a filled-in starter recipe for the user's data. The
// recipes come from the presets that `lathe init` reads too (src/recipe/starters.ts, which webpack
// bundles from the library's build: set-up builds the library first).
import type { RecipeInput, Stage } from '../../dist/src/recipe/schema.js';
import { STARTER_STAGES, starterRecipe as starter } from '../../dist/src/recipe/starters.js';

export type { Stage };
/** The stages with a template, in menu order. */
export const STAGES: readonly Stage[] = STARTER_STAGES;

/** The stages' names in the dialog. */
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
/** The reward a grpo or online-dpo template starts with (the Tally example's). */
export const DEFAULT_REWARD = 'examples/tally/reward.ts#programReward';

/** What the dialog asked for. */
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
  /** "From an open model": LoRA adapters on the `from` model (a Hugging Face folder), exported for PEFT. */
  lora?: boolean;
}

/** The post-training stages offered "from an open model" (LoRA on a Hugging Face folder), in menu order. */
export const OPEN_MODEL_STAGES: readonly Stage[] = STAGES.filter((s) => s !== 'pretrain');

/** The launcher's label of a stage's "from an open model" template. */
export function openModelLabel(stage: Stage): string {
  return `${STAGE_LABELS[stage].replace(/ \(.*\)$/, '')} from an open model (LoRA)`;
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
export function starterRecipe(t: TemplateInput): RecipeInput {
  const rel = (p: string) => relativePath(t.notebookDir, p);
  const post = t.stage !== 'pretrain';
  return starter({
    stage: t.stage,
    sources: t.data.map((p) => ({ path: rel(p) })),
    ...(post && t.from ? { from: rel(t.from) } : {}),
    // As `lathe init --reward` does; the base's context is not read here, so rollouts get the preset's length.
    ...(post ? { reward: rewardOf(t.reward ?? DEFAULT_REWARD, t.notebookDir) } : {}),
    ...(post && t.from && t.lora ? { lora: true } : {}),
  });
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
  const open = Boolean(t.lora && t.from);
  const title = open ? openModelLabel(t.stage) : `${STAGE_LABELS[t.stage]} on your data`;
  const about = open
    ? `LoRA adapters (rank 16 on the attention projections) train on \`${t.from}\`, which stays frozen; checkpoints hold only the adapters. Edit the fields, run the cells; the chart updates live.`
    : 'A starter recipe sized for a CPU (a few minutes). Edit the fields, run the cells; the chart updates live.';
  const cells: Cell[] = [
    markdown('lathe-0', `# ${title}\n\n${about}\nData: ${t.data.map((d) => '`' + d + '`').join(', ')}.`),
    code(
      'lathe-1',
      `import { recipe, runs${open ? ', exporter' : ''} } from 'lathe';\n\n// Tests set LATHE_STEPS to train a few steps; unset, the recipe's own schedule runs.\nconst steps = process.env.LATHE_STEPS ? Number(process.env.LATHE_STEPS) : undefined;`,
    ),
    code('lathe-2', `const r = recipe.${FACTORY[t.stage]}(${body});\nr`),
    markdown(
      'lathe-3',
      'Train in this kernel. The stop button stops at the next step boundary with a checkpoint; `await run.resume()` continues.',
    ),
    code('lathe-4', 'const run = await r.run({ steps });\nrun.summary'),
  ];
  if (open)
    cells.push(
      markdown(
        'lathe-5',
        'Export the adapter for PEFT (`PeftModel.from_pretrained` on the base folder), and the base with the adapter merged in as a Hugging Face folder.',
      ),
      code(
        'lathe-6',
        'const adapter = await exporter.exportPeft(run.dir.path, `${run.dir.path}-peft`);\nconst merged = await exporter.exportPeft(run.dir.path, `${run.dir.path}-merged`, { merge: true });\n({ adapter: adapter.dir, base: adapter.base.hint, merged: merged.dir })',
      ),
    );
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
