import { defineConfig } from 'tsup';

export default defineConfig([
  {
    entry: { index: 'src/index.ts' },
    format: ['esm'],
    platform: 'node',
    target: 'node20',
    dts: true,
    sourcemap: true,
    clean: false,
    outDir: 'dist',
  },
  {
    entry: { cli: 'cli/index.ts' },
    format: ['esm'],
    platform: 'node',
    target: 'node20',
    dts: false,
    sourcemap: true,
    clean: false,
    outDir: 'dist',
    banner: { js: '#!/usr/bin/env node' },
  },
  {
    // the archive engine's worker thread: a file of its own beside index.js and
    // cli.js, which both start it as new URL('./archive-worker.js', import.meta.url)
    entry: { 'archive-worker': 'src/archive/worker.ts' },
    format: ['esm'],
    platform: 'node',
    target: 'node20',
    dts: false,
    sourcemap: true,
    clean: false,
    outDir: 'dist',
  },
]);
