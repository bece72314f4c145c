// The Lathe kernel: Jupyter requests in, cells run on the lathe library, rich displays and comms out.
import { randomUUID } from 'node:crypto';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { TextDecoder } from 'node:util';
import type * as Lathe from 'lathe';
import ts from 'typescript';
import { CommManager } from './comms.js';
import { CellCompiler, isComplete } from './converter.js';
import {
  bundleOf,
  compareBundle,
  isRun,
  progressLine,
  setRoomRefProvider,
  tableBundle,
  type MimeBundle,
} from './display.js';
import { Executor, type CellError } from './executor.js';
import { CELL_GLOBALS } from './globals.js';
import { LiveRunDisplay } from './live.js';
import { registerRunsTarget } from './runs-comm.js';
import { KernelServer, type ConnectionInfo, type RequestChannel } from './server.js';
import { PROTOCOL_VERSION, type Message } from './wire.js';

/** The kernel package folder (kernel/), found from this file whether run from src/ or dist/. */
export const KERNEL_DIR = join(dirname(fileURLToPath(import.meta.url)), '..');
/** The repository root, where the lathe library is built (dist/src/index.js). */
export const REPO_ROOT = join(KERNEL_DIR, '..');

const VERSION = '0.1.0';

/** Options of a kernel. */
export interface KernelOptions {
  /** Folder of the notebook (default: the process's cwd). */
  cwd?: string;
  /** The lathe library's entry (default: the repository's dist/src/index.js, or LATHE_KERNEL_LIBRARY). */
  library?: string;
  /** Writes kernel diagnostics (default: the real stderr). */
  log?: (m: string) => void;
}

type Queued = { msg: Message; generation: number };

// Jupyter counts cursor positions in code points; JavaScript strings in UTF-16 units.
const utf16Offset = (code: string, codePoints: number) => [...code].slice(0, Math.max(0, codePoints)).join('').length;
const codePointOffset = (code: string, units: number) => [...code.slice(0, units)].length;

// Marks display handles, so a cell ending in display(...) shows no extra result.
const HANDLE = Symbol.for('lathe.displayHandle');
const handle = (id: string, update: (value: unknown) => void) => ({ id, update, [HANDLE]: true });

/** A running kernel bound to a connection file's sockets. */
export class LatheKernel {
  private readonly server: KernelServer;
  private readonly executor: Executor;
  private readonly comms: CommManager;
  private readonly log: (m: string) => void;
  private readonly cwd: string;
  private readonly libraryUrl?: string;
  private lathe?: typeof Lathe;
  private ready: Promise<void> = Promise.resolve();
  private count = 0;
  private queue: Queued[] = [];
  private draining = false;
  private generation = 0;
  private outputParent?: Message;
  private readonly known: Lathe.Run[] = [];
  private readonly displays = new Map<Lathe.Run, LiveRunDisplay>();
  private shownLive = new Set<Lathe.Run>();
  private readonly realStdout = process.stdout.write.bind(process.stdout);
  private readonly realStderr = process.stderr.write.bind(process.stderr);

  /** Prepares the compiler and sockets; `start()` binds them. */
  constructor(conn: ConnectionInfo, opts: KernelOptions = {}) {
    this.cwd = opts.cwd ?? process.cwd();
    this.log = opts.log ?? ((m) => void this.realStderr(`[lathe-kernel] ${m}\n`));
    const library = opts.library ?? process.env.LATHE_KERNEL_LIBRARY ?? join(REPO_ROOT, 'dist', 'src', 'index.js');
    const aliases: Record<string, { types: string; url: string }> = {};
    if (existsSync(library)) {
      this.libraryUrl = pathToFileURL(library).href;
      aliases.lathe = { types: library.replace(/\.js$/, '.d.ts'), url: this.libraryUrl };
    }
    const compiler = new CellCompiler({ cwd: this.cwd, globals: CELL_GLOBALS, aliases, typeRootsFrom: KERNEL_DIR });
    this.executor = new Executor(compiler, this.cwd, KERNEL_DIR);
    this.server = new KernelServer(conn, (ch, msg) => this.dispatch(ch, msg), this.log);
    this.comms = new CommManager((type, content, parent) => void this.server.publish(type, content, parent), this.log);
  }

