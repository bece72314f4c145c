import { beforeAll, describe, expect, it } from 'vitest';
import { jupyterEnv, python, requireSetup, unittestSummary } from './jupyter.js';

describe('jupyter_kernel_test conformance', () => {
  beforeAll(requireSetup);

  it('passes the official KernelTests suite: kernel_info, language_info, execute, stdout/stderr, errors, completion, inspection, is_complete, display_data, clear_output', async () => {
    const { code, out } = await python(['-m', 'unittest', '-v', 'conformance'], jupyterEnv());
    const s = unittestSummary(out);
    expect(code, out).toBe(0);
    expect(s.ok, out).toBe(true);
    // Only history and the pager are not offered (the lathe kernel keeps no history database, has no pager).
    for (const t of [
      'kernel_info',
      'execute_stdout',
      'execute_stderr',
      'error',
      'execute_result',
      'completion',
      'inspect',
      'is_complete',
      'display_data',
      'clear_output',
      'inspect_lathe_api',
      'error_shows_user_line',
    ]) {
      expect(out, t).toMatch(new RegExp(`test_${t} \\(.*\\) \\.\\.\\. ok`));
    }
    const skipped = [...out.matchAll(/^(test_\w+) \(.*\) \.\.\. skipped/gm)].map((m) => m[1]);
    expect(
      skipped.filter((t) => t !== 'test_pager'),
      out,
    ).toEqual([]);
    expect(s.ran, out).toBeGreaterThanOrEqual(13);
  });
});
