// A real `jupyter lab` for the collaboration and share-link tests: the repository's
// jupyter-config (jupyter-collaboration, the lathe_jupyter server extension on PYTHONPATH as
// `npm start` sets it), a temp root dir with the given files, temp rooms data dir (secret), and
// temp Jupyter data/config dirs so parallel servers share no state. Also a small yjs client for
// jupyter-collaboration's document websocket.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { join } from 'node:path';
import WebSocket from 'ws';
import { WebsocketProvider } from 'y-websocket';
import * as Y from 'yjs';
import { ROOT, scratch } from './helpers.js';

const PY = join(ROOT, '.venv', 'bin', 'python');
const JUPYTER = join(ROOT, '.venv', 'bin', 'jupyter');

/** True when the venv has jupyter-collaboration (npm run setup installs it from requirements.txt). */
export const hasCollaboration =
  existsSync(PY) && spawnSync(PY, ['-c', 'import jupyter_server_ydoc, jupyter_server_proxy']).status === 0;

export function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

/** A minimal nbformat 4 notebook with one code cell per source. */
export function notebook(...sources: string[]): string {
  return JSON.stringify({
    nbformat: 4,
    nbformat_minor: 5,
    metadata: { kernelspec: { name: 'lathe', display_name: 'Lathe (TypeScript)', language: 'typescript' } },
    cells: sources.map((source, i) => ({
      cell_type: 'code',
      id: `cell-${i}`,
      source,
      metadata: {},
      outputs: [],
      execution_count: null,
    })),
  });
}

export interface Lab {
  base: string;
  token: string;
  root: string;
  roomsDir: string;
  /** Everything the server printed so far. */
  log: () => string;
  /** Owner's auth header (Jupyter's token). */
  auth: Record<string, string>;
  stop: () => Promise<void>;
}

