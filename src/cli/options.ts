import { InvalidArgumentError, type Command } from 'commander';

/** Commander parser for a positive integer option. */
export function positiveInt(name: string) {
  return (v: string): number => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError(`${name} must be a positive integer, got "${v}"`);
    return n;
  };
}

/** Commander parser for a finite number option. */
export function finiteNumber(name: string) {
  return (v: string): number => {
    const n = Number(v);
    if (!Number.isFinite(n)) throw new InvalidArgumentError(`${name} must be a number, got "${v}"`);
    return n;
  };
}

/** Commander parser for --backend. */
export function backendOption(v: string): 'cpu' | 'wasm' | 'webgpu' | 'auto' {
  if (!['cpu', 'wasm', 'webgpu', 'auto'].includes(v))
    throw new InvalidArgumentError(`--backend must be one of cpu, wasm, webgpu, auto; got "${v}"`);
  return v as 'cpu' | 'wasm' | 'webgpu' | 'auto';
}

/** A Commander parser for an option that takes one of a few words. */
export function choice<T extends string>(name: string, allowed: readonly T[]) {
  return (v: string): T => {
    if (!allowed.includes(v as T))
      throw new InvalidArgumentError(`${name} must be one of ${allowed.join(', ')}; got "${v}"`);
    return v as T;
  };
}

/** The engine options of train, submit and worker: --engine, --device, --dtype. */
export const engineOptions = [
  {
    flags: '--engine <name>',
    about: 'tfjs, torch or auto (the fastest here, said aloud); overrides the recipe and LATHE_ENGINE',
    parse: choice('--engine', ['tfjs', 'torch', 'auto'] as const),
  },
  {
    flags: '--device <name>',
    about: 'torch engine: cpu or cuda; overrides the recipe and LATHE_DEVICE',
    parse: choice('--device', ['cpu', 'cuda'] as const),
  },
  {
    flags: '--dtype <name>',
    about:
      'torch engine: fp32, or bf16 autocast with fp32 master weights; webgpu: fp32 turns off f16 weight storage; overrides the recipe and LATHE_DTYPE',
    parse: choice('--dtype', ['fp32', 'bf16'] as const),
  },
];

/** The resource options of train, submit and resume: --gpus, --nodes, --parallel. */
export const resourceOptions = [
  {
    flags: '--gpus <n>',
    about:
      'torch engine: ranks per node (GPUs on cuda, processes on cpu) over torch.distributed; overrides resources.gpus',
    parse: positiveInt('--gpus'),
  },
  {
    flags: '--nodes <n>',
    about: 'torch engine: nodes (inside a Slurm allocation: srun starts torchrun on each); overrides resources.nodes',
    parse: positiveInt('--nodes'),
  },
  {
    flags: '--parallel <kind>',
    about:
      'ddp (replicate the model) or fsdp (shard parameters, gradients and optimizer state); overrides resources.parallel',
    parse: choice('--parallel', ['ddp', 'fsdp'] as const),
  },
];

/** What {@link resourceOptions} parse to. */
export interface ResourceFlags {
  gpus?: number;
  nodes?: number;
  parallel?: 'ddp' | 'fsdp';
}

/** Adds {@link resourceOptions} to a command. */
export function withResourceOptions(c: Command): Command {
  const [gpus, nodes, parallel] = resourceOptions;
  return c
    .option(gpus!.flags, gpus!.about, gpus!.parse as (v: string) => number)
    .option(nodes!.flags, nodes!.about, nodes!.parse as (v: string) => number)
    .option(parallel!.flags, parallel!.about, parallel!.parse as (v: string) => string);
}
