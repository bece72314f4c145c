import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['src/**/*.test.ts', 'examples/**/*.test.ts', 'test/**/*.test.ts', 'kernel/**/*.test.ts', 'extension/src/**/*.test.ts'],
    testTimeout: 120_000,
    hookTimeout: 120_000,
    pool: 'forks',
    // Two cores on CI: training tests are CPU-bound, so run files two at a time.
    poolOptions: { forks: { maxForks: 2, minForks: 1 } },
  },
});
