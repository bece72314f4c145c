import { useBackend } from '../backend/select.js';
import { prepareData } from '../data/prepare.js';
import { LatheError } from '../errors.js';
import { LanguageModel } from '../model/model.js';
import { modelSpec } from '../model/spec.js';
import type { RecipeLock } from '../recipe/lock.js';
import { loadCheckpoint } from '../runs/checkpoint.js';
import { registerLive } from '../runs/live.js';
import { Run } from '../runs/run.js';
import { RunDir, type Metric, type RunEvent, type RunSummary } from '../runs/rundir.js';
import { Tokenizer } from '../tokenizer/index.js';
import { pretrain, type StageContext, type StopSignal } from '../train/pretrain.js';
import type { Executor, StartOptions } from './executor.js';

/** Runs a stage in this process, writing the run directory as it goes. */
async function execute(rd: RunDir, lock: RecipeLock, run: Run, stop: StopSignal, opts: StartOptions & { resume: boolean }): Promise<RunSummary> {
  const emit = (m: Metric) => {
    rd.appendMetric(m);
    run.pushMetric(m);
  };
  const event = (e: Omit<RunEvent, 'time'>) => run.pushEvent(rd.appendEvent(e));
  const t0 = performance.now();
  let model: LanguageModel | undefined;
  try {
    await useBackend(lock.backend);
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
    if (opts.resume) {
      const steps = await rd.checkpointSteps();
      const last = steps.at(-1);
      if (last === undefined) {
        model = LanguageModel.init(spec, lock.recipe.seed);
        await rd.truncateMetricsAfter(0);
        event({ type: 'resumed', step: 0, message: 'no checkpoint yet; starting from step 0' });
      } else {
        const ck = await loadCheckpoint(rd.checkpointPath(last));
        if (ck.state.lockId !== lock.id) throw new LatheError(`${rd.checkpointPath(last)}: checkpoint belongs to lock ${ck.state.lockId}, not ${lock.id}`);
        model = LanguageModel.fromWeights(spec, ck.weights);
        resume = { state: ck.state, moments: ck.moments };
        await rd.truncateMetricsAfter(last);
        for (const m of await rd.readMetrics()) run.pushMetric(m);
        event({ type: 'resumed', step: last, message: `resumed from step ${last}` });
      }
    } else {
      model = LanguageModel.init(spec, lock.recipe.seed);
      event({ type: 'started', step: 0, message: `training ${model.numParams.toLocaleString('en-US')} parameters on ${lock.backend}`, params: model.numParams });
    }
    const result = await pretrain({ lock, rd, model, tokenizer, prepared, resume, stop, stopAfter: opts.stopAfter, emit, event });
    if (result.status === 'completed') event({ type: 'completed', step: result.step, message: `completed ${result.step} steps` });
    const summary: RunSummary = {
      id: run.id,
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
    await rd.writeSummary(summary);
    return summary;
  } catch (e) {
    const message = e instanceof Error ? e.message : String(e);
    event({ type: 'failed', message });
    const metrics = run.metricsSoFar;
    await rd.writeSummary({
      id: run.id, lockId: lock.id, stage: lock.recipe.stage, status: 'failed', step: metrics.at(-1)?.step ?? 0, steps: lock.recipe.train.steps,
      tokens: Number(metrics.at(-1)?.tokens ?? 0), seconds: 0, backend: lock.backend, lathe: lock.lathe, error: message,
    });
    throw e;
  } finally {
    model?.dispose();
  }
}

function launch(rd: RunDir, lock: RecipeLock, opts: StartOptions & { resume: boolean }): Run {
  const stop: StopSignal = {};
  let resolveExec!: (p: Promise<RunSummary>) => void;
  const exec = new Promise<RunSummary>((r) => (resolveExec = r)).then((p) => p);
  const run = new Run(rd, lock, exec, {
    interrupt: () => void (stop.reason ??= 'interrupt'),
    cancel: () => void (stop.reason = 'cancel'),
  });
  resolveExec(execute(rd, lock, run, stop, opts));
  registerLive(run);
  return run;
}

/** The executor that trains in this process (the notebook kernel or the CLI). */
export const localExecutor: Executor = {
  name: 'local',
  async start(lock, opts) {
    const rd = await RunDir.create(lock, opts.out);
    return launch(rd, lock, { ...opts, resume: false });
  },
  async resume(runDir, opts = {}) {
    const rd = RunDir.open(runDir);
    const lock = rd.readLock();
    const summary = await rd.readSummary();
    if (summary?.status === 'completed') throw new LatheError(`${runDir}: run already completed ${summary.step} steps; nothing to resume`);
    return launch(rd, lock, { ...opts, resume: true });
  },
};
