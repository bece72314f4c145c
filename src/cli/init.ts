import type { Command } from 'commander';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { dirname, extname, join, relative, resolve } from 'node:path';
import YAML from 'yaml';
import { LatheError } from '../errors.js';
import { Recipe } from '../runs/recipe.js';
import { STAGES, type RecipeInput, type Stage } from '../recipe/schema.js';
import { starterRecipe as starter } from '../recipe/starters.js';
import { modelRunDir } from '../recipe/base.js';

/** What `lathe init` was told. */
export interface InitOptions {
  /** Data files, folders or globs. */
  data: string[];
  /** JSONL field or CSV column with the text (pretrain). */
  field?: string;
  /** Starting model: a run directory or a Hugging Face folder. */
  from?: string;
  /** Reward module, `file` or `file#export` (grpo; online-dpo's judge). */
  reward?: string;
  /** Reward-model run directory (online-dpo's judge). */
  judgeModel?: string;
  /** Train LoRA adapters on the `--from` model. */
  lora?: boolean;
  /** Continued pre-training (pretrain --from): replay data like the base's. */
  replay?: string[];
}

const rel = (baseDir: string, p: string) => relative(baseDir, resolve(p)) || '.';

/** The context length of a `--from` model (its lock's model section, or an HF config's max_position_embeddings). */
function baseContext(from: string): number | undefined {
  try {
    const dir = modelRunDir(from);
    const lockPath = join(dir, 'recipe.lock.json');
    if (existsSync(lockPath))
      return (JSON.parse(readFileSync(lockPath, 'utf8')) as { recipe: { model: { context: number } } }).recipe.model
        .context;
    const cfg = JSON.parse(readFileSync(join(from, 'config.json'), 'utf8')) as { max_position_embeddings?: number };
    return cfg.max_position_embeddings;
  } catch {
    return undefined;
  }
}

function rewardOf(spec: string, baseDir: string): { module: string; export?: string } {
  const hash = spec.lastIndexOf('#');
  const [file, name] = hash > 0 ? [spec.slice(0, hash), spec.slice(hash + 1)] : [spec, undefined];
  return name ? { module: rel(baseDir, file), export: name } : { module: rel(baseDir, file) };
}

/** A recipe that trains on a CPU in a few minutes (the stage's starter preset), for `lathe init`'s options. */
export function starterRecipe(
  stage: string,
  data: string[],
  baseDir: string,
  field?: string,
  o: Omit<InitOptions, 'data' | 'field'> = {},
): RecipeInput {
  if (!(STAGES as readonly string[]).includes(stage))
    throw new LatheError(`init: stage must be one of ${STAGES.join(', ')}; got "${stage}"`);
  if (o.replay && (stage !== 'pretrain' || !o.from))
    throw new LatheError(
      "--replay: mixes a base model's kind of data into continued pre-training; use it with init pretrain --from",
    );
  if (o.lora && !o.from) throw new LatheError('--lora: adapts a base model; pass --from <run-dir|hf-dir> too');
  if (stage === 'pretrain') {
    const sources = data.map((p) => ({ path: rel(baseDir, p), ...(field ? { field } : {}) }));
    return starter({
      stage,
      sources,
      ...(o.from ? { from: rel(baseDir, o.from) } : {}),
      ...(o.lora ? { lora: true } : {}),
      ...(o.replay
        ? { replay: o.replay.length === 1 ? rel(baseDir, o.replay[0]!) : o.replay.map((r) => rel(baseDir, r)) }
        : {}),
    });
  }
  if (field)
    throw new LatheError(`--field: ${stage} reads structured rows (chat messages, pairs or prompts), not a text field`);
  if (stage === 'online-dpo') {
    if (!o.reward && !o.judgeModel)
      throw new LatheError(
        'init online-dpo: pass --reward <module> or --judge-model <run-dir> to rank the completions',
      );
    if (o.reward && o.judgeModel) throw new LatheError('init online-dpo: pass only one of --reward and --judge-model');
  }
  if (stage === 'grpo' && !o.reward)
    throw new LatheError(
      'init grpo: pass --reward <module>[#export], the reward function (completion, example) => number',
    );
  return starter({
    stage: stage as Stage,
    sources: data.map((p) => ({ path: rel(baseDir, p) })),
    ...(o.from ? { from: rel(baseDir, o.from) } : {}),
    ...(o.reward ? { reward: rewardOf(o.reward, baseDir) } : {}),
    ...(o.judgeModel ? { judgeModel: rel(baseDir, o.judgeModel) } : {}),
    ...(o.from ? { baseContext: baseContext(o.from) } : {}),
    ...(o.lora ? { lora: true } : {}),
  });
}

