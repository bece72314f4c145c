import { readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import YAML from 'yaml';
import { z } from 'zod';
import { LatheError } from '../errors.js';

// A grader file: a judge model, the rubric it is asked with, and how its answer becomes a score. The
// same file scores an eval suite (`scorer: {grader}`), rewards GRPO and online DPO (`reward: {grader}`,
// `judge: {grader}`) and filters synthetic data (`lathe data synth --grader`).

/** The model grader (scorer kind `model`). */
export const GraderSchema = z
  .strictObject({
    kind: z.literal('model').describe('A model grader: a judge model reads each output and answers with a score.'),
    judge: z
      .string()
      .min(1)
      .describe(
        'The judge: a Lathe run directory (its latest checkpoint) or a Hugging Face folder, relative to this file.',
      ),
    rubric: z
      .string()
      .min(1)
      .describe(
        'What the judge is asked, with {completion} (the output graded), {prompt} and {field} for any other field of the row (e.g. {expected}); {{ and }} are literal braces.',
      ),
    chat: z
      .boolean()
      .default(true)
      .describe(
        "Ask in the judge's chat template (the rubric as the user turn); false: the rubric as plain text after bos.",
      ),
    system: z.string().optional().describe('A system message before the rubric (chat only).'),
    maxTokens: z.number().int().positive().default(8).describe('Tokens the judge may answer with.'),
    score: z
      .strictObject({
        pattern: z
          .string()
          .optional()
          .describe(
            'A regex whose first group (or whole match) is the score; default: the first number in the answer.',
          ),
        min: z.number().default(0).describe('The lowest score the rubric allows (mapped to 0).'),
        max: z.number().default(1).describe('The highest score the rubric allows (mapped to 1).'),
      })
      .refine((s) => s.max > s.min, { message: 'max must be greater than min', path: ['max'] })
      .prefault({})
      .describe(
        'How the answer becomes a score: the number found, which must lie in [min, max], scaled to [0, 1]. An answer with no number in range is counted as unparsable, not scored.',
      ),
  })
  .describe('A model grader.');

export type GraderConfig = z.output<typeof GraderSchema>;

/** A grader file, read and checked: its config, its absolute path and its folder. */
export interface GraderFile {
  config: GraderConfig;
  path: string;
  dir: string;
}

/** Reads a grader file (.json, .yaml, .yml); errors name the file and the field. */
export function readGraderFile(path: string, baseDir = process.cwd()): GraderFile {
  const abs = resolve(baseDir, path);
  let text: string;
  try {
    text = readFileSync(abs, 'utf8');
  } catch (e) {
    throw new LatheError(
      `grader ${path}: cannot read it (${(e as NodeJS.ErrnoException).code === 'ENOENT' ? `no such file: ${abs}` : (e as Error).message})`,
    );
  }
  let raw: unknown;
  try {
    raw = /\.ya?ml$/i.test(abs) ? YAML.parse(text) : JSON.parse(text);
  } catch (e) {
    throw new LatheError(`grader ${abs}: cannot parse it (${(e as Error).message.split('\n')[0]})`);
  }
  const r = GraderSchema.safeParse(raw);
  if (!r.success) {
    const lines = r.error.issues.map((i) => `  ${abs}: ${i.path.map(String).join('.') || '(top level)'}: ${i.message}`);
    throw new LatheError(`grader ${path} is invalid:\n${lines.join('\n')}`);
  }
  if (r.data.score.pattern !== undefined) {
    try {
      new RegExp(r.data.score.pattern);
    } catch (e) {
      throw new LatheError(`grader ${abs}: score.pattern: ${(e as Error).message}`);
    }
  }
  if (!/\{completion\}/.test(r.data.rubric))
    throw new LatheError(`grader ${abs}: rubric: never shows the output graded; put {completion} in it`);
  return { config: r.data, path: abs, dir: dirname(abs) };
}
