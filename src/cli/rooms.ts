import { InvalidArgumentError, type Command } from 'commander';
import { resolve } from 'node:path';
import { LatheError } from '../errors.js';
// Importing the rooms module turns on auto-publishing for `lathe train` & co when LATHE_ROOMS_URL is set.
import {
  checkRoomName,
  defaultDataDir,
  followRun,
  loadSecret,
  mintToken,
  parseTtl,
  readServerInfo,
  shareLink,
  startRoomServer,
  decodeToken,
} from '../rooms/index.js';

function portOption(v: string): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0 || n > 65535)
    throw new InvalidArgumentError(`--port must be an integer 0-65535 (0 picks a free port), got "${v}"`);
  return n;
}

function roleOption(v: string): 'read' | 'write' {
  if (v !== 'read' && v !== 'write') throw new InvalidArgumentError(`--role must be read or write, got "${v}"`);
  return v;
}

function ttlOption(v: string): string {
  try {
    parseTtl(v);
  } catch (e) {
    throw new InvalidArgumentError((e as Error).message.replace(/^ttl/, '--ttl'));
  }
  return v;
}

function roomOption(v: string): string {
  if (v === '*' || /^[A-Za-z0-9._:~-]+\*$/.test(v)) return v;
  try {
    return checkRoomName(v);
  } catch (e) {
    throw new InvalidArgumentError(`--room: ${(e as Error).message}; or a pattern such as 'run:*' or '*'`);
  }
}

