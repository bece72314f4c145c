/**
 * CLI: writes the data of the two lm-evaluation-harness tasks in examples/lm-eval/ from Tally's
 * held-out tasks (examples/data/tally/tasks.jsonl), checked with the Tally interpreter.
 *   node dist/examples/tally/lm-eval-tasks.js --tasks examples/data/tally/tasks.jsonl --out examples/lm-eval
 *
 * tally_emit_mc.jsonl (multiple choice): a program up to its final `emit`; the choices are the
 * variables it defines, and the gold one is the only variable whose emission prints the task's
 * expected output (the interpreter runs each choice; tasks where that is not exactly one, or where
 * two choices print the same, are left out).
 * tally_emit_gen.jsonl (generation): the same prompts; the target is the reference expression of
 * the final `emit`.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { run } from './lang.js';

/** How many documents each task file holds. */
export const LM_EVAL_DOCS = 100;

/** The two JSONL files, byte-identical for the same tasks.jsonl. */
export function buildLmEvalTasks(tasksJsonl: string, docs = LM_EVAL_DOCS): { mc: string; gen: string } {
  const mc: string[] = [];
  const gen: string[] = [];
  for (const line of tasksJsonl.split('\n')) {
    if (!line.trim()) continue;
    const t = JSON.parse(line) as { prompt: string; expected: string; answer: string };
    if (!t.prompt.endsWith('emit '))
      throw new Error(`task prompt does not end with "emit ": ${JSON.stringify(t.prompt)}`);
    const prompt = t.prompt.slice(0, -1);
    if (gen.length < docs) gen.push(JSON.stringify({ prompt, answer: t.answer, expected: t.expected }));
    if (mc.length >= docs) continue;
    const vars = [...new Set([...t.prompt.matchAll(/^\s*let ([a-z][a-z0-9_]*) =/gm)].map((m) => m[1]!))];
    const outputs = vars.map((v) => {
      const r = run(t.prompt + v);
      return r.ok ? r.output : null;
    });
    const hits = outputs.flatMap((o, i) => (o === t.expected ? [i] : []));
    if (vars.length < 2 || hits.length !== 1 || new Set(outputs).size !== vars.length) continue;
    mc.push(JSON.stringify({ prompt, choices: vars, gold: hits[0], expected: t.expected }));
  }
  return { mc: mc.join('\n') + '\n', gen: gen.join('\n') + '\n' };
}

function main(): void {
  const { values } = parseArgs({ options: { tasks: { type: 'string' }, out: { type: 'string' } } });
  if (!values.tasks || !values.out) {
    console.error('usage: lm-eval-tasks --tasks examples/data/tally/tasks.jsonl --out examples/lm-eval');
    process.exit(2);
  }
  const { mc, gen } = buildLmEvalTasks(readFileSync(values.tasks, 'utf8'));
  writeFileSync(join(values.out, 'tally_emit_mc.jsonl'), mc);
  writeFileSync(join(values.out, 'tally_emit_gen.jsonl'), gen);
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) main();
