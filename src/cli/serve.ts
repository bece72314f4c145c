import { InvalidArgumentError, type Command } from 'commander';
import { engineFromEnv, resolveEngine } from '../engine/select.js';
import { serve } from '../serve/index.js';
import { readTokenFile, tokenFileIsShared } from '../worker/auth.js';
import { backendOption, engineOptions, positiveInt } from './options.js';

interface ServeCliOptions {
  port: number;
  host: string;
  tokenFile?: string;
  name?: string;
  maxBatch: number;
  backend?: 'cpu' | 'wasm' | 'webgpu' | 'auto';
  engine?: 'tfjs' | 'torch' | 'auto';
  device?: 'cpu' | 'cuda';
  dtype?: 'fp32' | 'bf16';
}

function portOption(v: string): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0 || n > 65535)
    throw new InvalidArgumentError(`--port must be an integer from 0 to 65535 (0: any free port), got "${v}"`);
  return n;
}

export function register(program: Command): void {
  const cmd = program
    .command('serve')
    .description(
      'Serve a run (its latest checkpoint) or a Hugging Face folder as an OpenAI-compatible API: GET /v1/models, ' +
        'POST /v1/completions, POST /v1/chat/completions (the chat template; stream: true as server-sent events). ' +
        'Concurrent requests are batched into one decode. Runs until Ctrl-C.',
    )
    .argument('<run-dir|hf-dir>', 'run directory or Hugging Face model folder')
    .option('--port <n>', 'port to listen on (0: any free port)', portOption, 8000)
    .option('--host <host>', 'address to bind (0.0.0.0: every interface)', '127.0.0.1')
    .option('--token-file <file>', 'require Authorization: Bearer <the token in this file> on every request')
    .option('--name <id>', 'model id clients name (default: the folder name)')
    .option('--max-batch <n>', 'completions decoding at once; more requests wait', positiveInt('--max-batch'), 16)
    .option('--backend <name>', 'tfjs backend: cpu, wasm, webgpu or auto', backendOption);
  for (const o of engineOptions) cmd.option(o.flags, o.about.replace(/; overrides.*/, ''), o.parse);
  cmd.action(async (from: string, o: ServeCliOptions) => {
    const token = o.tokenFile === undefined ? undefined : readTokenFile(o.tokenFile);
    if (o.tokenFile && tokenFileIsShared(o.tokenFile))
      console.error(`warning: ${o.tokenFile} is readable by other users (chmod 600 it)`);
    const env = engineFromEnv();
    const asked = o.engine ?? o.device ?? o.dtype ?? o.backend ?? env.engine;
    // No engine named: the run's own engine (an HF folder: tfjs).
    const engine = asked
      ? await resolveEngine({
          engine: o.engine ?? env.engine,
          device: o.device ?? env.device,
          dtype: o.dtype ?? env.dtype,
          backend: o.backend ?? env.backend,
        })
      : undefined;
    const s = await serve(from, { port: o.port, host: o.host, token, name: o.name, maxBatch: o.maxBatch, engine });
    console.error(`serving ${s.source}`);
    if (o.host !== '127.0.0.1' && o.host !== 'localhost' && o.host !== '::1' && !token)
      console.error(`warning: listening on ${o.host} without --token-file: anyone who can reach it can use the model`);
    // The URL on stdout's last line, for scripts.
    console.log(`model ${s.model} at ${s.url}`);
    await new Promise<void>((resolve) => {
      const stop = () => {
        process.off('SIGINT', stop);
        process.off('SIGTERM', stop);
        console.error('stopping');
        void s.close().then(resolve);
      };
      process.on('SIGINT', stop);
      process.on('SIGTERM', stop);
    });
  });
}
