import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promptIds } from '../data/pairs.js';
import { readPostRows, type PostManifest } from '../data/post.js';
import { promptExample, type PromptExample } from '../data/prompts.js';
import { LatheError } from '../errors.js';
import type { Engine } from '../engine/engine.js';
import { createEngine } from '../engine/index.js';
import { sampleToken, type SampleOptions } from '../engine/sample.js';
import { Rng } from '../random.js';
import type { RecipeLock } from '../recipe/lock.js';
import type { GrpoRecipe, OnlineDpoRecipe } from '../recipe/schema.js';
import type { Tokenizer } from '../tokenizer/index.js';
import { loadBase } from '../engine/open.js';
import { RewardHost, type RewardHostOptions, type RewardOutcome } from './reward.js';
import { ModelGrader } from '../eval/grader.js';
import { announce, noRowsError } from './sft.js';
import { ExampleOrder, seqBatch } from './batch.js';
import { round4, StageFailure, type StageContext } from './loop.js';

// Rollouts for the online stages: n completions of one prompt, sampled together as a batch of n
// with a KV cache (the prompt is encoded once and its cache shared), from one restorable Rng.

/** One sampled completion. */
export interface Completion {
  /** Token ids, including the token that ended it (a stop id, or the one that completed a stop string). */
  ids: number[];
  /** The text the judge sees: decoded without special tokens, cut before a stop string. */
  text: string;
  /** Ended by a stop token or string (false: hit maxNewTokens or the context). */
  finished: boolean;
}

/** Sampling settings of a rollout. */
export interface RolloutOptions {
  maxNewTokens: number;
  temperature: number;
  topK: number;
  topP: number;
  /** Token ids that end a completion. */
  stopIds: number[];
  /** Strings that end a completion. */
  stopStrings: string[];
}

/** Cuts text before the first stop string; reports whether one was found. */
export function cutAtStop(text: string, stops: readonly string[]): { text: string; hit: boolean } {
  let end = -1;
  for (const s of stops) {
    const i = text.indexOf(s);
    if (i >= 0 && (end < 0 || i < end)) end = i;
  }
  return end < 0 ? { text, hit: false } : { text: text.slice(0, end), hit: true };
}

/** Samples n completions of `prompt` (token ids) with the engine's KV cache. Greedy when temperature is 0. */
export async function sampleGroup(
  engine: Engine,
  tokenizer: Tokenizer,
  prompt: number[],
  n: number,
  o: RolloutOptions,
  rng: Rng,
): Promise<Completion[]> {
  const ctxLen = engine.spec.context;
  if (prompt.length >= ctxLen)
    throw new Error(`prompt of ${prompt.length} tokens leaves no room in a context of ${ctxLen}`);
  const samp: SampleOptions = { temperature: o.temperature, topK: o.topK, topP: o.topP };
  const out: Completion[] = Array.from({ length: n }, () => ({ ids: [], text: '', finished: false }));
  const stop = new Set(o.stopIds);
  const { logits: firstData, session } = await engine.decode(prompt, n);
  try {
    const V = engine.spec.vocabSize;
    let logits: Float32Array[] = Array.from({ length: n }, () => firstData);
    let pos = prompt.length;
    let live = n;
    for (let t = 0; t < o.maxNewTokens && pos < ctxLen && live > 0; t++) {
      const next = new Int32Array(n);
      for (let i = 0; i < n; i++) {
        const c = out[i]!;
        if (c.finished) {
          next[i] = tokenizer.special.pad;
          continue;
        }
        const tok = sampleToken(logits[i]!, samp, rng);
        next[i] = tok;
        c.ids.push(tok);
        if (stop.has(tok)) {
          c.finished = true;
          live--;
          continue;
        }
        if (o.stopStrings.length) {
          const cut = cutAtStop(tokenizer.decode(c.ids, { skipSpecial: true }), o.stopStrings);
          if (cut.hit) {
            c.finished = true;
            live--;
          }
        }
      }
      pos++;
      if (live === 0 || t + 1 >= o.maxNewTokens || pos >= ctxLen) break;
      const data = await session.step(next);
      logits = Array.from({ length: n }, (_, i) => data.subarray(i * V, (i + 1) * V));
    }
  } finally {
    session.close();
  }
  for (const c of out) {
    const ids = c.ids.length && stop.has(c.ids.at(-1)!) ? c.ids.slice(0, -1) : c.ids;
    c.text = cutAtStop(tokenizer.decode(ids, { skipSpecial: true }), o.stopStrings).text;
  }
  return out;
}

