/**
 * Auto-publishing: with env LATHE_ROOMS_URL set, every run started in this process (`onRunStart`) is
 * mirrored into its room `run:<id>`. Environment:
 *
 *   LATHE_ROOMS_URL    ws://host:port of the room server, or `auto`: read `<rooms dir>/server.json`
 *                      (the server Jupyter's proxy starts on demand writes it), waiting until it exists
 *   LATHE_ROOMS_TOKEN  a write token covering the run's room (e.g. `--room 'run:*'`); without it a token
 *                      is minted per run from LATHE_ROOMS_SECRET or `<rooms dir>/secret`
 *   LATHE_ROOMS_DIR    the rooms data dir (default `<lathe package>/.lathe/rooms`)
 *   LATHE_USER         who is recorded as starting the run (default JUPYTERHUB_USER, USER)
 */
import { onRunStart } from '../runs/live.js';
import type { Run } from '../runs/run.js';
import { localUser } from './client.js';
import { defaultDataDir, loadSecret, readServerInfo } from './datadir.js';
import { publishRun, type RunPublisher } from './publish.js';
import { roomForRun } from './schema.js';
import { mintToken } from './token.js';

/** Options of {@link autoPublish}; each defaults to the environment variable named in the module doc. */
export interface AutoPublishOptions {
  url?: string;
  token?: string;
  dataDir?: string;
  user?: string;
  env?: NodeJS.ProcessEnv;
  log?: (line: string) => void;
}

let active: (() => void) | undefined;
const publishers = new Map<string, RunPublisher>();

/** Publishers of the runs auto-published in this process, by run id (dropped when flushed). */
export function autoPublishers(): Map<string, RunPublisher> {
  return publishers;
}

/** Resolves a rooms URL setting: a ws/http URL as is, or `auto` (server.json, re-read on each call). */
export function roomsUrlResolver(url: string, dataDir: string): string | (() => string | undefined) {
  if (url !== 'auto') return url;
  return () => readServerInfo(dataDir)?.url;
}

/** Mints write tokens for one room on demand (a fresh one at every reconnect, so expiry never bites). */
export function tokenMinter(
  room: string,
  opts: { dataDir?: string; user?: string; env?: NodeJS.ProcessEnv } = {},
): () => string {
  return () => {
    const { secret } = loadSecret({ dataDir: opts.dataDir, env: opts.env });
    return mintToken(secret, { room, role: 'write', ttl: '1h', sub: opts.user });
  };
}

/**
 * Publishes every run started in this process from now on; returns a function that stops. A second
 * call replaces the first. Does nothing (returns a no-op) if no URL is configured.
 */
export function autoPublish(opts: AutoPublishOptions = {}): () => void {
  const env = opts.env ?? process.env;
  const url = opts.url ?? env.LATHE_ROOMS_URL;
  if (!url) return () => {};
  active?.();
  const dataDir = opts.dataDir ?? defaultDataDir(env);
  const user = opts.user ?? localUser(env);
  const fixedToken = opts.token ?? env.LATHE_ROOMS_TOKEN;
  const resolveUrl = roomsUrlResolver(url, dataDir);
  const off = onRunStart((run: Run) => {
    try {
      const room = roomForRun(run.id, run.dir.path);
      const token = fixedToken || tokenMinter(room, { dataDir, user, env });
      if (typeof token === 'function') token(); // fail now, with the reason, if there is no secret
      const p = publishRun(run, { url: resolveUrl, token, room, user, log: opts.log });
      publishers.set(run.id, p);
      void p.done.finally(() => publishers.delete(run.id));
    } catch (e) {
      (opts.log ?? ((l: string) => process.stderr.write(`lathe rooms: ${l}\n`)))(
        `not publishing run ${run.id}: ${(e as Error).message}`,
      );
    }
  });
  active = () => {
    off();
    active = undefined;
  };
  return active;
}
