import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { run } from '../examples/tally/lang.js';
import { Rng } from '../src/random.js';

// Mini Tally: two- to four-line programs whose last line emits the last variable defined. Small enough
// for a model of a few thousand parameters to learn in a few dozen steps, so the online stages (GRPO,
// online DPO) can show their effect in a test; scored by the real Tally interpreter (programReward).

const NAMES = ['px', 'qty', 'fee', 'size', 'cash', 'rate', 'bid', 'ask', 'lots', 'nav', 'cap', 'net'];

/** One mini program: its lines without the final emit, and the name the final emit should print. */
export function miniProgram(rng: Rng): { body: string; answer: string } {
  const names = [...NAMES];
  const pick = () => names.splice(rng.int(names.length), 1)[0]!;
  const lines: string[] = [];
  let last = pick();
  lines.push(`let ${last} = ${1 + rng.int(99)}`);
  const more = rng.int(3);
  for (let i = 0; i < more; i++) {
    const v = pick();
    lines.push(`let ${v} = ${last} ${rng.next() < 0.5 ? '*' : '+'} ${1 + rng.int(9)}`);
    last = v;
  }
  return { body: lines.join('\n'), answer: last };
}

/** Writes dir/mini-train.jsonl (complete programs, for pre-training) and dir/mini-prompts.jsonl ({prompt, expected}). */
export async function writeMini(
  dir: string,
  o: { programs: number; prompts: number; seed: number },
): Promise<{ train: string; prompts: string }> {
  const rng = new Rng(o.seed);
  const train: string[] = [];
  for (let i = 0; i < o.programs; i++) {
    const p = miniProgram(rng);
    train.push(JSON.stringify({ text: `${p.body}\nemit ${p.answer}` }));
  }
  const prompts: string[] = [];
  for (let i = 0; i < o.prompts; i++) {
    const p = miniProgram(rng);
    const res = run(`${p.body}\nemit ${p.answer}`);
    if (!res.ok) throw new Error(`mini program does not run: ${p.body}`);
    prompts.push(JSON.stringify({ prompt: `${p.body}\nemit`, expected: res.output, answer: p.answer }));
  }
  const paths = { train: join(dir, 'mini-train.jsonl'), prompts: join(dir, 'mini-prompts.jsonl') };
  await writeFile(paths.train, train.join('\n') + '\n');
  await writeFile(paths.prompts, prompts.join('\n') + '\n');
  return paths;
}
