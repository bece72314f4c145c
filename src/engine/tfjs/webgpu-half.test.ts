import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';

// f16 weight storage (webgpu-half.ts) on an adapter with shader-f16: Mesa's lavapipe, unpacked by
// npm test's setup (scripts/lavapipe.mjs), since SwiftShader has no shader-f16.

const ICD = fileURLToPath(new URL('../../../.cache/lavapipe/lvp_icd.json', import.meta.url));
const why = existsSync(ICD)
  ? undefined
  : `${ICD} is missing: npm test's setup unpacks Mesa's lavapipe there (see its log for why it did not)`;
if (why) console.warn(`webgpu f16-storage test skipped: ${why}`);

interface Run {
  active: boolean;
  losses: number[];
  dispatches: number;
  copyOff: number;
}
interface ChildReport {
  skipped?: string;
  adapter: string;
  rounding: number;
  forward: number;
  backward: number;
  reassigned: number;
  f16: Run;
  fp32: Run;
  moe: { f16: Run; fp32: Run };
  validation: string[];
}

describe.skipIf(!!why)('webgpu f16 storage on lavapipe', () => {
  it('rounds each weight once, multiplies in fp32, and trains 50 steps within 1e-2 of fp32 at the same dispatches', async () => {
    const child = fileURLToPath(new URL('./test/webgpu-half-child.ts', import.meta.url));
    const { stdout } = await promisify(execFile)(process.execPath, ['--import', 'tsx', child], {
      env: { ...process.env, VK_ICD_FILENAMES: ICD, XDG_RUNTIME_DIR: process.env.XDG_RUNTIME_DIR ?? '/tmp' },
      timeout: 300_000,
    });
    const r = JSON.parse(stdout.trim().split('\n').pop()!) as ChildReport;
    expect(r.skipped).toBeUndefined();
    expect(r.adapter).toMatch(/llvmpipe/);
    // The copy rounds to nearest (within half an f16 ulp); the products then match float64 on those values.
    expect(r.rounding).toBeLessThanOrEqual(1);
    expect(r.forward).toBeLessThan(1e-5);
    expect(r.backward).toBeLessThan(1e-5);
    expect(r.reassigned).toBe(0);
    expect(r.f16.active).toBe(true);
    expect(r.fp32.active).toBe(false);
    // AdamW wrote each copy in the pass that updated its fp32 master.
    expect(r.f16.copyOff).toBeLessThanOrEqual(1);
    const rel = r.f16.losses.map((l, i) => Math.abs(l - r.fp32.losses[i]!) / r.fp32.losses[i]!);
    console.log(
      `f16 storage vs fp32 over 50 steps: max relative loss difference ${Math.max(...rel).toExponential(2)}; ` +
        `last loss ${r.f16.losses[49]!.toFixed(4)} vs ${r.fp32.losses[49]!.toFixed(4)}; dispatches per step ${r.f16.dispatches} vs ${r.fp32.dispatches}`,
    );
    expect(Math.max(...rel)).toBeLessThan(1e-2);
    expect(Math.max(...rel)).toBeGreaterThan(0); // the f16 run did read f16 weights
    for (const run of [r.f16, r.fp32]) expect(run.losses[49]!).toBeLessThan(run.losses[0]! - 3);
    expect(r.f16.dispatches).toBe(r.fp32.dispatches);
    // MoE, 20 steps: the routed experts' products read f16 copies as well.
    const moeRel = r.moe.f16.losses.map((l, i) => Math.abs(l - r.moe.fp32.losses[i]!) / r.moe.fp32.losses[i]!);
    console.log(
      `MoE f16 storage vs fp32 over 20 steps: max relative loss difference ${Math.max(...moeRel).toExponential(2)}`,
    );
    expect(Math.max(...moeRel)).toBeLessThan(1e-2);
    expect(Math.max(...moeRel)).toBeGreaterThan(0);
    expect(r.moe.f16.copyOff).toBeLessThanOrEqual(1);
    expect(r.moe.f16.losses[19]!).toBeLessThan(r.moe.f16.losses[0]! - 1);
    expect(r.validation).toEqual([]);
  }, 300_000); // ~20 s on a quiet 2-core machine
});