export async function startLab(files: Record<string, string>, extraArgs: string[] = []): Promise<Lab> {
  const dir = await scratch('lathe-collab-');
  const root = join(dir, 'root');
  const roomsDir = join(dir, 'rooms');
  for (const [name, body] of Object.entries(files)) {
    await mkdir(join(root, name, '..'), { recursive: true });
    await writeFile(join(root, name), body);
  }
  await mkdir(roomsDir, { recursive: true });
  const port = await freePort();
  const token = 'collab-test-token';
  const base = `http://127.0.0.1:${port}/`;
  const args = [
    'lab',
    '--no-browser',
    `--port=${port}`,
    '--ip=127.0.0.1',
    `--IdentityProvider.token=${token}`,
    '--allow-root',
    '--config=jupyter-config/jupyter_server_config.json',
    `--ServerApp.root_dir=${root}`,
    // Keep collaboration state per server (the defaults are the cwd, shared with other runs).
    `--SQLiteYStore.db_path=${join(dir, 'ystore.db')}`,
    `--YDocExtension.session_store_path=${join(dir, 'sessions.json')}`,
    ...extraArgs,
  ];
  const child: ChildProcess = spawn(JUPYTER, args, {
    cwd: ROOT,
    env: {
      ...process.env,
      PYTHONPATH: join(ROOT, 'jupyter-config'),
      JUPYTER_PATH: join(ROOT, '.venv', 'share', 'jupyter'),
      JUPYTER_CONFIG_DIR: join(dir, 'jupyter-config-dir'),
      JUPYTER_DATA_DIR: join(dir, 'jupyter-data'),
      LATHE_ROOMS_DIR: roomsDir,
      LATHE_ROOMS_SECRET: '',
      PYTHONDONTWRITEBYTECODE: '1', // no __pycache__ in jupyter-config/
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let log = '';
  child.stdout!.on('data', (d) => (log += d));
  child.stderr!.on('data', (d) => (log += d));
  for (let i = 0; ; i++) {
    const ok = await fetch(`${base}api/status?token=${token}`).then(
      (r) => r.ok,
      () => false,
    );
    if (ok) break;
    if (i > 160 || child.exitCode !== null) {
      child.kill('SIGKILL');
      throw new Error(`jupyter lab did not start:\n${log}`);
    }
    await new Promise((r) => setTimeout(r, 250));
  }
  return {
    base,
    token,
    root,
    roomsDir,
    log: () => log,
    auth: { Authorization: `token ${token}` },
    stop: async () => {
      if (child.exitCode !== null) return void (await rm(dir, { recursive: true, force: true }));
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 8000);
      await exited;
      clearTimeout(timer);
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/** What `PUT /api/collaboration/session/<path>` answers: the document's room is `json:notebook:<fileId>`. */
export interface DocSession {
  format: string;
  type: string;
  fileId: string;
  sessionId: string;
}

export async function docSession(
  lab: Lab,
  path: string,
  auth: { headers?: Record<string, string>; query?: string } = { headers: lab.auth },
): Promise<{ status: number; session?: DocSession; body: string }> {
  const res = await fetch(`${lab.base}api/collaboration/session/${encodeURI(path)}${auth.query ?? ''}`, {
    method: 'PUT',
    headers: { 'Content-Type': 'application/json', ...auth.headers },
    body: JSON.stringify({ format: 'json', type: 'notebook' }),
  });
  const body = await res.text();
  return { status: res.status, session: res.ok ? (JSON.parse(body) as DocSession) : undefined, body };
}

/** A Node client on the document websocket, speaking y-websocket's protocol as JupyterLab's docprovider does. */
export class NotebookClient {
  readonly doc = new Y.Doc();
  readonly provider: WebsocketProvider;
  closed?: { code: number; reason: string };

  constructor(lab: Lab, session: DocSession, params: Record<string, string>, headers: Record<string, string> = {}) {
    // Node's ws takes headers (cookies) through a subclass; the browser sends its cookie itself.
    const WS = class extends WebSocket {
      constructor(url: string, protocols?: string | string[]) {
        super(url, protocols, { headers });
      }
    };
    this.provider = new WebsocketProvider(
      `${lab.base.replace(/^http/, 'ws')}api/collaboration/room`,
      `${session.format}:${session.type}:${session.fileId}`,
      this.doc,
      {
        params: { sessionId: session.sessionId, ...params },
        WebSocketPolyfill: WS as unknown as typeof globalThis.WebSocket,
        disableBc: true,
        maxBackoffTime: 500,
      },
    );
    this.provider.on('connection-close', (e) => {
      if (e) this.closed = { code: e.code, reason: e.reason };
    });
  }

  get cells(): Y.Array<Y.Map<unknown>> {
    return this.doc.getArray('cells');
  }

  source(i: number): string {
    const s = this.cells.get(i)?.get('source');
    return s instanceof Y.Text ? s.toString() : String(s ?? '');
  }

  insert(i: number, index: number, text: string): void {
    (this.cells.get(i)!.get('source') as Y.Text).insert(index, text);
  }

  synced(timeoutMs = 15_000): Promise<void> {
    if (this.provider.synced && this.cells.length > 0) return Promise.resolve();
    return this.until(() => this.provider.synced && this.cells.length > 0, timeoutMs, 'document sync');
  }

  /** Resolves when `pred` holds, checked on every document change. */
  until(pred: () => boolean, timeoutMs: number, what: string): Promise<void> {
    return new Promise((resolve, reject) => {
      const check = () => {
        if (!pred()) return;
        clearTimeout(timer);
        this.doc.off('update', check);
        this.provider.off('sync', check);
        resolve();
      };
      const timer = setTimeout(() => {
        this.doc.off('update', check);
        this.provider.off('sync', check);
        reject(
          new Error(
            `timed out after ${timeoutMs} ms waiting for ${what}${this.closed ? ` (closed ${this.closed.code} ${this.closed.reason})` : ''}`,
          ),
        );
      }, timeoutMs);
      this.doc.on('update', check);
      this.provider.on('sync', check);
      check();
    });
  }

  close(): void {
    this.provider.destroy();
    this.doc.destroy();
  }
}

/** The HTTP status a WebSocket upgrade gets: 101 when accepted, else the refusal's status. */
export function upgradeStatus(url: string, headers: Record<string, string> = {}): Promise<number> {
  return new Promise((resolve) => {
    const ws = new WebSocket(url, { headers });
    ws.on('unexpected-response', (_req, res) => {
      resolve(res.statusCode ?? 0);
      ws.terminate();
    });
    ws.on('open', () => {
      resolve(101);
      ws.close();
    });
    ws.on('error', () => resolve(-1));
  });
}
