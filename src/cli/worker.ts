import { readFileSync } from 'node:fs';
import { InvalidArgumentError, type Command } from 'commander';
import { LatheError } from '../errors.js';
import { writeFileAtomic } from '../runs/atomic.js';
import { readTokenFile, tokenFileIsShared } from '../worker/auth.js';
import { MAX_CONNECTIONS, MAX_CONNECTIONS_PER_CLIENT, WorkerServer } from '../worker/server.js';
import { KEEPALIVE_MS, MIN_CHUNK_BYTES } from '../worker/protocol.js';
import { backendOption, engineOptions, positiveInt } from './options.js';

/** Commander parser for --listen HOST:PORT (port 0 picks a free one). */
export function listenOption(v: string): { host: string; port: number } {
  const m = /^(\[[^\]]+\]|[^:]+):(\d+)$/.exec(v);
  const port = m ? Number(m[2]) : NaN;
  if (!m || port > 65535)
    throw new InvalidArgumentError(`--listen must be HOST:PORT, e.g. 0.0.0.0:8765 or 127.0.0.1:0; got "${v}"`);
  return { host: m[1]!.replace(/^\[|\]$/g, ''), port };
}

function readPem(path: string, flag: string): Buffer {
  try {
    return readFileSync(path);
  } catch (e) {
    throw new LatheError(`${flag} ${path}: cannot read it (${(e as Error).message})`);
  }
}

interface WorkerCliOptions {
  listen: { host: string; port: number };
  tokenFile: string;
  stateDir: string;
  dataRoot?: string;
  allowModuleNetwork?: boolean;
  backend: 'cpu' | 'wasm' | 'webgpu' | 'auto';
  engine?: 'tfjs' | 'torch' | 'auto';
  device?: 'cpu' | 'cuda';
  dtype?: 'fp32' | 'bf16';
  cert?: string;
  key?: string;
  once?: boolean;
  announce?: string;
  maxFrameBytes?: number;
  chunkBytes?: number;
  maxConnections?: number;
  maxConnectionsPerClient?: number;
  keepaliveMs?: number;
}

export function register(program: Command): void {
  program
    .command('worker')
    .description(
      'Run a worker: a long-running process that trains submitted recipes on this machine (WebGPU when it has a GPU), one job at a time. ' +
        'Jobs, uploaded data and run directories live in --state-dir; a worker restarted on it resumes a cut-off job from its last checkpoint.',
    )
    .requiredOption(
      '--listen <host:port>',
      'address to listen on, e.g. 0.0.0.0:8765 (port 0: any free port)',
      listenOption,
    )
    .requiredOption(
      '--token-file <file>',
      'file holding the token clients must present (e.g. openssl rand -hex 32 > token)',
    )
    .option('--state-dir <dir>', 'jobs, uploaded data and run directories', 'lathe-worker')
    .option(
      '--data-root <dir>',
      'recipes may name files under this folder as worker:<path>; they never leave the cluster',
    )
    .option(
      '--backend <name>',
      'webgpu, wasm, cpu, or auto (the first that runs here, saying why it skips one)',
      backendOption,
      'auto',
    )
    .option(
      '--engine <name>',
      'engine for jobs whose recipe and client name none: tfjs (default), torch, or auto',
      engineOptions[0]!.parse,
    )
    .option('--device <name>', 'torch engine: default device for jobs (cpu or cuda)', engineOptions[1]!.parse)
    .option('--dtype <name>', 'torch engine: default precision for jobs (fp32 or bf16)', engineOptions[2]!.parse)
    .option('--cert <file>', 'TLS certificate (PEM): serve wss://')
    .option('--key <file>', 'TLS private key (PEM), with --cert')
    .option('--once', 'stop once the first job has ended and its clients have left (one worker per cluster job)')
    .option('--announce <file>', 'write the URL clients should use into this file once listening')
    .option('--max-frame-bytes <n>', 'largest frame accepted (default 4 MiB)', positiveInt('--max-frame-bytes'))
    .option(
      '--chunk-bytes <n>',
      `upload chunk size (default 1 MiB, at least ${MIN_CHUNK_BYTES})`,
      positiveInt('--chunk-bytes'),
    )
    .option(
      '--max-connections <n>',
      `most client connections at once; more are refused with a message saying so (default ${MAX_CONNECTIONS})`,
      positiveInt('--max-connections'),
    )
    .option(
      '--max-connections-per-client <n>',
      `most connections from one client address (default ${MAX_CONNECTIONS_PER_CLIENT})`,
      positiveInt('--max-connections-per-client'),
    )
    .option(
      '--keepalive-ms <ms>',
      `ping each client this often; one that answers no ping by the next is dropped (default ${KEEPALIVE_MS})`,
      positiveInt('--keepalive-ms'),
    )
    .option(
      '--allow-module-network',
      "let jobs' reward and scorer modules use the network when their recipe asks (reward.network); off by default",
    )
    .action(async (o: WorkerCliOptions) => {
      if (!!o.cert !== !!o.key) throw new LatheError(`${o.cert ? '--key' : '--cert'}: TLS needs both --cert and --key`);
      const token = readTokenFile(o.tokenFile);
      if (tokenFileIsShared(o.tokenFile))
        console.error(`warning: --token-file ${o.tokenFile} is readable by other users; chmod 600 it`);
      const server = await WorkerServer.start({
        host: o.listen.host,
        port: o.listen.port,
        token,
        stateDir: o.stateDir,
        dataRoot: o.dataRoot,
        backend: o.backend,
        engine: { engine: o.engine, device: o.device, dtype: o.dtype },
        tls: o.cert && o.key ? { cert: readPem(o.cert, '--cert'), key: readPem(o.key, '--key') } : undefined,
        once: o.once,
        maxFrameBytes: o.maxFrameBytes,
        chunkBytes: o.chunkBytes,
        maxConnections: o.maxConnections,
        maxConnectionsPerClient: o.maxConnectionsPerClient,
        keepaliveMs: o.keepaliveMs,
        moduleNetwork: o.allowModuleNetwork,
      });
      if (o.announce) await writeFileAtomic(o.announce, server.url + '\n');
      let stopping = 0;
      const stop = () => {
        if (++stopping > 1) process.exit(130);
        console.error(
          'stopping: the running job stops at its next step with a checkpoint and resumes when the worker starts again (signal again to exit now)',
        );
        void server.close();
      };
      process.on('SIGINT', stop);
      process.on('SIGTERM', stop);
      await server.finished;
      // No process.exit: close() releases every socket and timer, and the wasm backend's threads are
      // unref'd, so Node ends by itself (the tests check it does, on cpu and on wasm).
      process.off('SIGINT', stop);
      process.off('SIGTERM', stop);
    });
}
