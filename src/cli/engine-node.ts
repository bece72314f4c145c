import type { Command } from 'commander';
import { LatheError } from '../errors.js';
import { TorchProcess } from '../engine/torch/process.js';
import { engineOptions, positiveInt, withResourceOptions, type ResourceFlags } from './options.js';

/**
 * `lathe engine-node`: one node's ranks of a multi-node torch run that another node controls (the
 * Kubernetes executor's pods other than the first run it). torchrun joins the c10d rendezvous; when
 * the run restarts from a checkpoint, it joins again.
 */
export function register(program: Command): void {
  withResourceOptions(program.command('engine-node'))
    .description("Run this node's ranks of a multi-node torch run controlled from another node (its trainer).")
    .option('--rdzv <host:port>', 'the c10d rendezvous (default LATHE_RDZV_ENDPOINT)')
    .option('--engine-addr <host:port>', "where the run's rank 0 reports (default LATHE_ENGINE_ADDR)")
    .option(engineOptions[1]!.flags, 'cpu or cuda', engineOptions[1]!.parse)
    .option(
      '--timeout-seconds <n>',
      'a collective that waits longer fails (default 600)',
      positiveInt('--timeout-seconds'),
    )
    .option('--once', 'stop when the ranks stop, instead of joining the next rendezvous')
    .option('--restart-delay <ms>', 'wait between rendezvous (default 2000)', positiveInt('--restart-delay'))
    .addHelpText('after', "\nThe run's secret comes from LATHE_ENGINE_SECRET (never on the command line).")
    .action(
      async (
        o: ResourceFlags & {
          rdzv?: string;
          engineAddr?: string;
          device?: 'cpu' | 'cuda';
          timeoutSeconds?: number;
          once?: boolean;
          restartDelay?: number;
        },
      ) => {
        const rdzv = o.rdzv ?? process.env.LATHE_RDZV_ENDPOINT;
        const engineAddr = o.engineAddr ?? process.env.LATHE_ENGINE_ADDR;
        const secret = process.env.LATHE_ENGINE_SECRET;
        if (!rdzv) throw new LatheError('engine-node: give --rdzv host:port (or LATHE_RDZV_ENDPOINT)', 2);
        if (!engineAddr) throw new LatheError('engine-node: give --engine-addr host:port (or LATHE_ENGINE_ADDR)', 2);
        if (!secret) throw new LatheError("engine-node: LATHE_ENGINE_SECRET must hold the run's secret", 2);
        process.env.LATHE_RDZV_ENDPOINT = rdzv;
        let stopping = false;
        const stop = new AbortController();
        for (const sig of ['SIGTERM', 'SIGINT'] as const)
          process.on(sig, () => {
            stopping = true;
            stop.abort();
          });
        for (;;) {
          const code = await TorchProcess.joinRun(
            {
              perNode: o.gpus ?? 1,
              nodes: o.nodes ?? 2,
              parallel: o.parallel ?? 'ddp',
              launcher: 'join',
              timeoutMs: (o.timeoutSeconds ?? 600) * 1000,
            },
            { device: o.device ?? 'cpu', engineAddr, secret, signal: stop.signal },
          );
          console.error(`engine-node: torchrun exited (code ${code})`);
          if (o.once || stopping) {
            process.exitCode = stopping ? 0 : code;
            return;
          }
          await new Promise((r) => setTimeout(r, o.restartDelay ?? 2000));
          if (stopping) return;
        }
      },
    );
}
