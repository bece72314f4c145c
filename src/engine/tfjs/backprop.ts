import { tf } from './tf.js';

// tfjs's backward pass (engine.gradients) keeps every tensor it saved for the backward pass, and
// the gradient of every intermediate tensor, until the whole pass ends. So the peak of a training
// step is the forward's saved activations plus a gradient for each of them: measured 1.8 GB of
// live tensors for one 4 x 256 micro-batch of the bench's small dense model (forward alone: 0.5
// GB), which is what pushes the MoE model against wasm32's 4 GB heap.
//
// leanGradients runs the same backward pass (same tape, same gradient functions, same order of
// accumulation, so the same bits) but frees as it goes: a node's saved tensors once its gradient
// is computed, and an intermediate gradient once the node that produced the tensor has consumed
// it. It replaces engine.gradients for first-order gradients; nested (higher-order) gradients
// keep tfjs's own.

interface TapeNode {
  id: number;
  kernelName: string;
  inputs: Record<string, tf.Tensor>;
  outputs: tf.Tensor[];
  saved?: tf.Tensor[];
  gradient?: (dys: (tf.Tensor | null)[]) => Record<string, () => tf.Tensor>;
}

interface EngineInternals {
  state: { activeTape: TapeNode[] | null; gradientDepth: number };
  startTape(): void;
  endTape(): void;
  scopedRun<T>(start: () => void, end: () => void, f: () => T): T;
  tidy<T extends tf.TensorContainer>(name: string | (() => T), f?: () => T): T;
  gradients: Gradients;
}

type Gradients = <T extends tf.Tensor>(
  f: () => T,
  xs: tf.Tensor[],
  dy?: T,
  allowNoGradients?: boolean,
) => { value: T; grads: tf.Tensor[] };

/**
 * The nodes of the tape on a path from some x to y, each with only the inputs that depend on an
 * x (gradients are computed for those alone), in tape order.
 */
function pathNodes(tape: TapeNode[], xs: tf.Tensor[], y: tf.Tensor): TapeNode[] {
  const fromX = new Set(xs.map((x) => x.id));
  const reachedFromX = new Set<number>();
  for (const node of tape) {
    if (Object.values(node.inputs).some((t) => fromX.has(t.id))) {
      reachedFromX.add(node.id);
      for (const o of node.outputs) fromX.add(o.id);
    }
  }
  const toY = new Set([y.id]);
  const leadsToY = new Set<number>();
  for (let i = tape.length - 1; i >= 0; i--) {
    const node = tape[i]!;
    if (node.outputs.some((o) => toY.has(o.id))) {
      leadsToY.add(node.id);
      for (const t of Object.values(node.inputs)) toY.add(t.id);
    }
  }
  const out: TapeNode[] = [];
  for (const node of tape) {
    if (!reachedFromX.has(node.id) || !leadsToY.has(node.id)) continue;
    const inputs: Record<string, tf.Tensor> = {};
    for (const [name, t] of Object.entries(node.inputs)) if (fromX.has(t.id)) inputs[name] = t;
    out.push({ ...node, inputs });
  }
  return out;
}

