// The `runs` namespace: run directories, resume, reproduce, generate (src/runs), and serving a run.
import { serve as serveModel, type ServeOptions, type Serving } from '../serve/index.js';
import type { Run } from '../runs/run.js';

export * from '../runs/index.js';
export type { ServeOptions, Serving } from '../serve/index.js';

/**
 * Serves a run (a Run or its directory; an HF folder works too) as an OpenAI-compatible API on
 * 127.0.0.1, on a free port unless `port` is given: `const s = await runs.serve(run)`, then any
 * OpenAI client at `s.url` with model `s.model`; `await s.close()` stops it.
 */
export function serve(run: Run | string, opts: ServeOptions = {}): Promise<Serving> {
  return serveModel(typeof run === 'string' ? run : run.dir.path, { port: 0, ...opts });
}
