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
}
