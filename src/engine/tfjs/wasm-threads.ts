import { createHash } from 'node:crypto';
import { mkdirSync, readFileSync, renameSync, writeFileSync, existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import os, { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { setThreadsCount } from '@tensorflow/tfjs-backend-wasm';
import { tf } from './tf.js';

// tfjs-backend-wasm ships a multi-threaded SIMD build but turns it off in Node (tfjs#3830). Two
// things break when the flag is forced:
//  1. emscripten starts its pthread workers from a `blob:` URL made of the worker script, and
//     Node's Worker accepts only file paths and file:/data: URLs;
//  2. each worker then evaluates the main script, which tfjs hands over as a Blob holding the
//     factory's source text (`factory.toString()`). That text was cut out of tfjs's rollup
//     bundle, so it refers to bundle-scope names (`require$$0` for fs, tslib's `__values`, ...)
//     that do not exist inside a worker.
// We fix both at run time, without editing node_modules: while the backend initialises, Blob
// records the text it is built from and URL.createObjectURL, for the worker script, writes the
// two scripts to real files (with a preamble that defines the missing names) and returns the
// worker file's path. The worker file's own preamble points its `URL.createObjectURL` (used on
// the main-script Blob) at the main-script file.
// A third, smaller snag: the C++ side caps its XNNPACK thread pool at navigator.hardwareConcurrency
// / 2 (it assumes two hyperthreads a core), which emscripten reads from os.cpus() in Node; on a
// 2-core machine that is one thread. os.cpus() reports 2 x threads entries while the module starts.

const MAIN_PREFIX = 'var WasmBackendModuleThreadedSimd = ';

/** What `prepareWasmThreads` did: whether the threaded build will be used, and why not. */
export interface WasmThreadsPlan {
  threads: number;
  /** Undoes the temporary global patches; call once the wasm backend has initialised. */
  restore: () => void;
  /** Set when threads cannot be used; the backend then starts single-threaded as before. */
  why?: string;
}

/**
 * Threads the wasm backend should use: LATHE_WASM_THREADS (`cores` for one per core), else 1.
 * One is the default because threads pay only for large products on free cores: XNNPACK wakes its
 * pool for every op, and when a neighbour holds the other core each wake waits for the scheduler.
 * Measured on 2 busy cores, a 2-layer dim-64 model generated 10x slower with 2 threads and trained
 * 2.3x slower; the bench's dim-384 model trains 1.5x faster with 2 threads on a quiet machine.
 */
export function wasmThreadsFromEnv(): number {
  const v = process.env.LATHE_WASM_THREADS;
  if (v === undefined || v === '') return 1;
  if (v === 'cores') return cpus().length;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1) throw new Error(`LATHE_WASM_THREADS: "${v}" is not a positive integer or "cores"`);
  return n;
}

function threadsSupported(): string | undefined {
  if (typeof SharedArrayBuffer === 'undefined') return 'SharedArrayBuffer is not available';
  // A module using an atomic load: validates only where wasm threads are supported.
  const atomics = new Uint8Array([
    0, 97, 115, 109, 1, 0, 0, 0, 1, 4, 1, 96, 0, 0, 3, 2, 1, 0, 5, 4, 1, 3, 1, 1, 10, 11, 1, 9, 0, 65, 0, 254, 16, 2, 0,
    26, 11,
  ]);
  const wasm = (globalThis as unknown as { WebAssembly: { validate(bytes: Uint8Array): boolean } }).WebAssembly;
  if (!wasm.validate(atomics)) return 'this WebAssembly engine has no threads';
  return undefined;
}

/** `var require$$N = require('x');` lines of the tfjs-backend-wasm Node bundle: the names its factory text uses. */
function bundleRequires(): Map<string, string> {
  const req = createRequire(import.meta.url);
  const src = readFileSync(req.resolve('@tensorflow/tfjs-backend-wasm'), 'utf8');
  const out = new Map<string, string>();
  for (const m of src.matchAll(/^var (require\$\$\d+) = require\('([^']+)'\);$/gm)) out.set(m[1]!, m[2]!);
  return out;
}

// The tslib helpers the down-levelled factory calls, written for the worker's global scope.
const TSLIB_HELPERS = `
function __values(o) { return o[Symbol.iterator](); }
function __read(o, n) { var it = o[Symbol.iterator](), a = []; for (var i = 0; n === undefined || i < n; i++) { var r = it.next(); if (r.done) break; a.push(r.value); } return a; }
function __spreadArray(to, from) { return to.concat(Array.prototype.slice.call(from)); }
`;

/** Writes the two worker-side scripts (idempotent: the directory is named by their content). */
function writeScripts(workerText: string, mainText: string): string {
  const names = new Set(mainText.match(/require\$\$\d+/g) ?? []);
  const requires = bundleRequires();
  const lines: string[] = [];
  for (const n of names) {
    const mod = requires.get(n);
    if (!mod) throw new Error(`the wasm factory uses ${n}, which the bundle does not define`);
    lines.push(`var ${n} = require(${JSON.stringify(mod)});`);
  }
  const hash = createHash('sha256').update(workerText).update(mainText).digest('hex').slice(0, 16);
  const dir = join(tmpdir(), `lathe-tfjs-wasm-threads-${hash}`);
  const mainPath = join(dir, 'main.cjs');
  const workerPath = join(dir, 'worker.cjs');
  // The main script runs through the worker's importScripts, an indirect eval at global scope.
  const main = [
    ...lines,
    'var commonjsGlobal = globalThis;',
    `var _scriptDir = ${JSON.stringify(mainPath)};`,
    TSLIB_HELPERS,
    mainText,
  ].join('\n');
  const worker = [
    `URL.createObjectURL = function () { return ${JSON.stringify(mainPath)}; };`,
    'URL.revokeObjectURL = function () {};',
    workerText,
  ].join('\n');
  mkdirSync(dir, { recursive: true });
  for (const [path, text] of [
    [mainPath, main],
    [workerPath, worker],
  ] as const) {
    if (existsSync(path) && readFileSync(path, 'utf8') === text) continue;
    // Write then rename, so a process starting at the same moment never reads half a file.
    const tmp = `${path}.${process.pid}.tmp`;
    writeFileSync(tmp, text);
    renameSync(tmp, path);
  }
  return workerPath;
}

/**
 * Prepares tfjs-backend-wasm to start its multi-threaded SIMD build in Node with `threads`
 * threads. Call it before the wasm backend is first initialised (`tf.setBackend('wasm')`), then
 * call `restore()` once that has finished. With `threads` 1, or where the engine cannot run wasm
 * threads, nothing changes and `why` says so.
 */
export function prepareWasmThreads(threads: number): WasmThreadsPlan {
  const none = (why: string): WasmThreadsPlan => ({ threads: 1, restore: () => {}, why });
  if (threads <= 1) return none('one thread requested');
  const unsupported = threadsSupported();
  if (unsupported) return none(unsupported);

  const texts = new WeakMap<Blob, string>();
  const OriginalBlob = globalThis.Blob;
  const originalCreate = URL.createObjectURL;
  let mainText: string | undefined;
  class RecordingBlob extends OriginalBlob {
    constructor(...args: ConstructorParameters<typeof Blob>) {
      super(...args);
      const parts = args[0];
      if (parts && parts.every((p) => typeof p === 'string')) {
        const text = (parts as unknown as string[]).join('');
        texts.set(this, text);
        if (text.startsWith(MAIN_PREFIX)) mainText = text;
      }
    }
  }
  const originalCpus = os.cpus;
  os.cpus = () => {
    const real = originalCpus();
    return Array.from({ length: 2 * threads }, (_, i) => real[i % real.length]!);
  };
  globalThis.Blob = RecordingBlob as typeof Blob;
  URL.createObjectURL = (obj: Blob) => {
    const text = texts.get(obj);
    if (text !== undefined && mainText !== undefined && /\bWasmBackendModuleThreadedSimd\(Module\)/.test(text))
      return writeScripts(text, mainText);
    return originalCreate(obj);
  };
  tf.env().set('WASM_HAS_MULTITHREAD_SUPPORT', true);
  setThreadsCount(threads);
  return {
    threads,
    restore: () => {
      globalThis.Blob = OriginalBlob;
      URL.createObjectURL = originalCreate;
      os.cpus = originalCpus;
      // emscripten refs a worker while it runs a pthread; XNNPACK's pool threads run for the
      // life of the module, so unref them or Node never exits on its own.
      const backend = tf.findBackend('wasm') as unknown as
        { wasm?: { PThread?: { runningWorkers: { unref?: () => void }[] } } } | undefined;
      for (const w of backend?.wasm?.PThread?.runningWorkers ?? []) w.unref?.();
    },
  };
}
