import { basename, resolve } from 'node:path';
import { openModel } from '../engine/open.js';
import type { ResolvedEngine } from '../engine/select.js';
import { startServer, type ServerHandle, type ServerOptions } from './server.js';

export { startServer, type ServerHandle, type ServerOptions } from './server.js';
export { Scheduler, type GenerationRequest, type GenerationResult, type SchedulerStats } from './scheduler.js';
export { ApiError } from './openai.js';

/** Options of {@link serve}. */
export interface ServeOptions extends Partial<ServerOptions> {
  /** The engine to decode on (default: the run's own; tfjs for an HF folder). */
  engine?: ResolvedEngine;
}

/** A server of a model loaded from disk; close() also frees the model. */
export interface Serving extends ServerHandle {
  /** The run's checkpoint or the HF folder being served. */
  readonly source: string;
}

/**
 * Serves a run directory (its latest checkpoint) or a Hugging Face folder as an OpenAI-compatible API
 * on host:port (default 127.0.0.1:8000). The model id defaults to the folder's name.
 */
export async function serve(from: string, o: ServeOptions = {}): Promise<Serving> {
  const { model, tokenizer, ref } = await openModel(from, { where: 'serve', engine: o.engine });
  try {
    const handle = await startServer(model, tokenizer, { ...o, name: o.name ?? basename(resolve(from)) });
    return {
      ...handle,
      url: handle.url,
      port: handle.port,
      model: handle.model,
      scheduler: handle.scheduler,
      source: ref.checkpoint ?? ref.path,
      close: async () => {
        await handle.close();
        await model.dispose();
      },
    };
  } catch (e) {
    await model.dispose();
    throw e;
  }
}