/** `lathe rooms serve | token | share | follow`. */
export function register(program: Command): void {
  const rooms = program
    .command('rooms')
    .description('Run rooms: live, shared run curves over yjs (serve, mint tokens, follow a room).');

  rooms
    .command('serve')
    .description('Serve run rooms (y-websocket) with token authorization, persisting each room to --data-dir.')
    .option('--port <port>', 'TCP port (0 picks a free one)', portOption, 1234)
    .option('--host <host>', 'interface to bind (keep loopback behind Jupyter)', '127.0.0.1')
    .option(
      '--data-dir <dir>',
      'secret, server.json and room logs (default: env LATHE_ROOMS_DIR or <lathe>/.lathe/rooms)',
    )
    .option(
      '--secret-file <file>',
      'read the signing secret from this file (default: env LATHE_ROOMS_SECRET, else <data-dir>/secret, created on first start)',
    )
    .option('--compact-every <n>', 'rewrite a room log after this many appended updates', (v) => {
      const n = Number(v);
      if (!Number.isInteger(n) || n < 1)
        throw new InvalidArgumentError(`--compact-every must be a positive integer, got "${v}"`);
      return n;
    })
    .option('--quiet', 'log only refusals and faults, not every connection')
    .action(
      async (o: {
        port: number;
        host: string;
        dataDir?: string;
        secretFile?: string;
        compactEvery?: number;
        quiet?: boolean;
      }) => {
        const dataDir = resolve(o.dataDir ?? defaultDataDir());
        const log = (line: string) => {
          if (o.quiet && /^(open|close) /.test(line)) return;
          process.stderr.write(`lathe rooms: ${line}\n`);
        };
        const server = await startRoomServer({
          port: o.port,
          host: o.host,
          dataDir,
          secretFile: o.secretFile,
          compactEvery: o.compactEvery,
          log,
        });
        process.stdout.write(`lathe rooms: serving ${server.url}/<room>?room_token=… (data ${dataDir})\n`);
        await new Promise<void>((done) => {
          const stop = (sig: string) => {
            process.stderr.write(`lathe rooms: ${sig}, closing\n`);
            void server.close().then(done);
          };
          process.once('SIGINT', () => stop('SIGINT'));
          process.once('SIGTERM', () => stop('SIGTERM'));
        });
        // Logs are closed and server.json removed: exit even if a library left a timer behind.
        process.exit(0);
      },
    );

  rooms
    .command('token')
    .description(
      'Mint a room token (signed with the rooms secret); prints the token, or a read-only share link with --link.',
    )
    .requiredOption('--room <room>', "room name (run:<run id>) or pattern ('run:*', '*')", roomOption)
    .option('--role <role>', 'read (sync only) or write', roleOption, 'read')
    .option('--ttl <ttl>', 'time to live: 90s, 30m, 1h, 7d', ttlOption, '1h')
    .option('--sub <name>', 'who the token is for (shown in the server log)')
    .option(
      '--data-dir <dir>',
      'rooms data dir holding the secret (default: env LATHE_ROOMS_DIR or <lathe>/.lathe/rooms)',
    )
    .option('--secret-file <file>', 'read the secret from this file instead')
    .option(
      '--link <base>',
      'print a share link: <base>/<room>?room_token=… (base: https://host/<jupyter base>/lathe-rooms, or http://host:port)',
    )
    .option('--json', 'print { token, room, role, expires }')
    .action(
      (o: {
        room: string;
        role: 'read' | 'write';
        ttl: string;
        sub?: string;
        dataDir?: string;
        secretFile?: string;
        link?: string;
        json?: boolean;
      }) => {
        const { secret } = loadSecret({ dataDir: o.dataDir ?? defaultDataDir(), secretFile: o.secretFile });
        const token = mintToken(secret, { room: o.room, role: o.role, ttl: o.ttl, sub: o.sub });
        if (o.link) {
          if (o.room.includes('*')) throw new LatheError('--link needs one room, not a pattern');
          if (o.role !== 'read')
            throw new LatheError('--link makes a read-only share link: use --role read (the default)');
        }
        const out = o.link ? shareLink(o.link, o.room, token) : token;
        if (o.json) {
          const g = decodeToken(token)!;
          process.stdout.write(
            JSON.stringify({
              token,
              room: g.room,
              role: g.role,
              expires: new Date(g.exp * 1000).toISOString(),
              link: o.link ? out : undefined,
            }) + '\n',
          );
        } else process.stdout.write(out + '\n');
      },
    );

  rooms
    .command('share')
    .description(
      'Print a read-only share link to a notebook: the viewer sees it and its live charts in JupyterLab but cannot edit or execute.',
    )
    .argument(
      '<path>',
      "notebook path relative to Jupyter's root dir (the repository under npm start); 'dir/*' shares a folder, '*' everything",
    )
    .option('--ttl <ttl>', 'time to live: 90s, 30m, 1h, 7d', ttlOption, '7d')
    .option(
      '--base-url <url>',
      'the JupyterLab server as viewers reach it (default: env LATHE_JUPYTER_URL or http://127.0.0.1:8888/)',
    )
    .option('--name <name>', "the viewer's name, shown in presence")
    .option(
      '--data-dir <dir>',
      'rooms data dir holding the secret (default: env LATHE_ROOMS_DIR or <lathe>/.lathe/rooms); Jupyter must use the same',
    )
    .option('--json', 'print { url, token, scope, expires }')
    .action((path: string, o: { ttl: string; baseUrl?: string; name?: string; dataDir?: string; json?: boolean }) => {
      const rel = path.replace(/\\/g, '/').replace(/^(\.\/)+/, '');
      if (!rel || rel.startsWith('/') || rel.split('/').includes('..')) {
        throw new LatheError(
          `path "${path}" must be relative to Jupyter's root dir, without "..", e.g. notebooks/quickstart.ipynb`,
        );
      }
      const base = o.baseUrl ?? process.env.LATHE_JUPYTER_URL ?? 'http://127.0.0.1:8888/';
      let url: URL;
      try {
        url = new URL(base.endsWith('/') ? base : `${base}/`);
      } catch {
        throw new LatheError(
          `--base-url "${base}" is not a URL (expected e.g. http://host:8888/ or https://host/user/me/)`,
        );
      }
      // The Jupyter server extension (jupyter-config/lathe_jupyter) verifies this with the same secret.
      const { secret } = loadSecret({ dataDir: o.dataDir ?? defaultDataDir(), create: true });
      const scope = rel === '*' ? '*' : `notebook:${rel}`;
      const token = mintToken(secret, { room: scope, role: 'read', ttl: o.ttl, sub: o.name });
      // A folder share ('dir/*') opens the folder in the file browser, '*' the root.
      const shown = rel.replace(/\/?\*$/, '');
      const page = shown ? `lab/tree/${shown.split('/').map(encodeURIComponent).join('/')}` : 'lab';
      const link = new URL(page, url);
      link.searchParams.set('lathe_share', token);
      if (o.json) {
        process.stdout.write(
          JSON.stringify({
            url: link.href,
            token,
            scope,
            expires: new Date(decodeToken(token)!.exp * 1000).toISOString(),
          }) + '\n',
        );
      } else process.stdout.write(link.href + '\n');
    });

  rooms
    .command('follow')
    .description("Print a room's curve and then each new point until the run ends (Ctrl-C to stop).")
    .argument(
      '<room-url>',
      'ws://host:port/run:<id>?room_token=… (or a share link); a bare room name uses the local server',
    )
    .option('--token <token>', "room token (default: the URL's room_token, else minted from the local secret)")
    .option('--json', 'one JSON line per point')
    .option('--snapshot', 'print the room once synced and exit')
    .action(async (target: string, o: { token?: string; json?: boolean; snapshot?: boolean }) => {
      let url = target;
      let token = o.token;
      if (!/^[a-z+]+:\/\//i.test(target)) {
        const room = checkRoomName(target);
        const info = readServerInfo();
        if (!info)
          throw new LatheError(
            `no room server is running for ${defaultDataDir()} (start one with lathe rooms serve), or pass a ws:// URL`,
          );
        url = `${info.url}/${encodeURIComponent(room)}`;
        token ??= mintToken(loadSecret().secret, { room, role: 'read', ttl: '1h', sub: 'lathe rooms follow' });
      }
      const f = followRun(url, { token, presence: { name: `${process.env.USER ?? 'cli'} (lathe rooms follow)` } });
      try {
        await f.whenSynced(15_000);
        if (o.snapshot) {
          process.stdout.write(
            JSON.stringify({ meta: f.meta(), metrics: f.curve(), events: f.events(), evals: f.evals() }) + '\n',
          );
          return;
        }
        for await (const m of f) {
          if (o.json) process.stdout.write(JSON.stringify(m) + '\n');
          else
            process.stdout.write(
              `#${m.seq} ${m.stage} step ${m.step}${m.loss !== undefined ? ` loss ${Number(m.loss).toFixed(4)}` : ''}\n`,
            );
        }
        const meta = f.meta();
        process.stderr.write(
          `run ${meta.runId ?? f.room}: ${meta.status}${meta.cancelledBy ? ` (cancelled by ${meta.cancelledBy})` : ''}\n`,
        );
      } finally {
        f.close();
      }
    });
}