/** Adds `lathe init` to the CLI. */
export function register(program: Command): void {
  program
    .command('init')
    .description('Write a runnable starter recipe for your data, sized to train on a CPU in a few minutes.')
    .argument('<stage>', `one of ${STAGES.join(', ')}`)
    .requiredOption(
      '--data <paths...>',
      'data files, folders or globs (sft: chat JSONL; dpo: pairs; online-dpo, grpo: prompts)',
    )
    .option(
      '--from <run-dir|hf-dir>',
      'start from this model: a Lathe run directory or a Hugging Face folder (Llama, Mistral, Qwen2, Qwen3, Mixtral, Qwen3-MoE); with pretrain, continued pre-training',
    )
    .option('--reward <module>', 'reward function module, file or file#export (grpo; online-dpo judge)')
    .option('--judge-model <run-dir>', 'reward-model run that judges online-dpo completions (mean log-prob)')
    .option('--lora', 'train LoRA adapters (rank 16 on q, k, v, o) on the --from model instead of all its weights')
    .option('--field <name>', 'JSONL field or CSV column with the text (pretrain)')
    .option(
      '--replay <paths...>',
      "pretrain --from: data like the base model's, mixed in (data.replay, a quarter of the sequences) to limit forgetting",
    )
    .option('--out <file>', 'recipe file to write (.json or .yaml)', 'recipe.json')
    .option('--force', 'overwrite --out if it exists')
    .action(async (stage: string, o: InitOptions & { out: string; force?: boolean }) => {
      if (!(STAGES as readonly string[]).includes(stage))
        throw new LatheError(`init: stage must be one of ${STAGES.join(', ')}; got "${stage}"`);
      const out = resolve(o.out);
      if (existsSync(out) && !o.force) throw new LatheError(`--out ${o.out}: exists; pass --force to overwrite`);
      for (const p of o.data)
        if (!/[*?[{]/.test(p) && !existsSync(p)) throw new LatheError(`--data ${p}: does not exist`);
      for (const p of o.replay ?? [])
        if (!/[*?[{]/.test(p) && !existsSync(p)) throw new LatheError(`--replay ${p}: does not exist`);
      if (o.from !== undefined) {
        if (!existsSync(o.from) || !statSync(o.from).isDirectory())
          throw new LatheError(
            `--from ${o.from}: not a directory; name a run directory or a Hugging Face model folder`,
          );
        if (!existsSync(resolve(o.from, 'recipe.lock.json')) && !existsSync(resolve(o.from, 'config.json'))) {
          throw new LatheError(
            `--from ${o.from}: neither a Lathe run directory (no recipe.lock.json) nor a Hugging Face folder (no config.json)`,
          );
        }
      }
      if (o.reward !== undefined) {
        const file = o.reward.lastIndexOf('#') > 0 ? o.reward.slice(0, o.reward.lastIndexOf('#')) : o.reward;
        if (!existsSync(file)) throw new LatheError(`--reward ${file}: does not exist`);
      }
      if (o.judgeModel !== undefined && !existsSync(resolve(o.judgeModel, 'recipe.lock.json')))
        throw new LatheError(`--judge-model ${o.judgeModel}: not a run directory`);
      const input = starterRecipe(stage, o.data, dirname(out), o.field, o);
      new Recipe(input, { baseDir: dirname(out) }); // validate before writing
      const text = /\.ya?ml$/i.test(extname(out)) ? YAML.stringify(input) : JSON.stringify(input, null, 2) + '\n';
      await writeFile(out, text);
      console.log(`wrote ${o.out}: lathe validate ${o.out} && lathe train ${o.out}`);
    });
}
