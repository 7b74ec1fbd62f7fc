import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    projects: [
      {
        test: {
          name: 'unit',
          include: ['test/unit/**/*.test.ts'],
          // the archive engine's worker threads run dist/archive-worker.js: build it when stale
          globalSetup: ['test/unit/archive/build-worker.ts'],
          testTimeout: 30_000,
        },
      },
      {
        test: {
          name: 'native',
          include: ['test/native/**/*.test.ts'],
          pool: 'forks',
          execArgv: ['--expose-gc'],
          testTimeout: 30_000,
        },
      },
      {
        test: {
          name: 'cli',
          include: ['test/cli/**/*.test.ts'],
          pool: 'forks',
          testTimeout: 60_000,
        },
      },
      {
        test: {
          name: 'e2e',
          include: ['test/e2e/suite/**/*.test.ts'],
          pool: 'forks',
          fileParallelism: false,
          testTimeout: 600_000,
          hookTimeout: 600_000,
        },
      },
    ],
  },
});
