import type { Command } from 'commander';
import { formatTable } from '../data/table.js';
import { readTokenFile } from '../worker/auth.js';
import { WorkerClient } from '../worker/client.js';
import { readCa } from './submit.js';

export function register(program: Command): void {
  program
    .command('jobs')
    .description("List a worker's jobs, oldest first: id, status, step, loss, backend.")
    .requiredOption('--worker <url>', 'the worker, e.g. ws://gpu-node:8765')
    .requiredOption('--token-file <file>', "file holding the worker's token")
    .option('--ca <file>', 'trust this certificate (PEM) for a wss:// worker with a self-signed one')
    .option('--json', 'print the jobs as JSON')
    .action(async (o: { worker: string; tokenFile: string; ca?: string; json?: boolean }) => {
      const client = await WorkerClient.connect(o.worker, {
        token: readTokenFile(o.tokenFile),
        ca: readCa(o.ca),
        reconnect: false,
      });
      try {
        const jobs = await client.jobs();
        if (o.json) {
          process.stdout.write(JSON.stringify(jobs) + '\n');
          return;
        }
        if (!jobs.length) {
          console.log(`no jobs on ${o.worker}`);
          return;
        }
        const rows = jobs.map((j) => [
          j.id,
          j.status,
          j.name,
          j.stage,
          `${j.step}/${j.steps}`,
          j.loss === undefined ? '-' : j.loss.toFixed(4),
          j.backend,
          j.restarts,
          j.createdAt.slice(0, 19).replace('T', ' '),
        ]);
        console.log(
          formatTable(['job', 'status', 'name', 'stage', 'step', 'loss', 'backend', 'restarts', 'created'], rows),
        );
      } finally {
        client.close();
      }
    });
}
