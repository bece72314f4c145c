import { LatheError } from '../errors.js';
import { ResourcesSchema, type Resources } from './schema.js';

/** What a run may ask for over its recipe's resources (CLI --gpus, --nodes, --parallel). */
export interface ResourceRequest {
  gpus?: number;
  nodes?: number;
  parallel?: Resources['parallel'];
}

/** A recipe's resources with a run's overrides (undefined when neither asks for any). */
export function resourcesFor(opts: ResourceRequest, r: Resources | undefined): Resources | undefined {
  if (!r && opts.gpus === undefined && opts.nodes === undefined && opts.parallel === undefined) return r;
  const out = ResourcesSchema.parse({ ...r });
  for (const k of ['gpus', 'nodes'] as const) {
    const v = opts[k];
    if (v === undefined) continue;
    if (!Number.isInteger(v) || v < 1) throw new LatheError(`--${k}: must be a positive integer, got ${v}`, 2);
    out[k] = v;
  }
  if (opts.parallel !== undefined) out.parallel = opts.parallel;
  return out;
}
