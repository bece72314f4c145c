import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { REPO_ROOT } from '../src/kernel.js';
import { jupyterEnv, python, requireSetup, tempRuns, unittestSummary } from './jupyter.js';

// Each case starts the kernel through jupyter_client and trains the Tally example for a few steps.
async function protocolCase(name: string, extra: Record<string, string> = {}): Promise<string> {
  const env = jupyterEnv({
    LATHE_TEST_RECIPE: join(REPO_ROOT, 'examples', 'recipes', 'tally-pretrain.json'),
    LATHE_TEST_OUT: tempRuns('kernel'),
    ...extra,
  });
  const { code, out } = await python(['-m', 'unittest', '-v', `protocol.${name}`], env, 380_000);
  const s = unittestSummary(out);
  expect(code, out).toBe(0);
  expect(s.ok && s.ran > 0 && s.skipped === 0, out).toBe(true);
  return out;
}

// SwiftShader, Dawn's Vulkan adapter on the CPU, from Debian's chromium (DESIGN: known ground).
const ICD = '/usr/lib/chromium/vk_swiftshader_icd.json';
const noVulkan = existsSync(ICD) ? undefined : `${ICD} is missing: npm test's setup installs Debian's chromium`;
if (noVulkan) console.warn(`the kernel's webgpu case is skipped: ${noVulkan}`);

describe('kernel protocol through jupyter_client', () => {
  beforeAll(requireSetup);

  it('interrupts: SIGINT stops training at a step boundary with a checkpoint and "interrupted at step N"; a second interrupt_request aborts the cell at once; a busy loop stops; the kernel stays usable and the run resumes', async () => {
    const out = await protocolCase('InterruptTests');
    expect(out).toMatch(/test_interrupt_stops_training_at_step_boundary_with_checkpoint .* ok/);
    expect(out).toMatch(/test_second_interrupt_aborts_the_cell_at_once .* ok/);
    expect(out).toMatch(/test_third_interrupt_case_stops_a_busy_loop .* ok/);
  }, 400_000);

  it('comms: lathe.runs lists live runs, follows one (metrics stream), cancels it, answers a malformed request with an error naming the field; comm_info and comm_close; unknown targets are closed', async () => {
    const out = await protocolCase('CommTests');
    expect(out).toMatch(/test_runs_comm_lists_follows_and_cancels .* ok/);
  }, 300_000);

  it('live display: display_data with the run, Plotly, HTML and text, throttled update_display_data, complete final state; tables and recipe card', async () => {
    const out = await protocolCase('DisplayTests');
    expect(out).toMatch(/test_live_run_display_updates_in_place_and_ends_complete .* ok/);
  }, 300_000);

  it.skipIf(!!noVulkan)(
    'webgpu in the kernel: r.run({ backend: "webgpu" }) on SwiftShader trains, matches cpu within 1e-3 (loss, grad_norm) and logs no Dawn error',
    async () => {
      const out = await protocolCase('WebGpuTests', { LD_LIBRARY_PATH: '/usr/lib/chromium', VK_ICD_FILENAMES: ICD });
      expect(out).toMatch(/test_webgpu_run_in_the_kernel_matches_cpu .* ok/);
    },
    400_000,
  );

  it('the torch engine in the kernel: await r.run({ engine: "torch" }) shows the same live chart; a torch run is listed, followed and cancelled (with a checkpoint) over lathe.runs', async () => {
    const out = await protocolCase('TorchTests');
    expect(out).toMatch(/test_torch_run_shows_the_live_chart_and_a_runs_row_like_tfjs .* ok/);
  }, 300_000);
});
