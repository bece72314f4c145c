/**
 * Post-training datasets built from Tally (see examples/data/tally-post/README.md):
 *   sft.jsonl      chats: finish a program's last line (some with a weight-0 turn, some with a system message)
 *   completions.jsonl  {prompt, completion}: a program up to its last "emit", and the reference expression (SFT without chat)
 *   pairs.jsonl    DPO pairs: the reference last line (chosen) vs an undefined variable or broken syntax (rejected)
 *   prompts.jsonl  RL prompts from tasks.jsonl: {prompt, expected, answer}, the prompt ending in "emit"
 *                  (no trailing space, so a completion starts with " name" as in the corpus)
 *
 *   node dist/examples/tally/post-training.js --out examples/data/tally-post --tasks examples/data/tally/tasks.jsonl
 */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { createRng, generateTask, type Rng } from './generator.js';
import { run } from './lang.js';

/** What to generate. */
export interface PostDatasetOptions {
  sft: number;
  completions: number;
  pairs: number;
  seed: number;
  /** tasks.jsonl contents, the source of the RL prompts. */
  tasks: string;
}

const SYSTEM = "You write Tally, the desk's pricing language. Answer with code only.";
// Names that look like Tally variables; a rejected completion uses one the prompt never defines.
const STRANGERS = [
  'spread',
  'vwap',
  'pnl',
  'notional',
  'fee',
  'total',
  'net',
  'mid',
  'risk',
  'exposure',
  'alloc',
  'payoff',
  'gross',
  'ret',
  'tick_px',
  'fill',
];

function definedNames(prompt: string): Set<string> {
  return new Set([...prompt.matchAll(/^\s*let ([a-z][a-z0-9_]*) =/gm)].map((m) => m[1]!));
}

/** A wrong last line: a variable the program never defines, or an expression that does not parse. */
function rejectedAnswer(prompt: string, answer: string, rng: Rng): string {
  const names = definedNames(prompt);
  const strangers = STRANGERS.filter((n) => !names.has(n));
  const r = rng.next();
  if (r < 0.5 && strangers.length) return rng.pick(strangers);
  if (r < 0.75) return answer.startsWith('round(') ? answer.slice(0, -1) : `round(${answer}, 2`;
  return `${answer} *`;
}

/** The three files' contents, byte-identical for identical options. */
export function buildPostDatasets(o: PostDatasetOptions): {
  sft: string;
  completions: string;
  pairs: string;
  prompts: string;
} {
  const rng = createRng(o.seed);
  const held = new Set(
    o.tasks
      .split('\n')
      .filter(Boolean)
      .map((l) => (JSON.parse(l) as { prompt: string }).prompt),
  );
  const seen = new Set<string>();
  const fresh = (maxChars?: number) => {
    for (;;) {
      const t = generateTask(rng, { maxChars });
      if (held.has(t.prompt) || seen.has(t.prompt)) continue;
      seen.add(t.prompt);
      return t;
    }
  };
  const sft: string[] = [];
  for (let i = 0; i < o.sft; i++) {
    // Sized to fit a 128-token context: programs up to 120 characters, a shorter one in the first turn.
    const t = fresh(120);
    const program = t.prompt.replace(/emit $/, 'emit');
    const messages: { role: string; content: string; weight?: number }[] = [];
    const kind = rng.next();
    if (kind < 0.3) messages.push({ role: 'system', content: SYSTEM });
    if (kind >= 0.7) {
      // A first turn the model is not trained on (weight 0): running a program is the interpreter's job.
      const first = fresh(70);
      const full = run(first.source);
      messages.push(
        { role: 'user', content: `What does this print?\n${first.source}` },
        { role: 'assistant', content: full.ok ? full.output : 'an error', weight: 0 },
      );
    }
    messages.push(
      { role: 'user', content: `Finish the last line:\n${program}` },
      { role: 'assistant', content: `emit ${t.answer}` },
    );
    sft.push(JSON.stringify({ messages }));
  }
  const completions: string[] = [];
  for (let i = 0; i < o.completions; i++) {
    const t = fresh();
    completions.push(JSON.stringify({ prompt: t.prompt.replace(/ $/, ''), completion: ` ${t.answer}` }));
  }
  const pairs: string[] = [];
  for (let i = 0; i < o.pairs; i++) {
    const t = fresh();
    const prompt = t.prompt.replace(/ $/, '');
    pairs.push(
      JSON.stringify({ prompt, chosen: ` ${t.answer}`, rejected: ` ${rejectedAnswer(prompt, t.answer, rng)}` }),
    );
  }
  const prompts = o.tasks
    .split('\n')
    .filter(Boolean)
    .map((l) => {
      const t = JSON.parse(l) as { prompt: string; expected: string; answer: string };
      return JSON.stringify({ prompt: t.prompt.replace(/ $/, ''), expected: t.expected, answer: t.answer });
    });
  const join = (xs: string[]) => xs.join('\n') + '\n';
  return { sft: join(sft), completions: join(completions), pairs: join(pairs), prompts: join(prompts) };
}

/** CLI entry; returns the files written. */
export function main(argv: readonly string[]): string[] {
  const { values } = parseArgs({
    args: [...argv],
    options: {
      out: { type: 'string' },
      tasks: { type: 'string' },
      sft: { type: 'string', default: '400' },
      completions: { type: 'string', default: '600' },
      pairs: { type: 'string', default: '600' },
      seed: { type: 'string', default: '7' },
    },
  });
  if (!values.out || !values.tasks)
    throw new Error('usage: post-training --out DIR --tasks tasks.jsonl [--sft N] [--pairs M] [--seed S]');
  const d = buildPostDatasets({
    sft: Number(values.sft),
    completions: Number(values.completions),
    pairs: Number(values.pairs),
    seed: Number(values.seed),
    tasks: readFileSync(values.tasks, 'utf8'),
  });
  mkdirSync(values.out, { recursive: true });
  const files = (['sft', 'completions', 'pairs', 'prompts'] as const).map((k) => {
    const f = join(values.out!, `${k}.jsonl`);
    writeFileSync(f, d[k]);
    return f;
  });
  return files;
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  for (const f of main(process.argv.slice(2))) console.log(`wrote ${f}`);
}
