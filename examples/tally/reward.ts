/**
 * Verifiable rewards for Tally completions (used by the GRPO stage) and a parse check for samples.
 */
import { parse, run } from './lang.js';

/** End-of-sample markers a tokenizer may emit; text after the first one is ignored. */
export const END_MARKERS: readonly string[] = ['<|endoftext|>', '<|end|>', '</s>', '<eos>'];

/** Cuts a completion at the first blank line or end marker (a program never contains a blank line). */
export function cutCompletion(completion: string): string {
  let end = completion.length;
  const blank = /\n[ \t\r]*\n/.exec(completion);
  if (blank !== null) end = blank.index;
  for (const m of END_MARKERS) {
    const i = completion.indexOf(m);
    if (i >= 0 && i < end) end = i;
  }
  return completion.slice(0, end);
}

/** The first program in a free-running sample: leading blank lines dropped, then cut like a completion. */
export function extractProgram(text: string): string {
  return cutCompletion(text.replace(/^(?:[ \t\r]*\n)+/, ''));
}

/** True when the first program in `text` (see extractProgram) parses. */
export function parses(text: string): boolean {
  return parse(extractProgram(text)).ok;
}

/** 1 if prompt + completion runs and prints `expected`, 0.5 if it runs with other output, else 0. */
export function programReward(completion: string, example: { prompt: string; expected: string }): number {
  const res = run(example.prompt + cutCompletion(completion));
  if (!res.ok) return 0;
  return res.output === example.expected ? 1 : 0.5;
}