// ---- Prompt data and judging, shared by GRPO and online DPO ----

/** A training or held-out prompt: its tokens and the whole row (the reward's `example`). */
export interface PromptItem {
  ids: number[];
  stop: number[];
  row: Record<string, unknown>;
}

/** Reads, checks and tokenizes an online stage's prompts; writes data/rows.json. */
export async function preparePrompts(
  ctx: Pick<StageContext<OnlineDpoRecipe | GrpoRecipe>, 'lock' | 'rd' | 'tokenizer'>,
): Promise<{ train: PromptItem[]; val: PromptItem[]; manifest: PostManifest }> {
  const r = ctx.lock.recipe;
  const rows = await readPostRows(ctx.lock, (doc) =>
    promptExample(doc, ctx.tokenizer, { context: r.model.context, maxNewTokens: r.train.maxNewTokens }),
  );
  const item = (x: { value: PromptExample; row: Record<string, unknown> }): PromptItem => ({
    ids: x.value.ids,
    stop: x.value.stop,
    row: x.row,
  });
  const train = rows.train.map(item);
  const val = rows.val.map(item);
  const manifest: PostManifest = {
    stage: r.stage,
    lock: ctx.lock.id,
    examples: { train: train.length, val: val.length },
    rejected: rows.rejected,
    rejections: rows.rejections,
    duplicates: rows.duplicates,
    truncated: 0,
    tokens: { train: train.reduce((a, p) => a + p.ids.length, 0), val: val.reduce((a, p) => a + p.ids.length, 0) },
    vocabSize: ctx.tokenizer.vocabSize,
  };
  await writeFile(join(ctx.rd.dataDir, 'rows.json'), JSON.stringify(manifest, null, 1));
  return { train, val, manifest };
}

/** Ranks completions of a prompt: a reward function, or a reward-model run. */
export interface Judge {
  readonly label: string;
  scoreGroup(prompt: PromptItem, completions: Completion[]): Promise<RewardOutcome[]>;
  close(): Promise<void>;
}

/** A judge that calls a reward module's function on each completion: (completion text, prompt row). */
export class RewardJudge implements Judge {
  private constructor(private readonly host: RewardHost) {}

  static async open(o: RewardHostOptions): Promise<RewardJudge> {
    return new RewardJudge(await RewardHost.open(o));
  }

  get label(): string {
    return this.host.label;
  }

  async scoreGroup(prompt: PromptItem, completions: Completion[]): Promise<RewardOutcome[]> {
    const out: RewardOutcome[] = [];
    for (const c of completions) out.push(await this.host.score(c.text, prompt.row));
    return out;
  }

  close(): Promise<void> {
    return this.host.close();
  }
}

/**
 * A judge that scores a completion by a reward-model run: the mean log-probability that model gives
 * the completion's tokens (its own tokenization of the completion text, plus the end token when the
 * completion finished), given the prompt. Higher is better.
 */
export class ModelJudge implements Judge {
  constructor(
    private readonly engine: Engine,
    private readonly tokenizer: Tokenizer,
    readonly label: string,
  ) {}

  async scoreGroup(prompt: PromptItem, completions: Completion[]): Promise<RewardOutcome[]> {
    const p = promptIds(prompt.row.prompt, 'prompt', this.tokenizer);
    if (typeof p === 'string')
      return completions.map(() => ({ error: `judge model cannot read the prompt: ${p}`, kind: 'invalid' as const }));
    const end = p.chat ? this.tokenizer.special.end : this.tokenizer.special.eos;
    const ctxLen = this.engine.spec.context;
    const seqs = completions.map((c) => {
      let ids = this.tokenizer.encode(c.text);
      if (c.finished || !ids.length) ids = [...ids, end];
      const room = Math.max(1, ctxLen + 1 - p.ids.length);
      return { prompt: p.ids.slice(-ctxLen), completion: ids.slice(0, room) };
    });
    const b = seqBatch(seqs, this.tokenizer.special.pad);
    const lp = await this.engine.logprobs(b);
    return seqs.map((_, i) => {
      let sum = 0;
      let n = 0;
      for (let t = 0; t < b.seq; t++) {
        if (!b.weights[i * b.seq + t]) continue;
        sum += lp[i * b.seq + t]!;
        n++;
      }
      return { value: n ? sum / n : -Infinity };
    });
  }

  async close(): Promise<void> {
    await this.engine.dispose();
  }
}

