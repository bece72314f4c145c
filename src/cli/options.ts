import { InvalidArgumentError } from 'commander';

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
