import { existsSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { trainPostTokenizer } from '../data/post.js';
import { prepareData } from '../data/prepare.js';
import { useBackend } from '../engine/tfjs/backend.js';
import { LanguageModel } from '../engine/tfjs/model.js';
import { LatheError } from '../errors.js';
import { summarizeGates } from '../eval/gates.js';
import { modelSpec } from '../model/spec.js';
import type { RecipeLock } from '../recipe/lock.js';
import type { PostRecipe } from '../recipe/schema.js';
import { loadCheckpoint } from '../runs/checkpoint.js';
import type { RunDir, Metric, RunEvent, RunSummary } from '../runs/rundir.js';
import { Tokenizer } from '../tokenizer/index.js';
import { loadBase } from './base.js';
import { dpo } from './dpo.js';
import { grpo } from './grpo.js';
import { onlineDpo } from './online-dpo.js';
import { pretrain, type StageContext, type StageResult, type StopSignal } from './pretrain.js';
import { sft } from './sft.js';
import type { PostStageContext } from './stage.js';

/** How {@link executeStage} runs: fresh or resumed, and where to stop early. */
export interface ExecuteOptions {
  /** Continue from the last checkpoint (else a fresh start). */
  resume: boolean;
  /** Stop as if interrupted after this step (a checkpoint is written). */
  stopAfter?: number;
}

/** Where a stage's metrics and events go: its own run directory, plus a live Run (or a pipeline's mirror). */
export interface Sink {
  emit(m: Metric): void;
  event(e: Omit<RunEvent, 'time'>): void;
  /** Metrics already in the run directory, replayed on resume. */
  replay(ms: Metric[]): void;
  /** Metrics after this step are dropped (a resume redoes them). */
  truncate?(step: number): Promise<void>;
}

/** Runs one stage in this process, writing its run directory as it goes. */
export async function executeStage(
  rd: RunDir,
  lock: RecipeLock,
  runId: string,
  sink: Sink,
  stop: StopSignal,
  opts: ExecuteOptions,
): Promise<RunSummary> {
  const { emit, event } = sink;
  const t0 = performance.now();
  let model: LanguageModel | undefined;
  try {
    await useBackend(lock.backend);
    let result: StageResult;
    if (lock.recipe.stage === 'pretrain') {
      const prepared = await prepareData(lock, rd.dataDir, { onNotice: (m) => event({ type: 'notice', message: m }) });
      if (!opts.resume) {
        const c = prepared.clean;
        event({
          type: 'prepared',
          message: `data ready: ${prepared.sources.map((s) => `${s.name} ${s.tokens.train} train / ${s.tokens.val} held-out tokens`).join(', ')}; ${c.exactDuplicates + c.nearDuplicates} duplicates removed, ${prepared.rejected} lines rejected`,
          seconds: prepared.seconds,
        });
      }
      const tokenizer = await Tokenizer.load(prepared.tokenizerPath);
      const spec = modelSpec(lock.recipe.model, tokenizer.vocabSize);
      let resume: StageContext['resume'];
      const last = opts.resume ? (await rd.checkpointSteps()).at(-1) : undefined;
      if (last !== undefined) {
        const ck = await loadCheckpoint(rd.checkpointPath(last));
        if (ck.state.lockId !== lock.id)
          throw new LatheError(
            `${rd.checkpointPath(last)}: checkpoint belongs to lock ${ck.state.lockId}, not ${lock.id}`,
          );
        model = LanguageModel.fromWeights(spec, ck.weights);
        resume = { state: ck.state, moments: ck.moments };
        await rd.truncateMetricsAfter(last);
        await sink.truncate?.(last);
        sink.replay(await rd.readMetrics());
        event({ type: 'resumed', step: last, message: `resumed from step ${last}` });
      } else {
        model = LanguageModel.init(spec, lock.recipe.seed);
        if (opts.resume) {
          await rd.truncateMetricsAfter(0);
          await sink.truncate?.(0);
          event({ type: 'resumed', step: 0, message: 'no checkpoint yet; starting from step 0' });
        } else
          event({
            type: 'started',
            step: 0,
            message: `training ${model.numParams.toLocaleString('en-US')} parameters on ${lock.backend}`,
            params: model.numParams,
          });
      }
      result = await pretrain({
        lock,
        rd,
        model,
        tokenizer,
        prepared,
        resume,
        stop,
        stopAfter: opts.stopAfter,
        emit,
        event,
      });
    } else {
      const post = await startPost(rd, lock as RecipeLock & { recipe: PostRecipe }, sink, opts.resume);
      model = post.model;
      const ctx: PostStageContext = {
        ...post,
        lock: lock as RecipeLock & { recipe: PostRecipe },
        rd,
        stop,
        stopAfter: opts.stopAfter,
        emit,
        event,
      };
      const r = lock.recipe;
      result =
        r.stage === 'sft'
          ? await sft(ctx as PostStageContext<typeof r>)
          : r.stage === 'dpo'
            ? await dpo(ctx as PostStageContext<typeof r>)
            : r.stage === 'online-dpo'
              ? await onlineDpo(ctx as PostStageContext<typeof r>)
              : await grpo(ctx as PostStageContext<typeof r>);
    }
    if (result.status === 'completed')
      event({ type: 'completed', step: result.step, message: `completed ${result.step} steps` });
    const summary: RunSummary = {
      id: runId,
      lockId: lock.id,
      stage: lock.recipe.stage,
      status: result.status,
      step: result.step,
      steps: lock.recipe.train.steps,
      loss: result.loss,
      eval_loss: result.evalLoss,
      tokens: result.tokens,
      seconds: Math.round(result.seconds * 1000) / 1000,
      tokens_per_s: result.seconds > 0 ? Math.round(result.tokens / result.seconds) : undefined,
      params: model.numParams,
      backend: lock.backend,
      lathe: lock.lathe,
      wall_seconds: Math.round(performance.now() - t0) / 1000,
      error: result.error,
    };
    const gates = summarizeGates(lock.recipe.eval.gates, await rd.readMetrics());
    if (gates) summary.gates = gates;
    await rd.writeSummary(summary);
    return summary;
  } catch (e) {
    const message = e instanceof Error ? e.message : String(e);
    event({ type: 'failed', message });
    const metrics = await rd.readMetrics();
    await rd.writeSummary({
      id: runId,
      lockId: lock.id,
      stage: lock.recipe.stage,
      status: 'failed',
      step: metrics.at(-1)?.step ?? 0,
      steps: lock.recipe.train.steps,
      tokens: Number(metrics.at(-1)?.tokens ?? 0),
      seconds: 0,
      backend: lock.backend,
      lathe: lock.lathe,
      error: message,
    });
    throw e;
  } finally {
    model?.dispose();
  }
}

/** A post-training stage's starting point: the base (or a fresh model), or the checkpoint being resumed. */
async function startPost(
  rd: RunDir,
  lock: RecipeLock & { recipe: PostRecipe },
  sink: Sink,
  resuming: boolean,
): Promise<Pick<PostStageContext, 'model' | 'tokenizer' | 'reference' | 'resume' | 'fresh'>> {
  const r = lock.recipe;
  await mkdir(rd.dataDir, { recursive: true });
  const tokPath = join(rd.dataDir, 'tokenizer.json');
  const reference = async () => {
    if (lock.base) return (await loadBase(lock.base)).model;
    const tok = await Tokenizer.load(tokPath);
    return LanguageModel.init(modelSpec(r.model, tok.vocabSize), r.seed);
  };
  const last = resuming ? (await rd.checkpointSteps()).at(-1) : undefined;
  if (last !== undefined && existsSync(tokPath)) {
    const tokenizer = await Tokenizer.load(tokPath);
    const ck = await loadCheckpoint(rd.checkpointPath(last));
    if (ck.state.lockId !== lock.id)
      throw new LatheError(`${rd.checkpointPath(last)}: checkpoint belongs to lock ${ck.state.lockId}, not ${lock.id}`);
    const model = LanguageModel.fromWeights(modelSpec(r.model, tokenizer.vocabSize), ck.weights);
    await rd.truncateMetricsAfter(last);
    await sink.truncate?.(last);
    sink.replay(await rd.readMetrics());
    sink.event({ type: 'resumed', step: last, message: `resumed from step ${last}` });
    return { model, tokenizer, reference, resume: { state: ck.state, moments: ck.moments }, fresh: false };
  }
  if (resuming) {
    await rd.truncateMetricsAfter(0);
    await sink.truncate?.(0);
    sink.event({ type: 'resumed', step: 0, message: 'no checkpoint yet; starting from step 0' });
  }
  let model: LanguageModel;
  let tokenizer: Tokenizer;
  let from: string;
  if (lock.base) {
    ({ model, tokenizer } = await loadBase(lock.base));
    from = `from ${lock.base.kind === 'run' ? `${lock.base.checkpoint}` : `the Hugging Face model ${lock.base.path}`}`;
  } else {
    tokenizer = lock.tokenizer ? await Tokenizer.load(lock.tokenizer.path) : await trainPostTokenizer(lock);
    model = LanguageModel.init(modelSpec(r.model, tokenizer.vocabSize), r.seed);
    from = 'from a fresh model (no `from`)';
  }
  await tokenizer.save(tokPath);
  sink.event({
    type: 'started',
    step: 0,
    message: `${r.stage} ${from}: ${model.numParams.toLocaleString('en-US')} parameters on ${lock.backend}`,
    params: model.numParams,
  });
  return { model, tokenizer, reference, fresh: !resuming };
}