  /** Binds sockets, captures stdout/stderr, installs cell globals, and loads lathe in the background. */
  async start(): Promise<void> {
    await this.server.start();
    this.captureOutput();
    this.installGlobals();
    process.on('SIGINT', () => this.interrupt());
    process.on('unhandledRejection', (reason) =>
      this.stream(
        'stderr',
        `Unhandled promise rejection: ${reason instanceof Error ? reason.stack : String(reason)}\n`,
      ),
    );
    process.on('uncaughtException', (err) =>
      this.stream('stderr', `Uncaught exception: ${err.stack ?? String(err)}\n`),
    );
    this.ready = this.loadLibrary();
  }

  // Loads lathe once, as the same module instance cells import, and follows every run it starts.
  private async loadLibrary(): Promise<void> {
    if (!this.libraryUrl) return this.log('lathe is not built (run npm run setup); cells run without it');
    try {
      this.lathe = (await import(this.libraryUrl)) as typeof Lathe;
    } catch (e) {
      return this.log(`cannot load lathe: ${(e as Error).message}`);
    }
    const lathe = this.lathe;
    // With run rooms on (npm start sets LATHE_ROOMS_URL), charts in every browser follow the run's room.
    if (process.env.LATHE_ROOMS_URL) setRoomRefProvider((run) => lathe.rooms.roomRef(run.id, { dir: run.dir.path }));
    lathe.runs.onRunStart((run) => this.runStarted(run));
    registerRunsTarget(
      this.comms,
      () => [...this.known].sort((a, b) => Number(b.status === 'running') - Number(a.status === 'running')),
      (fn) => lathe.runs.onRunStart(fn),
      (run, by) => {
        const pub = lathe.rooms.autoPublishers().get(run.id);
        if (!pub) return false;
        pub.cancelAs(by);
        return true;
      },
    );
  }

  private runStarted(run: Lathe.Run): void {
    if (!this.known.includes(run)) this.known.push(run);
    this.executor.runStarted(run);
    const parent = this.outputParent;
    const live = new LiveRunDisplay(run, (bundle, id, update) => this.sendDisplay(bundle, id, update, parent));
    this.displays.set(run, live);
    this.shownLive.add(run);
    void live.finished.then(() => this.displays.delete(run));
  }

  private dispatch(channel: RequestChannel, msg: Message): void {
    const type = msg.header.msg_type;
    if (type === 'execute_request') {
      this.queue.push({ msg, generation: this.generation });
      void this.drain();
      return;
    }
    void this.handle(channel, msg).catch((e: unknown) => this.log(`${type} failed: ${(e as Error).stack}`));
  }

  // Requests other than execute are answered at once, even while a cell runs (the Runs panel relies on it).
  private async handle(channel: RequestChannel, msg: Message): Promise<void> {
    const type = msg.header.msg_type;
    // eslint-disable-next-line @typescript-eslint/no-explicit-any -- each handler reads its own message's fields
    const content = msg.content as Record<string, any>;
    await this.server.publish('status', { execution_state: 'busy' }, msg);
    try {
      switch (type) {
        case 'kernel_info_request':
          await this.server.reply(channel, msg, 'kernel_info_reply', this.kernelInfo());
          break;
        case 'complete_request': {
          const code = String(content.code);
          const cursor = utf16Offset(code, content.cursor_pos);
          const c = this.quietly(() => this.executor.compiler.complete(code, cursor)) ?? {
            matches: [],
            cursorStart: cursor,
            cursorEnd: cursor,
            types: [],
          };
          await this.server.reply(channel, msg, 'complete_reply', {
            status: 'ok',
            matches: c.matches,
            cursor_start: codePointOffset(code, c.cursorStart),
            cursor_end: codePointOffset(code, c.cursorEnd),
            metadata: {
              _jupyter_types_experimental: c.types.map((t) => ({
                ...t,
                start: codePointOffset(code, t.start),
                end: codePointOffset(code, t.end),
              })),
            },
          });
          break;
        }
        case 'inspect_request': {
          const code = String(content.code);
          const info = this.quietly(() => this.executor.compiler.inspect(code, utf16Offset(code, content.cursor_pos)));
          const data: MimeBundle = info
            ? {
                'text/plain': [info.signature, info.doc].filter(Boolean).join('\n\n'),
                'text/markdown': '```ts\n' + info.signature + '\n```\n\n' + info.doc,
              }
            : {};
          await this.server.reply(channel, msg, 'inspect_reply', { status: 'ok', found: !!info, data, metadata: {} });
          break;
        }
        case 'is_complete_request':
          await this.server.reply(channel, msg, 'is_complete_reply', isComplete(content.code));
          break;
        case 'comm_info_request':
          await this.server.reply(channel, msg, 'comm_info_reply', {
            status: 'ok',
            ...this.comms.info(content.target_name),
          });
          break;
        case 'comm_open':
          await this.ready;
          this.comms.handleOpen(msg);
          break;
        case 'comm_msg':
          this.comms.handleMsg(msg);
          break;
        case 'comm_close':
          this.comms.handleClose(msg);
          break;
        case 'history_request':
          await this.server.reply(channel, msg, 'history_reply', { status: 'ok', history: [] });
          break;
        case 'interrupt_request':
          this.interrupt();
          await this.server.reply(channel, msg, 'interrupt_reply', { status: 'ok' });
          break;
        case 'shutdown_request':
          await this.shutdown(channel, msg, !!content.restart);
          return;
        default:
          this.log(`unhandled ${channel} message ${type}`);
      }
    } finally {
      await this.server.publish('status', { execution_state: 'idle' }, msg);
    }
  }