/** A judge that asks a grader file's judge model: reward = its score in [0, 1]; no score is a counted error. */
export class GraderJudge implements Judge {
  constructor(private readonly grader: ModelGrader) {}

  get label(): string {
    return this.grader.label;
  }

  async scoreGroup(prompt: PromptItem, completions: Completion[]): Promise<RewardOutcome[]> {
    const grades = await this.grader.grade(completions.map((c) => ({ completion: c.text, row: prompt.row })));
    return grades.map((g) => ('error' in g ? { error: g.message, kind: 'invalid' as const } : { value: g.score }));
  }

  close(): Promise<void> {
    return this.grader.close();
  }
}

/** Opens the judge a lock names: its reward module, its grader file, or its reward-model run. */
export async function openJudge(lock: RecipeLock, r: OnlineDpoRecipe | GrpoRecipe): Promise<Judge> {
  if (lock.grader)
    return new GraderJudge(
      await ModelGrader.open(lock.grader.path, {
        judge: lock.grader.judge,
        engine: { backend: lock.backend, engine: lock.engine },
      }),
    );
  const cfg = r.stage === 'grpo' ? r.reward : r.judge.reward;
  if (cfg && lock.reward)
    return RewardJudge.open({
      path: lock.reward.path,
      export: lock.reward.export,
      timeoutMs: cfg.timeoutMs,
      loadTimeoutMs: cfg.loadTimeoutMs,
      memoryMb: cfg.memoryMb,
      network: cfg.network,
      readable: [lock.baseDir],
      where: r.stage === 'grpo' ? 'reward.module' : 'judge.reward.module',
    });
  if (lock.judge) {
    const { spec, weights, tokenizer } = await loadBase(lock.judge, 'judge.model');
    const engine = await createEngine({ backend: lock.backend, engine: lock.engine, spec, weights });
    return new ModelJudge(engine, tokenizer, `judge.model ${lock.judge.path}`);
  }
  throw new LatheError(
    `${r.stage}: the lock names no judge; set ${r.stage === 'grpo' ? 'reward' : 'judge.reward or judge.model'}`,
  );
}

/** Reward errors of a step, checked against the recipe's policy. */
export class RewardErrors {
  private noticed = new Set<string>();

  constructor(
    private readonly ctx: Pick<StageContext, 'event'>,
    private readonly label: string,
    private readonly policy: { onError: 'skip' | 'fail'; maxErrorRate: number } | undefined,
  ) {}

  /** Reports new kinds of error once as a notice; throws StageFailure when the policy says stop. */
  check(step: number, outcomes: RewardOutcome[]): number {
    const errs = outcomes.filter((o) => 'error' in o);
    const crash = errs.find((e) => e.kind === 'crashed');
    // A module that kills its own process is not a flaky answer: stop cleanly, with a checkpoint.
    if (crash) throw new StageFailure(`${this.label}: ${crash.error} at step ${step}`);
    for (const e of errs) {
      const kind = e.error.replace(/\d+/g, 'N');
      if (this.noticed.has(kind) || this.noticed.size >= 5) continue;
      this.noticed.add(kind);
      this.ctx.event({
        type: 'notice',
        step,
        message: `${this.label} ${e.error} (step ${step}; such completions are skipped and counted in reward_errors)`,
      });
    }
    if (!errs.length || !this.policy) return errs.length;
    const rate = errs.length / outcomes.length;
    if (this.policy.onError === 'fail' || rate > this.policy.maxErrorRate || errs.length === outcomes.length) {
      const why =
        this.policy.onError === 'fail' ? 'onError is "fail"' : `more than maxErrorRate ${this.policy.maxErrorRate}`;
      throw new StageFailure(
        `${this.label}: ${errs.length} of ${outcomes.length} completions failed at step ${step} (${why}; first: ${errs[0]!.error})`,
      );
    }
    return errs.length;
  }
}

/** Mean and (sample) standard deviation of finite values. */
export function meanStd(xs: number[]): { mean: number; std: number; n: number } {
  const v = xs.filter((x) => Number.isFinite(x));
  const n = v.length;
  if (!n) return { mean: NaN, std: NaN, n };
  const mean = v.reduce((a, b) => a + b, 0) / n;
  const std = n > 1 ? Math.sqrt(v.reduce((a, b) => a + (b - mean) ** 2, 0) / (n - 1)) : 0;
  return { mean, std, n };
}

