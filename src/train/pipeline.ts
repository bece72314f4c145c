import { existsSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { lockRecipe, type PipelineLock, type RecipeLock } from '../recipe/lock.js';
import { writeFileAtomic } from '../runs/atomic.js';
import { RunDir, type Metric, type RunEvent, type RunSummary } from '../runs/rundir.js';
import { executeStage, type ExecuteOptions, type Sink } from './execute.js';
import type { StopSignal } from './loop.js';

/** The live side of a pipeline run: a Run, as seen from the training layer. */
export interface RunOutput {
  readonly id: string;
  pushMetric(m: Metric): void;
  pushEvent(e: RunEvent): void;
}

/**
 * Runs a pipeline: each stage in its own run directory (stages/<i>-<stage>/), starting from the
 * previous stage's final checkpoint. The pipeline's metrics.jsonl mirrors every stage's metrics with
 * a global `step` (the stages' steps laid end to end), `stage` and `stage_step`. A resume skips the
 * stages that completed and resumes the one that stopped; `stopAfter` counts global steps.
 */
export async function executePipeline(
  rd: RunDir,
  lock: PipelineLock,
  run: RunOutput,
  stop: StopSignal,
  opts: ExecuteOptions,
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
                engine: lock.engine,
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
