import type { Command } from 'commander';
import { readTokenFile } from '../worker/auth.js';
import { WorkerClient } from '../worker/client.js';
import { readCa } from './submit.js';

export function register(program: Command): void {
  program
    .command('cancel')
    .description('Cancel a job on a worker: a queued one at once, a running one at its next step (with a checkpoint).')
    .argument('<job>', 'job id (see lathe jobs)')
    .requiredOption('--worker <url>', 'the worker, e.g. ws://gpu-node:8765')
    .requiredOption('--token-file <file>', "file holding the worker's token")
    .option('--ca <file>', 'trust this certificate (PEM) for a wss:// worker with a self-signed one')
    .option(
      '--interrupt',
      'stop it resumable instead (status interrupted; resume() of the worker executor, or the requeue message, continues it from its checkpoint)',
    )
    .action(async (job: string, o: { worker: string; tokenFile: string; ca?: string; interrupt?: boolean }) => {
      const client = await WorkerClient.connect(o.worker, {
        token: readTokenFile(o.tokenFile),
        ca: readCa(o.ca),
        reconnect: false,
      });
      try {
        const r = await client.cancel(job, o.interrupt ? 'interrupt' : 'cancel');
        console.log(`job ${job}: ${r.job.status} at step ${r.job.step}/${r.job.steps} (was ${r.was})`);
      } finally {
        client.close();
      }
    });
}
