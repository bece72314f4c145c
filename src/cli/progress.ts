import cliProgress from 'cli-progress';
import type { Run } from '../runs/run.js';
import type { Metric } from '../runs/rundir.js';

/** How the train/resume verbs report: a bar on a TTY, plain lines otherwise, or JSON lines. */
export type ProgressMode = 'bar' | 'plain' | 'json';

const fmt = (x: number | undefined, d = 4) => (x === undefined ? '-' : Number(x).toPrecision(d));

/** Streams a run's progress to the terminal until it ends. */
export async function followRun(run: Run, mode: ProgressMode, totalSteps: number): Promise<void> {
  if (mode === 'json') {
    run.onEvent((e) => process.stdout.write(JSON.stringify({ event: e }) + '\n'));
    for await (const m of run.metrics()) process.stdout.write(JSON.stringify(m) + '\n');
    return;
  }
  if (mode === 'plain') {
    run.onEvent((e) => console.log(`[${e.type}] ${e.message}`));
    let last = 0;
    for await (const m of run.metrics()) {
      // Plain logs: about 20 lines per run, plus every eval.
      if (
        m.step - last >= Math.max(1, Math.floor(totalSteps / 20)) ||
        m.eval_loss !== undefined ||
        m.step === totalSteps
      ) {
        last = m.step;
        console.log(line(m, totalSteps));
      }
    }
    return;
  }
  const bar = new cliProgress.SingleBar(
    {
      format: ' {bar} {value}/{total} | loss {loss} | eval {eval} | {tps} tok/s | ETA {eta_formatted}',
      hideCursor: true,
      etaBuffer: 20,
    },
    cliProgress.Presets.shades_classic,
  );
  const start = run.metricsSoFar.at(-1)?.step ?? 0;
  bar.start(totalSteps, start, { loss: '-', eval: '-', tps: '-' });
  run.onEvent((e) => {
    // Clear the bar's line, print above it; the next update redraws the bar.
    if (e.type !== 'checkpoint') process.stdout.write(`\r\x1b[K[${e.type}] ${e.message}\n`);
  });
  let evalLoss: number | undefined;
  for await (const m of run.metrics()) {
    if (m.eval_loss !== undefined) evalLoss = m.eval_loss;
    bar.update(m.step, { loss: fmt(m.loss), eval: fmt(evalLoss), tps: Math.round(m.tokens_per_s ?? 0) });
  }
  bar.stop();
}

function line(m: Metric, total: number): string {
  const parts = [`step ${m.step}/${total}`, `loss ${fmt(m.loss)}`];
  if (m.eval_loss !== undefined) parts.push(`eval_loss ${fmt(m.eval_loss)}`);
  parts.push(`lr ${fmt(m.lr, 3)}`, `grad_norm ${fmt(m.grad_norm, 3)}`, `${Math.round(m.tokens_per_s ?? 0)} tok/s`);
  return parts.join(' | ');
}
