import type { Engine } from '../engine/engine.js';
import { createEngine } from '../engine/index.js';
import { loadBase, openModel } from '../engine/open.js';
import { generateBatch } from '../engine/sample.js';
import { activeBackend, type EngineBackend } from '../engine/tfjs/backend.js';
import { sha256File } from '../hash.js';
import type { BaseModelRef } from '../recipe/base.js';
import { readGraderFile, type GraderConfig } from '../recipe/grader-schema.js';
import type { EngineLock } from '../recipe/lock.js';
import type { Tokenizer } from '../tokenizer/index.js';

// The model grader: a judge model reads each output through the grader file's rubric and answers;
// the first number in its answer (or the score pattern's group), within [min, max], scaled to [0, 1],
// is the score. Answers without one are counted (unparsable), never thrown. Outputs are graded in
// batches through the judge's batch decoder.

/** One output to grade: the text, and the row it answers (its prompt and any fields the rubric names). */
export interface GradeItem {
  completion: string;
  row: Record<string, unknown>;
}

/** A grade: the score in [0, 1] and the judge's answer, or why there is no score. */
export type Grade =
  | { score: number; raw: string; answer: number }
  | { error: 'unparsable' | 'field' | 'context'; message: string; raw?: string };

/** Counts of outputs the grader could not score, by cause. */
export interface GraderErrors {
  /** The judge's answer held no score in range. */
  unparsable: number;
  /** The rubric names a field the row lacks. */
  field: number;
  /** The rendered rubric left no room in the judge's context. */
  context: number;
}

/** Fills the rubric: {completion}, {prompt}, and {field} for other row fields; {{ }} are literal braces. */
export function renderRubric(rubric: string, item: GradeItem): { text: string } | { missing: string } {
  let missing: string | undefined;
  const text = rubric.replace(/\{\{|\}\}|\{([A-Za-z_][\w.-]*)\}/g, (m, name: string | undefined) => {
    if (m === '{{') return '{';
    if (m === '}}') return '}';
    if (name === 'completion') return item.completion;
    const v = item.row[name!];
    if (v === undefined) {
      missing ??= name;
      return m;
    }
    return typeof v === 'string' ? v : JSON.stringify(v);
  });
  return missing === undefined ? { text } : { missing };
}

const NUMBER = /[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?/;

/** Reads a score from the judge's answer: the pattern's first group (or match), else the first number; scaled to [0, 1]. */
export function parseScore(raw: string, score: GraderConfig['score']): { score: number; answer: number } | undefined {
  let token: string | undefined;
  if (score.pattern !== undefined) {
    const m = new RegExp(score.pattern).exec(raw);
    token = m ? (m[1] ?? m[0]) : undefined;
    if (token !== undefined) token = NUMBER.exec(token)?.[0];
  } else token = NUMBER.exec(raw)?.[0];
  if (token === undefined) return undefined;
  const answer = Number(token);
  if (!Number.isFinite(answer) || answer < score.min || answer > score.max) return undefined;
  return { score: (answer - score.min) / (score.max - score.min), answer };
}

/** Options of {@link ModelGrader.open}. */
export interface GraderOpenOptions {
  /** Resolves a relative grader path (default: the working directory). */
  baseDir?: string;
  /** The judge's engine (default: the judge run's own; tfjs for an HF folder). */
  engine?: { backend: EngineBackend; engine?: EngineLock };
  /** Rows the judge decodes at once (default 16). */
  batch?: number;
}

/** A grader file with its judge model loaded. */
export class ModelGrader {
  /** Outputs not scored since the grader opened, by cause. */
  readonly errors: GraderErrors = { unparsable: 0, field: 0, context: 0 };

  private constructor(
    readonly config: GraderConfig,
    /** The grader file, absolute. */
    readonly path: string,
    /** sha256 of the grader file. */
    readonly sha256: string,
    /** The judge model, pinned. */
    readonly judge: BaseModelRef,
    private readonly engine: Engine,
    private readonly tokenizer: Tokenizer,
    private readonly batch: number,
  ) {}

  /**
   * Reads a grader file and loads its judge (the latest checkpoint, or `judge` when a lock pinned one);
   * errors name the file and field.
   */
  static async open(file: string, o: GraderOpenOptions & { judge?: BaseModelRef } = {}): Promise<ModelGrader> {
    const g = readGraderFile(file, o.baseDir);
    const { sha256 } = await sha256File(g.path);
    const where = `grader ${g.path}: judge`;
    if (o.judge) {
      const { spec, weights, tokenizer } = await loadBase(o.judge, where);
      const model = await createEngine({ ...(o.engine ?? { backend: activeBackend() }), spec, weights });
      return new ModelGrader(g.config, g.path, sha256, o.judge, model, tokenizer, o.batch ?? 16);
    }
    const opened = await openModel(g.config.judge, { baseDir: g.dir, where, engine: o.engine });
    return new ModelGrader(g.config, g.path, sha256, opened.ref, opened.model, opened.tokenizer, o.batch ?? 16);
  }

  /** `grader <file> (judge <path>)`, for messages. */
  get label(): string {
    return `grader ${this.path} (judge ${this.judge.path})`;
  }

  /** Outputs not scored, all causes. */
  get errorCount(): number {
    return this.errors.unparsable + this.errors.field + this.errors.context;
  }

  /** The judge's prompt ids for an item, or why there is none. */
  private promptOf(item: GradeItem): number[] | Grade {
    const c = this.config;
    const r = renderRubric(c.rubric, item);
    if ('missing' in r)
      return { error: 'field', message: `the rubric names {${r.missing}}, which the row does not have` };
    const t = this.tokenizer;
    const ids = c.chat
      ? t.renderChat(
          [
            ...(c.system !== undefined ? [{ role: 'system' as const, content: c.system }] : []),
            { role: 'user', content: r.text },
          ],
          {
            addGenerationPrompt: true,
          },
        ).ids
      : [t.special.bos, ...t.encode(r.text)];
    if (ids.length + c.maxTokens > this.engine.spec.context)
      return {
        error: 'context',
        message: `the rubric with this output is ${ids.length} tokens; with maxTokens ${c.maxTokens} it passes the judge's context ${this.engine.spec.context}`,
      };
    return ids;
  }

  /** Grades outputs (greedy judge answers, batched); failures come back as errors and are counted. */
  async grade(items: readonly GradeItem[]): Promise<Grade[]> {
    const out: Grade[] = new Array(items.length);
    const todo: { i: number; ids: number[] }[] = [];
    items.forEach((item, i) => {
      const p = this.promptOf(item);
      if (Array.isArray(p)) todo.push({ i, ids: p });
      else out[i] = p;
    });
    const t = this.tokenizer;
    const answers = await generateBatch(
      this.engine,
      todo.map((x) => x.ids),
      { maxTokens: this.config.maxTokens, temperature: 0, stop: [t.special.end, t.special.eos], batch: this.batch },
    );
    todo.forEach(({ i }, k) => {
      const raw = t.decode(answers[k]!, { skipSpecial: true });
      const s = parseScore(raw, this.config.score);
      out[i] = s
        ? { score: s.score, raw, answer: s.answer }
        : {
            error: 'unparsable',
            raw,
            message: `the judge answered ${JSON.stringify(raw.slice(0, 60))}: no score in [${this.config.score.min}, ${this.config.score.max}]`,
          };
    });
    for (const g of out) if ('error' in g) this.errors[g.error]++;
    return out;
  }

  /** Frees the judge model. */
  close(): Promise<void> {
    return this.engine.dispose();
  }
}
