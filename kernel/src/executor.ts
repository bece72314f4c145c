// Runs compiled cells in this process, maps their errors back to cell lines, and handles interrupts:
// the first one stops live training at the next step boundary (with a checkpoint), the second aborts.
import { join } from 'node:path';
import vm from 'node:vm';
import type * as Lathe from 'lathe';
import { CellCompiler, type CellDiagnostic, type CompiledCell } from './converter.js';

/** A cell's failure in Jupyter's terms. */
export interface CellError {
  ename: string;
  evalue: string;
  traceback: string[];
}

/** The outcome of a cell. */
export type Outcome = { ok: true; value: unknown } | { ok: false; error: CellError };

/** Notes the executor sends to the cell's stderr. */
export type Notify = (text: string) => void;

// An interrupt that ends the cell at once (the kernel's KeyboardInterrupt).
class KeyboardInterrupt extends Error {
  override name = 'KeyboardInterrupt';
}

interface Execution {
  /** Runs started while this cell ran. */
  runs: Set<Lathe.Run>;
  interrupts: number;
  abort: (e: Error) => void;
}

/** Compiles and runs cells one at a time. */
export class Executor {
  private readonly cells = new Map<string, { n: number; compiled: CompiledCell }>();
  private current?: Execution;
  private seq = 0;

  /** @param cwd the notebook folder: scripts are named inside it so relative and bare imports resolve from there. */
  constructor(
    readonly compiler: CellCompiler,
    private readonly cwd: string,
    private readonly kernelDir: string,
  ) {}

  /** Whether a cell is running. */
  get busy(): boolean {
    return !!this.current;
  }

  /** Tells the running cell (if any) that a run started, so an interrupt stops it gracefully. */
  runStarted(run: Lathe.Run): void {
    this.current?.runs.add(run);
  }

  /** Type-checks and runs a cell; resolves with the last expression's value or the error. */
  async execute(source: string, n: number): Promise<Outcome> {
    let abort!: (e: Error) => void;
    const aborted = new Promise<never>((_, reject) => (abort = reject));
    aborted.catch(() => undefined);
    const exec: Execution = { runs: new Set(), interrupts: 0, abort };
    this.current = exec;
    try {
      const compiled = this.compiler.compile(source, `cell-${n}`);
      if (compiled.diagnostics.length) return { ok: false, error: compileError(compiled.diagnostics, source, n) };
      // A SIGINT that arrived while compiling is handled now, before the script runs: breakOnSigint
      // only sees signals that arrive while the script's synchronous part runs. Two turns, so the
      // loop passes through an I/O poll (where libuv delivers signals) even if we are in one now.
      await new Promise((r) => setImmediate(r));
      await new Promise((r) => setImmediate(r));
      if (exec.interrupts) throw new KeyboardInterrupt('interrupted');
      // Scripts are named inside the notebook folder, so imports resolve from there; never written to disk.
      const filename = join(this.cwd, `.lathe-cell-${++this.seq}.mts`);
      this.cells.set(filename, { n, compiled });
      const script = new vm.Script(compiled.script, {
        filename,
        importModuleDynamically: vm.constants.USE_MAIN_CONTEXT_DEFAULT_LOADER,
      });
      // breakOnSigint stops synchronous code (a busy loop) on SIGINT; async code is stopped through `aborted`.
      const promise = script.runInThisContext({ breakOnSigint: true }) as Promise<unknown>;
      const value = await Promise.race([promise, aborted]);
      return { ok: true, value };
    } catch (e) {
      return { ok: false, error: this.runtimeError(e) };
    } finally {
      this.current = undefined;
    }
  }

  /**
   * Interrupts the running cell. The first interrupt asks its live runs to stop at the next step
   * boundary (each writes a checkpoint) and lets the cell finish; with no live run, or on the
   * second interrupt, the cell is aborted at once.
   */
  interrupt(notify: Notify): 'idle' | 'graceful' | 'abort' {
    const exec = this.current;
    if (!exec) return 'idle';
    exec.interrupts++;
    const live = [...exec.runs].filter((r) => r.status === 'running');
    if (exec.interrupts === 1 && live.length) {
      for (const r of live) r.interrupt();
      notify(
        `Interrupt: stopping ${live.map((r) => r.id).join(', ')} at the next step boundary (a checkpoint is written). Interrupt again to abort the cell at once.\n`,
      );
      return 'graceful';
    }
    exec.abort(
      new KeyboardInterrupt(
        live.length ? 'aborted; the run stops at its next step boundary with a checkpoint' : 'interrupted',
      ),
    );
    return 'abort';
  }

  // Error with the user's cell line; frames of the kernel and of Node's internals are left out.
  private runtimeError(e: unknown): CellError {
    if (!(e instanceof Error)) return { ename: 'Error', evalue: String(e), traceback: [`Uncaught ${String(e)}`] };
    const ename = e.name || 'Error';
    if (/Script execution was interrupted by `SIGINT`/.test(e.message))
      return { ename: 'KeyboardInterrupt', evalue: 'interrupted', traceback: ['KeyboardInterrupt: interrupted'] };
    const lines = (e.stack ?? '').split('\n');
    const head = `${ename}: ${e.message}`;
    const frames: string[] = [];
    let excerpt: string[] | undefined;
    for (const line of lines.slice(1)) {
      const m = /^\s+at (?:(.*?) \()?(.*?):(\d+):(\d+)\)?$/.exec(line);
      if (!m) continue;
      const [, fn, file, l] = m;
      const cell = this.cells.get(file!);
      if (cell) {
        const cl = cell.compiled.cellLine(Number(l));
        // The wrapper's own frame (line 1 of the script) maps to no cell line.
        if (!cl) continue;
        const where = `cell [${cell.n}], line ${cl}`;
        const name = fn && !fn.startsWith('async ') && fn !== '<anonymous>' ? `${fn} (${where})` : where;
        frames.push(`    at ${name}`);
        if (!excerpt) excerpt = sourceExcerpt(cell.compiled.source, cl);
        continue;
      }
      if (
        !file ||
        file.startsWith('node:') ||
        file.startsWith(this.kernelDir) ||
        file.includes('/kernel/dist/') ||
        file === 'evalmachine.<anonymous>'
      )
        continue;
      frames.push(line.replace(/^\s+/, '    '));
    }
    return { ename, evalue: e.message, traceback: [head, ...(excerpt ?? []), ...frames] };
  }
}

/** The lines around `line` of a cell, the line itself marked. */
export function sourceExcerpt(source: string, line: number, column?: number): string[] {
  const lines = source.split('\n');
  const width = String(Math.min(lines.length, line + 1)).length;
  const out: string[] = [];
  for (let l = Math.max(1, line - 1); l <= Math.min(lines.length, line + 1); l++) {
    out.push(`${l === line ? '>' : ' '} ${String(l).padStart(width)} | ${lines[l - 1]}`);
    if (l === line && column) out.push(`  ${' '.repeat(width)} | ${' '.repeat(column - 1)}^`);
  }
  return out;
}

/** Type errors as a Jupyter error, each with the cell line it names. */
export function compileError(diags: CellDiagnostic[], source: string, n: number): CellError {
  const traceback = diags.flatMap((d) => [
    `cell [${n}], line ${d.line}:${d.column} - error TS${d.code}: ${d.message}`,
    ...sourceExcerpt(source, d.line, d.column),
    '',
  ]);
  return { ename: 'TypeScriptError', evalue: diags.map((d) => `line ${d.line}: ${d.message}`).join('; '), traceback };
}
