/**
 * The room server's data directory (`--data-dir`, env LATHE_ROOMS_DIR, default `<lathe package>/.lathe/rooms`):
 *
 *     secret          the HMAC secret tokens are signed with (64 hex chars, mode 0600, made on first use)
 *     server.json     { url, host, port, pid, startedAt } of the running server (removed on clean exit)
 *     logs/<room>.ylog  each room's append-only yjs update log (see store.ts)
 *
 * The server, the kernel and the CLI all resolve the same default, so a kernel started by the same
 * Jupyter finds the secret (to mint tokens) and the server's address (to publish) without configuration.
 */
import { randomBytes } from 'node:crypto';
import {
  closeSync,
  existsSync,
  mkdirSync,
  openSync,
  readFileSync,
  renameSync,
  rmSync,
  writeFileSync,
  writeSync,
} from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { LatheError } from '../errors.js';

/** The lathe package root (the folder whose package.json is named "lathe"), found from this module. */
function packageRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const pkg = join(dir, 'package.json');
    if (existsSync(pkg)) {
      try {
        if ((JSON.parse(readFileSync(pkg, 'utf8')) as { name?: string }).name === 'lathe') return dir;
      } catch {
        // not ours; keep climbing
      }
    }
    const up = dirname(dir);
    if (up === dir) return process.cwd();
    dir = up;
  }
}

/** The data directory: env LATHE_ROOMS_DIR, else `<lathe package root>/.lathe/rooms`. */
export function defaultDataDir(env: NodeJS.ProcessEnv = process.env): string {
  return resolve(env.LATHE_ROOMS_DIR || join(packageRoot(), '.lathe', 'rooms'));
}

/** Creates the data directory (owner-only) if needed and returns its absolute path. */
export function ensureDataDir(dir: string): string {
  const abs = resolve(dir);
  mkdirSync(join(abs, 'logs'), { recursive: true, mode: 0o700 });
  return abs;
}

/** Where the secret lives, and whether it came from the environment. */
export interface SecretSource {
  secret: string;
  from: 'option' | 'env' | 'file';
  file?: string;
}

/**
 * The signing secret: `opts.secret`, else env LATHE_ROOMS_SECRET, else `<dataDir>/secret` (created,
 * mode 0600, when `create` is set and it does not exist yet).
 */
export function loadSecret(
  opts: { dataDir?: string; secret?: string; secretFile?: string; create?: boolean; env?: NodeJS.ProcessEnv } = {},
): SecretSource {
  const env = opts.env ?? process.env;
  if (opts.secret) return { secret: checkSecret(opts.secret, 'the secret option'), from: 'option' };
  if (!opts.secretFile && env.LATHE_ROOMS_SECRET)
    return { secret: checkSecret(env.LATHE_ROOMS_SECRET, 'LATHE_ROOMS_SECRET'), from: 'env' };
  const file = resolve(opts.secretFile ?? join(opts.dataDir ?? defaultDataDir(env), 'secret'));
  if (!existsSync(file)) {
    if (!opts.create)
      throw new LatheError(
        `${file}: no room secret; start the room server once (lathe rooms serve) or set LATHE_ROOMS_SECRET`,
      );
    mkdirSync(dirname(file), { recursive: true, mode: 0o700 });
    try {
      // 'wx' so two servers starting at once cannot both write a different secret.
      const fd = openSync(file, 'wx', 0o600);
      writeSync(fd, randomBytes(32).toString('hex') + '\n');
      closeSync(fd);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    }
  }
  return { secret: checkSecret(readFileSync(file, 'utf8').trim(), file), from: 'file', file };
}

function checkSecret(s: string, where: string): string {
  if (s.length < 16) throw new LatheError(`${where}: the room secret must be at least 16 characters`);
  return s;
}

/** What a running server writes to `<dataDir>/server.json`. */
export interface ServerInfo {
  url: string;
  host: string;
  port: number;
  pid: number;
  startedAt: string;
}

/** Records the running server's address so producers in other processes (the kernel) can find it. */
export function writeServerInfo(dataDir: string, info: ServerInfo): void {
  const path = join(dataDir, 'server.json');
  writeFileSync(`${path}.tmp`, JSON.stringify(info, null, 2) + '\n', { mode: 0o600 });
  renameSync(`${path}.tmp`, path);
}

/** Removes server.json if it still names this process. */
export function clearServerInfo(dataDir: string, pid = process.pid): void {
  const info = readServerInfo(dataDir, { checkAlive: false });
  if (info?.pid === pid) rmSync(join(dataDir, 'server.json'), { force: true });
}

/** The running server's address, or undefined if none is recorded or its process is gone. */
export function readServerInfo(
  dataDir: string = defaultDataDir(),
  opts: { checkAlive?: boolean } = {},
): ServerInfo | undefined {
  let info: ServerInfo;
  try {
    info = JSON.parse(readFileSync(join(dataDir, 'server.json'), 'utf8')) as ServerInfo;
  } catch {
    return undefined;
  }
  if (opts.checkAlive !== false) {
    try {
      process.kill(info.pid, 0);
    } catch (e) {
      // EPERM: alive but another user's; anything else: gone.
      if ((e as NodeJS.ErrnoException).code !== 'EPERM') return undefined;
    }
  }
  return info;
}
