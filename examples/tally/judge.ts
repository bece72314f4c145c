/**
 * Data for a Tally judge: a small model that grades answers to "finish the last line" the way the
 * interpreter would. Each case is a short program ending in `emit`, an answer (the right variable, a
 * variable the program never defines, an earlier variable, or broken syntax), and the interpreter's
 * verdict: 1 when the finished program prints what the reference prints, else 0. The judge is shown
 * the reference answer (a reference-guided rubric, as the mini Tally prompt rows carry `answer`).
 *
 *   judgeCases(n, seed)       the cases, half of them right
 *   judgeTexts(cases)         pre-training rows: the grader's rubric filled in, then the verdict
 *   JUDGE_GRADER              the grader file (src/recipe/grader-schema.ts) that asks a judge run the same
 */
import { createRng, type Rng } from './generator.js';
import { run } from './lang.js';

const NAMES = ['px', 'qty', 'fee', 'size', 'cash', 'rate', 'bid', 'ask', 'lots', 'nav', 'cap', 'net'];

/** One graded answer. */
export interface JudgeCase {
  /** The program up to its last line's `emit`. */
  prompt: string;
  /** What the reference prints. */
  expected: string;
  /** The reference answer: the variable the last line should emit. */
  answer: string;
  /** The answer graded: the rest of the last line, e.g. " qty". */
  completion: string;
  /** The interpreter's verdict: 1 when prompt + completion prints `expected`. */
  verdict: 0 | 1;
  /** How the answer was made. */
  kind: 'right' | JudgeWrongKind;
}

/**
 * Wrong answers: a variable the program never defines, an earlier variable (both need the judge to
 * compare names), broken syntax, a number literal, or a keyword (visible in the answer's form).
 */
export type JudgeWrongKind = 'undefined' | 'earlier' | 'syntax' | 'number' | 'keyword';

/** A 2-4 line program: each line defines a variable from the previous one; the answer is the last. */
function program(rng: Rng): { lines: string[]; names: string[] } {
  const pool = [...NAMES];
  const pick = () => pool.splice(rng.int(0, pool.length - 1), 1)[0]!;
  const names = [pick()];
  const lines = [`let ${names[0]} = ${rng.int(1, 99)}`];
  const more = rng.int(1, 3);
  for (let i = 0; i < more; i++) {
    const v = pick();
    lines.push(`let ${v} = ${names.at(-1)} ${rng.next() < 0.5 ? '*' : '+'} ${rng.int(2, 9)}`);
    names.push(v);
  }
  return { lines, names };
}

/** The interpreter's verdict on an answer. */
export function verdictOf(prompt: string, completion: string, expected: string): 0 | 1 {
  const r = run(prompt + completion);
  return r.ok && r.output === expected ? 1 : 0;
}

/** The kinds of wrong answers by default: those visible in the answer's form. */
export const FORM_ERRORS: readonly JudgeWrongKind[] = ['syntax', 'number', 'keyword'];

/** Wrong answers that name the wrong variable. */
export const NAME_ERRORS: readonly JudgeWrongKind[] = ['undefined', 'earlier'];

/** n graded answers, half right, the others of the given wrong kinds; the same seed gives the same cases. */
export function judgeCases(n: number, seed: number, wrong: readonly JudgeWrongKind[] = FORM_ERRORS): JudgeCase[] {
  const rng = createRng(seed);
  const out: JudgeCase[] = [];
  while (out.length < n) {
    const { lines, names } = program(rng);
    const prompt = `${lines.join('\n')}\nemit`;
    const answer = names.at(-1)!;
    const ref = run(`${prompt} ${answer}`);
    if (!ref.ok) continue;
    let kind: JudgeCase['kind'] = 'right';
    let completion = ` ${answer}`;
    if (out.length % 2 === 1) {
      kind = rng.pick(wrong);
      if (kind === 'undefined') completion = ` ${rng.pick(NAMES.filter((x) => !names.includes(x)))}`;
      else if (kind === 'earlier') completion = ` ${rng.pick(names.slice(0, -1))}`;
      else if (kind === 'syntax') completion = rng.pick([` ${answer} *`, ` (${answer}`, ` ${answer})`, ` ${answer} +`]);
      else if (kind === 'number') completion = ` ${rng.int(1, 99)}`;
      else completion = rng.pick([' let', ' emit', ` let ${answer}`]);
    }
    out.push({
      prompt,
      expected: ref.output,
      answer,
      completion,
      verdict: verdictOf(prompt, completion, ref.output),
      kind,
    });
  }
  return out;
}

/**
 * The judge's rubric (the grader file's `rubric`, plain text after bos): the program as answered, then
 * the reference answer; the judge continues with " 1" or " 0".
 */
export const JUDGE_RUBRIC = '{prompt}{completion} ? {answer}:';

/** The rubric filled in for a case. */
export function judgeQuestion(c: JudgeCase): string {
  return JUDGE_RUBRIC.replace('{prompt}', c.prompt).replace('{completion}', c.completion).replace('{answer}', c.answer);
}

/** Pre-training rows that teach a judge the verdicts: the filled rubric followed by " 1" or " 0". */
export function judgeTexts(cases: readonly JudgeCase[]): { text: string }[] {
  return cases.map((c) => ({ text: `${judgeQuestion(c)} ${c.verdict}` }));
}

/** The grader file for a judge run at `judge` (relative to the grader file). */
export function judgeGrader(judge: string): Record<string, unknown> {
  return { kind: 'model', judge, rubric: JUDGE_RUBRIC, chat: false, maxTokens: 2, score: { min: 0, max: 1 } };
}