/** Greedy completions of held-out prompts, judged: the mean score (errors left out and counted). */
export async function evaluateRollouts(
  engine: Engine,
  tokenizer: Tokenizer,
  judge: Judge,
  prompts: PromptItem[],
  o: Omit<RolloutOptions, 'stopIds' | 'temperature'>,
): Promise<{ mean: number; errors: number; length: number }> {
  const scores: number[] = [];
  let errors = 0;
  let length = 0;
  const rng = new Rng(0);
  for (const p of prompts) {
    const [c] = await sampleGroup(engine, tokenizer, p.ids, 1, { ...o, temperature: 0, stopIds: p.stop }, rng);
    length += c!.ids.length;
    const [s] = await judge.scoreGroup(p, [c!]);
    if ('value' in s!) scores.push(s.value);
    else errors++;
  }
  return { mean: meanStd(scores).mean, errors, length: prompts.length ? length / prompts.length : 0 };
}

/**
 * What GRPO and online DPO set up alike: the prompts (announced; none is an error), the judge and
 * its error policy, the example order and the sampling RNG (both from the checkpoint on resume;
 * salt keeps the stages' streams apart), the sampling options and the held-out evaluation.
 */
export async function openOnlineStage(ctx: StageContext<OnlineDpoRecipe | GrpoRecipe>, salt: number) {
  const r = ctx.lock.recipe;
  const cfg = r.train;
  const { train, val, manifest } = await preparePrompts(ctx);
  announce(ctx, manifest, 'prompts');
  if (!train.length) throw noRowsError(manifest, 'prompts');
  const judge = await openJudge(ctx.lock, r);
  const errors = new RewardErrors(ctx, judge.label, r.stage === 'grpo' ? r.reward : r.judge.reward);
  const order = new ExampleOrder(train.length, r.seed, salt, ctx.resume?.state.sampler);
  const saved = ctx.resume?.state.extra?.rng as number[] | undefined;
  const rng = saved ? new Rng(saved) : Rng.derive(r.seed, salt, 1);
  const sampling = {
    maxNewTokens: cfg.maxNewTokens,
    temperature: cfg.temperature,
    topK: cfg.topK,
    topP: cfg.topP,
    stopStrings: cfg.stop,
  };
  const evaluate = rolloutEvaluation(ctx, judge, val.slice(0, r.eval.batches * cfg.batchSize), sampling);
  return { train, judge, errors, order, rng, sampling, evaluate };
}

/**
 * The held-out evaluation of an online stage (GRPO, online DPO) as stage metrics: greedy
 * completions of the eval prompts judged; undefined when there are no eval prompts.
 */
export function rolloutEvaluation(
  ctx: Pick<StageContext, 'engine' | 'tokenizer'>,
  judge: Judge,
  prompts: PromptItem[],
  o: Omit<RolloutOptions, 'stopIds' | 'temperature'>,
): (() => Promise<Record<string, number>>) | undefined {
  if (!prompts.length) return undefined;
  return async () => {
    const e = await evaluateRollouts(ctx.engine, ctx.tokenizer, judge, prompts, o);
    const out: Record<string, number> = { eval_reward_errors: e.errors, eval_completion_length: round4(e.length) };
    if (Number.isFinite(e.mean)) out.eval_reward_mean = round4(e.mean);
    return out;
  };
}

/**
 * One rollout of an online stage: `n` samples per prompt from the policy, then the judge's
 * scores (NaN where judging failed, counted by `errors`).
 */
export async function rolloutAndJudge(
  ctx: Pick<StageContext, 'engine' | 'tokenizer'>,
  prompts: PromptItem[],
  n: number,
  sampling: Omit<RolloutOptions, 'stopIds'>,
  rng: Rng,
  judge: Judge,
  errors: RewardErrors,
  step: number,
): Promise<{ groups: Completion[][]; outcomes: RewardOutcome[][]; values: number[][]; stepErrors: number }> {
  const groups: Completion[][] = [];
  for (const p of prompts)
    groups.push(await sampleGroup(ctx.engine, ctx.tokenizer, p.ids, n, { ...sampling, stopIds: p.stop }, rng));
  const outcomes: RewardOutcome[][] = [];
  for (const [i, p] of prompts.entries()) outcomes.push(await judge.scoreGroup(p, groups[i]!));
  const stepErrors = errors.check(step, outcomes.flat());
  const values = outcomes.map((g) => g.map((o) => ('value' in o ? o.value : NaN)));
  return { groups, outcomes, values, stepErrors };
}
