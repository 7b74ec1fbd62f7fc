/**
 * vitest globalSetup of the unit project: the archive engine starts its
 * worker threads from dist/archive-worker.js (node cannot run the
 * TypeScript source in a worker), so build that one entry when it is missing
 * or older than src/ — the same bundle tsup makes, in a fraction of a second.
 */
import { existsSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildSync } from 'esbuild';

const root = fileURLToPath(new URL('../../../', import.meta.url));

function newest(dir: string): number {
  let t = 0;
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    t = Math.max(t, e.isDirectory() ? newest(p) : statSync(p).mtimeMs);
  }
  return t;
}

export default function setup(): void {
  const out = join(root, 'dist', 'archive-worker.js');
  if (existsSync(out) && statSync(out).mtimeMs >= newest(join(root, 'src'))) return;
  buildSync({
    entryPoints: [join(root, 'src', 'archive', 'worker.ts')],
    outfile: out,
    bundle: true,
    format: 'esm',
    platform: 'node',
    target: 'node20',
    sourcemap: true,
    logLevel: 'warning',
  });
}