  private async drain(): Promise<void> {
    if (this.draining) return;
    this.draining = true;
    try {
      for (let item = this.queue.shift(); item; item = this.queue.shift()) await this.execute(item);
    } finally {
      this.draining = false;
    }
  }

  private async execute({ msg, generation }: Queued): Promise<void> {
    const content = msg.content as { code: string; silent?: boolean; store_history?: boolean; stop_on_error?: boolean };
    const silent = !!content.silent;
    const storeHistory = content.store_history ?? !silent;
    await this.server.publish('status', { execution_state: 'busy' }, msg);
    if (generation < this.generation) {
      // An earlier cell failed with stop_on_error: requests queued before that are aborted, as ipykernel does.
      await this.server.reply('shell', msg, 'execute_reply', { status: 'aborted', execution_count: this.count });
      await this.server.publish('status', { execution_state: 'idle' }, msg);
      return;
    }
    if (storeHistory && !silent) this.count++;
    const n = this.count;
    if (!silent) await this.server.publish('execute_input', { code: content.code, execution_count: n }, msg);
    this.outputParent = msg;
    this.shownLive = new Set();
    await this.ready;
    const outcome = await this.executor.execute(content.code, n);
    // A run that ended in this cell shows its complete final state before the reply.
    for (const [run, d] of this.displays) if (run.status !== 'running') d.close();
    if (outcome.ok) {
      const data = !silent && outcome.value !== undefined ? this.resultBundle(outcome.value) : undefined;
      if (data) await this.server.publish('execute_result', { execution_count: n, data, metadata: {} }, msg);
      await this.server.iopubDrained();
      await this.server.reply('shell', msg, 'execute_reply', {
        status: 'ok',
        execution_count: n,
        user_expressions: {},
        payload: [],
      });
    } else {
      const err: CellError = outcome.error;
      // Before the reply: a request the client sends after seeing it must not be aborted.
      if (content.stop_on_error ?? true) this.generation++;
      await this.server.publish('error', { ...err }, msg);
      await this.server.iopubDrained();
      await this.server.reply(
        'shell',
        msg,
        'execute_reply',
        { status: 'error', execution_count: n, ...err },
        { status: 'error' },
      );
    }
    await this.server.publish('status', { execution_state: 'idle' }, msg);
  }

  // Completion and inspection must always answer; a TypeScript failure answers "nothing found".
  private quietly<T>(fn: () => T): T | undefined {
    try {
      return fn();
    } catch (e) {
      this.log(`language service failed: ${(e as Error).message}`);
      return undefined;
    }
  }

  private resultBundle(value: unknown): MimeBundle | undefined {
    // display() returns a handle; as a cell's last expression it shows nothing more, like IPython's None.
    if (value && typeof value === 'object' && HANDLE in value) return undefined;
    // A run this cell already shows live gets only its line, not a second chart.
    if (isRun(value) && this.shownLive.has(value)) return { 'text/plain': progressLine(value) };
    return bundleOf(value, this.lathe);
  }

  /** Handles an interrupt (SIGINT or interrupt_request). */
  interrupt(): void {
    this.executor.interrupt((text) => this.stream('stderr', text));
  }

