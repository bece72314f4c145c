/**
 * CLI: writes a Tally corpus.
 *   node dist/examples/tally/generate.js --out DIR --docs N --tasks M --seed S [--corpus K]
 * DIR/train.jsonl: {"text": program} per line; DIR/tasks.jsonl: {"prompt","expected","answer"} per line;
 * DIR/corpus.txt (only with --corpus K > 0): K programs as plain text separated by a blank line.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { createRng, generateProgram, generateTask } from './generator.js';

/** What to generate; each file draws from its own seeded stream. */
export interface DatasetOptions {
  docs: number;
  tasks: number;
  corpus: number;
  seed: number;
}

/** File contents of a dataset, byte-identical for identical options. */
export interface Dataset {
  train: string;
  tasks: string;
  corpus: string;
}

/** Builds the dataset in memory: unique programs, and tasks whose programs are absent from train. */
export function buildDataset(opts: DatasetOptions): Dataset {
  // Separate streams so changing --tasks never changes train.jsonl.
  const trainRng = createRng(opts.seed);
  const taskRng = createRng(opts.seed + 1_000_003);
  const corpusRng = createRng(opts.seed + 2_000_006);

  const seen = new Set<string>();
  const trainLines: string[] = [];
  while (trainLines.length < opts.docs) {
    const { source } = generateProgram(trainRng);
    if (seen.has(source)) continue;
    seen.add(source);
    trainLines.push(JSON.stringify({ text: source }));
  }

  // Held out: a task whose full program is in train would reward memorisation.
  const taskLines: string[] = [];
  const prompts = new Set<string>();
  while (taskLines.length < opts.tasks) {
    const t = generateTask(taskRng);
    if (seen.has(t.source) || prompts.has(t.prompt)) continue;
    prompts.add(t.prompt);
    taskLines.push(JSON.stringify({ prompt: t.prompt, expected: t.expected, answer: t.answer }));
  }

  const corpusSeen = new Set<string>();
  const corpusPrograms: string[] = [];
  while (corpusPrograms.length < opts.corpus) {
    const { source } = generateProgram(corpusRng);
    if (corpusSeen.has(source)) continue;
    corpusSeen.add(source);
    corpusPrograms.push(source);
  }

  const joinLines = (lines: string[]): string => (lines.length > 0 ? lines.join('\n') + '\n' : '');
  return {
    train: joinLines(trainLines),
    tasks: joinLines(taskLines),
    corpus: corpusPrograms.length > 0 ? corpusPrograms.join('\n\n') + '\n' : '',
  };
}

function count(name: string, raw: string | undefined, fallback: number): number {
  if (raw === undefined) return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 0) throw new Error(`--${name} must be a non-negative integer, got "${raw}"`);
  return n;
}

/** Parses CLI arguments and writes the files; returns the paths written. */
export function main(argv: readonly string[]): string[] {
  const { values } = parseArgs({
    args: [...argv],
    options: {
      out: { type: 'string' },
      docs: { type: 'string' },
      tasks: { type: 'string' },
      corpus: { type: 'string' },
      seed: { type: 'string' },
    },
    strict: true,
  });
  if (values.out === undefined) throw new Error('--out DIR is required');
  const opts: DatasetOptions = {
    docs: count('docs', values.docs, 10_000),
    tasks: count('tasks', values.tasks, 500),
    corpus: count('corpus', values.corpus, 0),
    seed: count('seed', values.seed, 1),
  };
  const data = buildDataset(opts);
  mkdirSync(values.out, { recursive: true });
  const written = [join(values.out, 'train.jsonl'), join(values.out, 'tasks.jsonl')];
  writeFileSync(written[0]!, data.train);
  writeFileSync(written[1]!, data.tasks);
  if (opts.corpus > 0) {
    written.push(join(values.out, 'corpus.txt'));
    writeFileSync(written[2]!, data.corpus);
  }
  return written;
}

// Run only when executed directly (also after compilation to dist/), not when imported.
if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  try {
    for (const p of main(process.argv.slice(2))) console.log(`wrote ${p}`);
  } catch (e) {
    console.error(e instanceof Error ? e.message : String(e));
    process.exitCode = 1;
  }
}
