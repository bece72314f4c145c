// Keeps the kernel answering (interrupts, comms, heartbeats) while a run trains in this process.
//
// The pre-training loop awaits tensor reads once or twice a step, but on the cpu and wasm backends
// those reads resolve as microtasks, so the loop never gives the event loop a turn: SIGINT,
// ZeroMQ messages and timers wait until training ends. Until the loop yields on its own (as the
// tokenizer trainer does with setImmediate), every tensor read here resolves one macrotask later.

const PATCHED = Symbol.for('lathe.kernel.responsiveRead');

interface EngineLike {
  read(dataId: object): Promise<unknown>;
  [PATCHED]?: true;
}

/** Makes tfjs tensor reads yield to the event loop; returns false where no tfjs engine is loaded. */
export function keepEventLoopResponsive(): boolean {
  const engine = (globalThis as { _tfengine?: EngineLike })._tfengine;
  if (!engine || typeof engine.read !== 'function') return false;
  if (engine[PATCHED]) return true;
  const read = engine.read;
  engine.read = function (this: EngineLike, dataId: object) {
    // The read starts now (the tensor may be disposed right after); only its result waits a turn.
    return read.call(this, dataId).then((value) => new Promise((resolve) => setImmediate(() => resolve(value))));
  };
  engine[PATCHED] = true;
  return true;
}
