import { summarizeGates } from '../eval/gates.js';
import { existsSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { useBackend } from '../backend/select.js';
import { trainPostTokenizer } from '../data/post.js';
import { prepareData } from '../data/prepare.js';
import { LatheError } from '../errors.js';
import { LanguageModel } from '../model/model.js';
import { modelSpec } from '../model/spec.js';
import { isPipelineLock, lockRecipe, type AnyLock, type PipelineLock, type RecipeLock } from '../recipe/lock.js';
import type { PostRecipe } from '../recipe/schema.js';
import { loadCheckpoint } from '../runs/checkpoint.js';
import { registerLive } from '../runs/live.js';
import { Run } from '../runs/run.js';
import { RunDir, type Metric, type RunEvent, type RunSummary } from '../runs/rundir.js';
import { writeFileAtomic } from '../runs/safetensors.js';
import { Tokenizer } from '../tokenizer/index.js';
import { loadBase } from '../train/base.js';
import { dpo } from '../train/dpo.js';
import { grpo } from '../train/grpo.js';
import { onlineDpo } from '../train/online-dpo.js';
import { pretrain, type StageContext, type StageResult, type StopSignal } from '../train/pretrain.js';
import { sft } from '../train/sft.js';
import type { PostStageContext } from '../train/stage.js';
import type { Executor, StartOptions } from './executor.js';

/** Where a stage's metrics and events go: its own run directory, plus a live Run (or a pipeline's mirror). */
interface Sink {
  emit(m: Metric): void;
  event(e: Omit<RunEvent, 'time'>): void;
  /** Metrics already in the run directory, replayed on resume. */
  replay(ms: Metric[]): void;
  /** Metrics after this step are dropped (a resume redoes them). */
  truncate?(step: number): Promise<void>;
}

function runSink(rd: RunDir, run: Run): Sink {
  return {
    emit: (m) => {
      rd.appendMetric(m);
      run.pushMetric(m);
    },
    event: (e) => run.pushEvent(rd.appendEvent(e)),
    replay: (ms) => ms.forEach((m) => run.pushMetric(m)),
  };
}

/** Runs one stage in this process, writing its run directory as it goes. */
async function executeStage(
  rd: RunDir,
  lock: RecipeLock,
  runId: string,
  sink: Sink,
  stop: StopSignal,
  opts: StartOptions & { resume: boolean },
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

/** Reads a run directory's lock, a stage's or a pipeline's. */
function readAnyLock(rd: RunDir): AnyLock {
  return rd.readLock() as AnyLock;
}

/** Creates a run directory for a lock (a stage run or a pipeline). */
async function createRunDir(lock: AnyLock, out?: string): Promise<RunDir> {
  return RunDir.create(lock, out);
}

/**
 * Runs a pipeline: each stage in its own run directory (stages/<i>-<stage>/), starting from the
 * previous stage's final checkpoint. The pipeline's metrics.jsonl mirrors every stage's metrics with
 * a global `step` (the stages' steps laid end to end), `stage` and `stage_step`. A resume skips the
 * stages that completed and resumes the one that stopped; `stopAfter` counts global steps.
 */
async function executePipeline(
  rd: RunDir,
  lock: PipelineLock,
  run: Run,
  stop: StopSignal,
  opts: StartOptions & { resume: boolean },
): Promise<RunSummary> {
  const t0 = performance.now();
  const stagesDir = join(rd.path, 'stages');
  await mkdir(stagesDir, { recursive: true });
  const stages: { index: number; stage: string; dir: string; status: string; step: number; steps: number }[] = [];
  let offset = 0;
  let prevDir: string | undefined;
  let last: RunSummary | undefined;
  let tokens = 0;
  let seconds = 0;
  const event = (e: Omit<RunEvent, 'time'>) => run.pushEvent(rd.appendEvent(e));
  const summary = (status: RunSummary['status'], error?: string): RunSummary => ({
    id: run.id,
    lockId: lock.id,
    stage: 'pipeline',
    status,
    step: offset + (status === 'completed' ? 0 : (last?.step ?? 0)),
    steps: lock.recipe.train.steps,
    loss: last?.loss,
    eval_loss: last?.eval_loss,
    tokens,
    seconds: Math.round(seconds * 1000) / 1000,
    backend: lock.backend,
    lathe: lock.lathe,
    wall_seconds: Math.round(performance.now() - t0) / 1000,
    error,
    stages,
  });
  // On resume, finished stages replay what they wrote; the resumed stage truncates and replays its own part.
  if (!opts.resume)
    event({
      type: 'started',
      step: 0,
      message: `pipeline of ${lock.recipe.stages.length} stages: ${lock.recipe.stages.map((s) => s.stage).join(' → ')}`,
    });
  const replayed = opts.resume ? await rd.readMetrics() : [];
  try {
    for (const [i, st] of lock.recipe.stages.entries()) {
      const dir = join(stagesDir, `${i}-${st.stage}`);
      const sub = new RunDir(dir);
      const done = existsSync(sub.lockPath) ? await sub.readSummary() : undefined;
      if (done?.status === 'completed') {
        stages.push({ index: i, stage: st.stage, dir, status: 'completed', step: done.step, steps: done.steps });
        replayed.filter((m) => m.stage_index === i).forEach((m) => run.pushMetric(m));
        offset += st.train.steps;
        tokens += done.tokens;
        seconds += done.seconds;
        prevDir = dir;
        last = done;
        continue;
      }
      if (opts.stopAfter !== undefined && opts.stopAfter <= offset) stop.reason ??= 'interrupt';
      if (stop.reason) {
        event({
          type: stop.reason === 'cancel' ? 'cancelled' : 'interrupted',
          step: offset,
          message: `${stop.reason === 'cancel' ? 'cancelled' : 'interrupted'} before stage ${i} (${st.stage})`,
        });
        last = undefined;
        const s = summary(stop.reason === 'cancel' ? 'cancelled' : 'interrupted');
        await rd.writeSummary(s);
        return s;
      }
      const resumeStage = existsSync(sub.lockPath);
      let stageLock: RecipeLock;
      if (resumeStage) stageLock = sub.readLock();
      else {
        const base = i === 0 ? undefined : prevDir;
        stageLock =
          i === 0
            ? lock.stages[0]!
            : await lockRecipe({ ...st, backend: lock.backend, from: base } as typeof st, {
                baseDir: lock.baseDir,
                backend: lock.backend,
              });
        await mkdir(dir, { recursive: true });
        await RunDir.create(stageLock, dir);
        event({
          type: 'notice',
          step: offset,
          message: `stage ${i} (${st.stage}) starts${base ? ` from ${base}` : ''}`,
          stage_index: i,
        });
      }
      const at = offset;
      last = undefined; // a stage that throws has no summary of its own here
      const stageSink: Sink = {
        emit: (m) => {
          sub.appendMetric(m);
          const g: Metric = { ...m, step: at + m.step, stage_step: m.step, stage_index: i };
          rd.appendMetric(g);
          run.pushMetric(g);
        },
        event: (e) => {
          sub.appendEvent(e);
          event({
            ...e,
            step: typeof e.step === 'number' ? at + e.step : undefined,
            message: `${st.stage}: ${e.message}`,
            stage: st.stage,
            stage_index: i,
          });
        },
        replay: (ms) =>
          ms.forEach((m) => run.pushMetric({ ...m, step: at + m.step, stage_step: m.step, stage_index: i })),
        truncate: async (step) => {
          const kept = (await rd.readMetrics()).filter(
            (m) =>
              (m.stage_index as number) < i || ((m.stage_index as number) === i && (m.stage_step as number) <= step),
          );
          await writeFileAtomic(rd.metricsPath, kept.map((m) => JSON.stringify(m) + '\n').join(''));
        },
      };
      const stopAfter = opts.stopAfter !== undefined ? opts.stopAfter - offset : undefined;
      const s = await executeStage(sub, stageLock, `${run.id}/${i}-${st.stage}`, stageSink, stop, {
        ...opts,
        stopAfter: stopAfter !== undefined && stopAfter < st.train.steps ? stopAfter : undefined,
        resume: resumeStage,
      });
      stages.push({ index: i, stage: st.stage, dir, status: s.status, step: s.step, steps: s.steps });
      tokens += s.tokens;
      seconds += s.seconds;
      last = s;
      if (s.status !== 'completed') {
        const p = summary(s.status, s.error);
        await rd.writeSummary(p);
        return p;
      }
      offset += st.train.steps;
      prevDir = dir;
    }
    last = undefined;
    event({
      type: 'completed',
      step: offset,
      message: `pipeline completed: ${stages.map((s) => `${s.stage} ${s.step} steps`).join(', ')}`,
    });
    const final = {
      ...summary('completed'),
      loss: stages.length ? (await new RunDir(stages.at(-1)!.dir).readSummary())?.loss : undefined,
    };
    await rd.writeSummary(final);
    return final;
  } catch (e) {
    const message = e instanceof Error ? e.message : String(e);
    event({ type: 'failed', message });
    await rd.writeSummary(summary('failed', message));
    throw e;
  }
}

function launch(rd: RunDir, lock: AnyLock, opts: StartOptions & { resume: boolean }): Run {
  const stop: StopSignal = {};
  let resolveExec!: (p: Promise<RunSummary>) => void;
  const exec = new Promise<RunSummary>((r) => (resolveExec = r)).then((p) => p);
  const run = new Run(rd, lock, exec, {
    interrupt: () => void (stop.reason ??= 'interrupt'),
    cancel: () => void (stop.reason = 'cancel'),
  });
  resolveExec(
    isPipelineLock(lock)
      ? executePipeline(rd, lock, run, stop, opts)
      : executeStage(rd, lock, run.id, runSink(rd, run), stop, opts),
  );
  registerLive(run);
  return run;
}

/** The executor that trains in this process (the notebook kernel or the CLI). */
export const localExecutor: Executor = {
  name: 'local',
  async start(lock, opts) {
    const rd = await createRunDir(lock, opts.out);
    return launch(rd, lock, { ...opts, resume: false });
  },
  async resume(runDir, opts = {}) {
    const rd = RunDir.open(runDir);
    const lock = readAnyLock(rd);
    const summary = await rd.readSummary();
    if (summary?.status === 'completed')
      throw new LatheError(`${runDir}: run already completed ${summary.step} steps; nothing to resume`);
    return launch(rd, lock, { ...opts, resume: true });
  },
};