function leanGradients(engine: EngineInternals, stock: Gradients): Gradients {
  return (<T extends tf.Tensor>(f: () => T, xs: tf.Tensor[], dy?: T, allowNoGradients = false) => {
    if (engine.state.gradientDepth > 0) return stock.call(engine, f, xs, dy, allowNoGradients);
    if (xs.length === 0) throw new Error('gradients() received an empty list of xs.');
    if (dy != null && dy.dtype !== 'float32') throw new Error(`dy must have 'float32' dtype, but has '${dy.dtype}'`);
    const y = engine.scopedRun(
      () => engine.startTape(),
      () => engine.endTape(),
      () => engine.tidy('forward', f),
    );
    if (!(y instanceof tf.Tensor)) throw new Error('The result y returned by f() must be a tensor.');
    const tape = engine.state.activeTape ?? [];
    const nodes = pathNodes(tape, xs, y);
    if (!allowNoGradients && nodes.length === 0) {
      throw new Error(
        'Cannot compute gradient of y=f(x) with respect to x. Make sure that the f you passed encloses all operations that lead from x to y.',
      );
    }
    return engine.tidy('backward', () => {
      // Tensors made from here on belong to this pass; nothing older (y, the caller's dy, the
      // forward's tensors, variables) is ever freed early.
      const firstId = tf.tidy(() => tf.scalar(0).id);
      const grads = new Map<number, tf.Tensor>();
      const holds = new Map<tf.Tensor, number>();
      const hold = (id: number, t: tf.Tensor) => {
        grads.set(id, t);
        holds.set(t, (holds.get(t) ?? 0) + 1);
      };
      const drop = (id: number): tf.Tensor | undefined => {
        const t = grads.get(id);
        if (!t) return undefined;
        grads.delete(id);
        holds.set(t, holds.get(t)! - 1);
        return t;
      };
      const free = (t: tf.Tensor | null | undefined) => {
        if (t && t.id > firstId && !t.isDisposed && !(holds.get(t)! > 0)) t.dispose();
      };
      const xIds = new Set(xs.map((x) => x.id));
      hold(y.id, dy ?? tf.ones(y.shape));
      for (let i = nodes.length - 1; i >= 0; i--) {
        const node = nodes[i]!;
        if (!node.gradient)
          throw new Error(`Cannot compute gradient: gradient function not found for ${node.kernelName}.`);
        // Each tensor has one producer: once it has run, nothing reads the outputs' gradients.
        const dys = node.outputs.map((o) => (xIds.has(o.id) ? (grads.get(o.id) ?? null) : (drop(o.id) ?? null)));
        const inputGrads = node.gradient(dys);
        const spent: tf.Tensor[] = [];
        for (const [name, x] of Object.entries(node.inputs)) {
          if (!(name in inputGrads))
            throw new Error(
              `Cannot backprop through input ${name}. Available gradients found: ${Object.keys(inputGrads)}.`,
            );
          const dx = engine.tidy(() => inputGrads[name]!());
          if (dx.dtype !== 'float32')
            throw new Error(
              `Error in gradient for op ${node.kernelName}. The gradient of input ${name} must have 'float32' dtype, but has '${dx.dtype}'`,
            );
          if (!tf.util.arraysEqual(dx.shape, x.shape)) {
            throw new Error(
              `Error in gradient for op ${node.kernelName}. The gradient of input '${name}' has shape '${dx.shape}', which does not match the shape of the input '${x.shape}'`,
            );
          }
          const prev = drop(x.id);
          if (prev === undefined) hold(x.id, dx);
          else {
            hold(x.id, tf.add(prev, dx));
            spent.push(prev, dx);
          }
        }
        for (const t of [...dys, ...spent]) free(t);
        // A gradient function may hand back a saved tensor itself; that one now lives on as a gradient.
        for (const t of node.saved ?? []) if (!(holds.get(t)! > 0)) t.dispose();
      }
      const result = xs.map((x) => grads.get(x.id)) as tf.Tensor[];
      for (const node of tape) for (const t of node.saved ?? []) if (!(holds.get(t)! > 0)) t.dispose();
      engine.state.activeTape = null;
      return { value: y as T, grads: result };
    });
  }) as Gradients;
}

let stockGradients: Gradients | undefined;

/** Makes tfjs's first-order backward passes free their tensors as they go (see above). Idempotent. */
export function installLeanBackprop(): void {
  setLeanBackprop(true);
}

/** Switches between the lean backward pass and tfjs's own (for tests); returns the previous setting. */
export function setLeanBackprop(on: boolean): boolean {
  const engine = tf.engine() as unknown as EngineInternals;
  const was = stockGradients !== undefined;
  if (on && !was) {
    stockGradients = engine.gradients;
    engine.gradients = leanGradients(engine, stockGradients);
  } else if (!on && was) {
    engine.gradients = stockGradients!;
    stockGradients = undefined;
  }
  return was;
}
