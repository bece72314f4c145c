import type { Command } from 'commander';
import { reproduce } from '../runs/index.js';

export function register(program: Command): void {
  program
    .command('reproduce')
    .description("Re-run a run's lock; exit 0 when the metrics are bit-identical, 1 with the first diverging step.")
    .argument('<run-dir>', 'run directory')
    .option('--out <dir>', 'where to write the re-run (default: <run-dir>.reproduce-<time>)')
    .action(async (dir: string, o: { out?: string }) => {
      const res = await reproduce(dir, { out: o.out });
      if (res.identical) {
        console.log(
          `identical: ${(await res.run.dir.readMetrics()).length} metric lines match ${dir} to the bit (re-run in ${res.run.dir.path})`,
        );
        process.exitCode = 0;
      } else if (res.missing) {
        const bad = res.corruptLines?.length ? `; lines ${res.corruptLines.join(', ')} of it do not parse` : '';
        console.log(
          `${dir}/metrics.jsonl is missing steps ${res.missing.join(', ')}${bad}: it cannot be compared there (re-run in ${res.run.dir.path})`,
        );
        process.exitCode = 1;
      } else {
        const d = res.divergence!;
        console.log(
          `diverged at step ${d.step}: ${d.key} expected ${JSON.stringify(d.expected)}, got ${JSON.stringify(d.actual)} (re-run in ${res.run.dir.path})`,
        );
        process.exitCode = 1;
      }
    });
}
