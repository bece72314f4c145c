import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ROOT } from './helpers.js';

// `npm test` (and `npm start`) ran set-up on this checkout before this file: on CI a fresh clone.
// Running it again must change no tracked file, install nothing, and need no network.

const status = () => spawnSync('git', ['status', '--porcelain'], { cwd: ROOT, encoding: 'utf8' }).stdout;
const setup = (env: Record<string, string> = {}) =>
  spawnSync(process.execPath, [join(ROOT, 'scripts', 'setup.mjs'), '--tests'], {
    cwd: ROOT,
    encoding: 'utf8',
    env: { ...process.env, ...env },
    timeout: 600_000,
  });

describe('set-up', () => {
  it('leaves the tree clean, is idempotent, and runs again with the registries unreachable', () => {
    const before = status();
    // On CI the clone was clean before `npm test` ran set-up: set-up must not have dirtied it.
    if (process.env.CI) expect(before).toBe('');
    // Up to date first (a lockfile edited since the last set-up reinstalls once), then again: nothing to do.
    const first = setup();
    expect(first.status, first.stderr).toBe(0);
    const again = setup();
    expect(again.status, again.stderr).toBe(0);
    expect(again.stderr).not.toMatch(/installing|creating \.venv/);
    const offline = setup({
      npm_config_registry: 'http://127.0.0.1:9/',
      npm_config_offline: 'true',
      PIP_INDEX_URL: 'http://127.0.0.1:9/simple',
      PIP_NO_INDEX: '1',
    });
    expect(offline.status, offline.stderr).toBe(0);
    expect(offline.stderr).not.toMatch(/installing|creating \.venv/);
    expect(status()).toBe(before);
  }, 600_000);
});
