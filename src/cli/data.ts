import type { Command } from 'commander';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { formatInspect, inspectData, reportOf } from '../data/inspect.js';
import { formatPostInspect, inspectPost, trainPostTokenizer } from '../data/post.js';
import { prepareData } from '../data/prepare.js';
import type { RecipeLock } from '../recipe/lock.js';
import { loadRecipe } from '../runs/recipe.js';
import { Tokenizer } from '../tokenizer/index.js';
import { synthesize } from '../train/synth.js';
import { finiteNumber, positiveInt } from './options.js';

/** The tokenizer a post-training lock will use: its base's, the named file, or one trained on its rows. */
async function postTokenizer(lock: RecipeLock): Promise<Tokenizer> {
  if (lock.tokenizer) return Tokenizer.load(lock.tokenizer.path);
  return trainPostTokenizer(lock);
}

export function register(program: Command): void {
  const data = program.command('data').description('Data tools.');
  data
    .command('inspect')
    .description(
      "Run a recipe's data pipeline and report documents, tokens, duplicates, PII, epochs and rejected lines (post-training stages: rows kept, held out and rejected).",
    )
    .argument('<recipe>', 'recipe file (.json, .yaml)')
    .option('--json', 'print the report as JSON')
    .action(async (file: string, o: { json?: boolean }) => {
      const r = await loadRecipe(file);
      // Tokenizer training is the same on every backend; cpu avoids starting wasm for a report.
      const lock = await r.lock({ backend: 'cpu' });
      if (lock.recipe.stage !== 'pipeline') {
        const l = lock as RecipeLock;
        if (l.recipe.stage === 'pretrain') {
          const report = await inspectData(l);
          console.log(o.json ? JSON.stringify(report, null, 2) : formatInspect(report));
        } else {
          const report = await inspectPost(l, await postTokenizer(l));
          console.log(o.json ? JSON.stringify(report, null, 2) : formatPostInspect(report));
        }
        return;
      }
      // A pipeline: every stage, with the tokenizer the first stage makes (later stages inherit it).
      const stages = (lock as { stages: RecipeLock[] }).stages;
      const dir = await mkdtemp(join(tmpdir(), 'lathe-inspect-'));
      try {
        const reports: unknown[] = [];
        let tokenizer: Tokenizer | undefined;
        for (const [i, st] of stages.entries()) {
          let report: unknown;
          let text: string;
          if (st.recipe.stage === 'pretrain') {
            const prepared = await prepareData(st, dir);
            tokenizer = await Tokenizer.load(prepared.tokenizerPath);
            const rep = reportOf(st, prepared);
            [report, text] = [rep, formatInspect(rep)];
          } else {
            // Later stages inherit the first stage's model (its context bounds the rows) and tokenizer.
            const sl = i === 0 ? st : { ...st, recipe: { ...st.recipe, model: stages[0]!.recipe.model } };
            tokenizer ??= await postTokenizer(sl);
            const rep = await inspectPost(sl, tokenizer);
            [report, text] = [rep, formatPostInspect(rep)];
          }
          reports.push(report);
          if (!o.json) console.log(`stages[${i}] ${st.recipe.stage}\n${text}\n`);
        }
        if (o.json) console.log(JSON.stringify({ stages: reports }, null, 2));
      } finally {
        await rm(dir, { recursive: true, force: true });
      }
    });
  data
    .command('synth')
    .description(
      'Generate chat examples from a teacher model, filtered by a grader score, with exact repeats and near-duplicates of the training data dropped; writes <out> and <out>.lock.json (teacher, prompts, grader, seed, counts).',
    )
    .requiredOption('--teacher <run|hf-dir>', 'the teacher: a run directory or a Hugging Face folder')
    .requiredOption('--prompts <file>', 'JSONL of {"prompt": "..."} rows (other fields reach the grader rubric)')
    .requiredOption('--n <n>', 'examples to generate (prompts used in order, cycling)', positiveInt('--n'))
    .requiredOption('--out <file>', 'the chat JSONL to write')
    .option('--grader <file>', 'a grader file (see lathe eval --scorer); answers scoring below --min are dropped')
    .option('--min <s>', 'lowest grader score kept, in [0, 1] (default 0.5)', finiteNumber('--min'))
    .option(
      '--dedupe-against <file>',
      'training data (JSONL, text or messages): drop near-duplicates of it (MinHash); repeatable',
      (v: string, acc: string[]) => [...acc, v],
      [],
    )
    .option('--seed <n>', 'sampling seed (default 0); the same seed gives the same file', finiteNumber('--seed'))
    .option('--max-tokens <n>', 'tokens per answer (default 64)', positiveInt('--max-tokens'))
    .option('--temperature <t>', 'sampling temperature (default 0.8)', finiteNumber('--temperature'))
    .option('--top-p <p>', 'nucleus sampling (default 1: off)', finiteNumber('--top-p'))
    .action(
      async (o: {
        teacher: string;
        prompts: string;
        n: number;
        out: string;
        grader?: string;
        min?: number;
        dedupeAgainst: string[];
        seed?: number;
        maxTokens?: number;
        temperature?: number;
        topP?: number;
      }) => {
        const lock = await synthesize(o);
        const c = lock.counts;
        console.log(
          `${lock.out.path}: ${c.kept} of ${c.generated} kept (${c.belowMin} below --min, ${c.ungraded} ungraded, ${c.exactRepeats} exact repeats, ${c.nearDuplicates} near-duplicates, ${c.empty} empty); lock ${lock.out.path}.lock.json`,
        );
      },
    );
}
