import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const MiB = 1024 * 1024;

/** A temporary folder, removed by the returned cleanup. */
export function tempDir(prefix = 'kvmbak-chunks-'): { dir: string; cleanup: () => void } {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

/**
 * A disk-like image: per 4 MiB chunk, alternately text, random, zeros, half text (compressible,
 * incompressible, zero, mixed), `size` bytes (the last chunk shorter when size is not a multiple).
 */
export function diskImage(size: number, seed = 1): Buffer {
  const b = Buffer.alloc(size);
  const text = Buffer.from(`kvmbak chunk store test ${seed} — the quick brown fox jumps over the lazy dog\n`.repeat(64));
  for (let off = 0, i = 0; off < size; off += 4 * MiB, i++) {
    const end = Math.min(size, off + 4 * MiB);
    const kind = (i + seed) % 4;
    if (kind === 0) for (let p = off; p < end; p += text.length) text.copy(b, p, 0, Math.min(text.length, end - p));
    else if (kind === 1) randomBytes(end - off).copy(b, off);
    else if (kind === 3)
      for (let p = off; p < off + (end - off) / 2; p += text.length) text.copy(b, p, 0, Math.min(text.length, off + (end - off) / 2 - p));
  }
  return b;
}