  private async shutdown(channel: RequestChannel, msg: Message, restart: boolean): Promise<void> {
    // Live runs stop at a step boundary with a checkpoint, if they manage within a few seconds.
    const live = this.known.filter((r) => r.status === 'running');
    for (const r of live) r.interrupt();
    await Promise.race([Promise.allSettled(live.map((r) => r.done)), new Promise((r) => setTimeout(r, 4000))]);
    await this.server.reply(channel, msg, 'shutdown_reply', { status: 'ok', restart });
    await this.server.publish('status', { execution_state: 'idle' }, msg);
    await this.server.iopubDrained();
    this.server.close();
    setTimeout(() => process.exit(0), 50).unref();
  }

  private kernelInfo(): Record<string, unknown> {
    return {
      status: 'ok',
      protocol_version: PROTOCOL_VERSION,
      implementation: 'lathe',
      implementation_version: VERSION,
      language_info: {
        name: 'typescript',
        version: ts.version,
        mimetype: 'text/typescript',
        file_extension: '.ts',
        pygments_lexer: 'typescript',
        codemirror_mode: { name: 'javascript', typescript: true },
        nbconvert_exporter: 'script',
      },
      banner: `Lathe (TypeScript ${ts.version}, Node ${process.versions.node}): import { recipe, runs } from 'lathe'`,
      help_links: [],
      debugger: false,
    };
  }

  private stream(name: 'stdout' | 'stderr', text: string): void {
    if (text) void this.server.publish('stream', { name, text }, this.outputParent);
  }

  // Console output of cells (and of anything they start) becomes stream messages of the current cell.
  private captureOutput(): void {
    const decoder = new TextDecoder();
    const hook = (name: 'stdout' | 'stderr') =>
      ((chunk: string | Uint8Array, encoding?: unknown, cb?: unknown) => {
        this.stream(name, typeof chunk === 'string' ? chunk : decoder.decode(chunk));
        const done = typeof encoding === 'function' ? encoding : cb;
        if (typeof done === 'function') queueMicrotask(() => (done as () => void)());
        return true;
      }) as typeof process.stdout.write;
    process.stdout.write = hook('stdout');
    process.stderr.write = hook('stderr');
  }

  private sendDisplay(bundle: MimeBundle, displayId: string, update: boolean, parent = this.outputParent): void {
    void this.server.publish(
      update ? 'update_display_data' : 'display_data',
      { data: bundle, metadata: {}, transient: { display_id: displayId } },
      parent,
    );
  }

  // display(), display.html() … and clearOutput() for cells; their types are in globals.ts.
  private installGlobals(): void {
    const show = (bundle: MimeBundle) => {
      const id = `display-${randomUUID()}`;
      const parent = this.outputParent;
      this.sendDisplay(bundle, id, false, parent);
      return handle(id, (value: unknown) => this.sendDisplay(bundleOf(value, this.lathe), id, true, parent));
    };
    const display = (value: unknown) => {
      if (isRun(value) && value.status === 'running') {
        const parent = this.outputParent;
        const live = new LiveRunDisplay(value, (bundle, id, update) => this.sendDisplay(bundle, id, update, parent));
        return handle(live.displayId, (v: unknown) =>
          this.sendDisplay(bundleOf(v, this.lathe), live.displayId, true, parent),
        );
      }
      return show(bundleOf(value, this.lathe));
    };
    Object.assign(display, {
      html: (html: string) => show({ 'text/html': html, 'text/plain': html.replace(/<[^>]*>/g, '') }),
      markdown: (md: string) => show({ 'text/markdown': md, 'text/plain': md }),
      text: (text: string) => show({ 'text/plain': text }),
      json: (value: unknown) => show({ 'application/json': value, 'text/plain': JSON.stringify(value, null, 2) }),
      table: (rows: Record<string, unknown>[], columns?: string[]) => show(tableBundle(rows, columns)),
      compare: (runs: Lathe.Run[], metrics?: string[]) => show(compareBundle(runs, metrics)),
      mime: (bundle: MimeBundle) => show(bundle),
    });
    const g = globalThis as Record<string, unknown>;
    g.display = display;
    g.clearOutput = (wait = false) => void this.server.publish('clear_output', { wait }, this.outputParent);
  }
}
