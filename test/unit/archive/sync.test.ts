import { open, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BackgroundSync } from '../../../src/archive/io.js';
import { tempDir } from './helpers.js';

let dir: string;
let cleanup: () => Promise<void>;
beforeAll(async () => ({ dir, cleanup } = await tempDir()));
afterAll(async () => cleanup());

/** A real file whose datasync calls are counted (and held until released, to see that they never overlap). */
async function countedFile(name: string): Promise<{ fh: FileHandle; calls: () => number; release: () => void }> {
  const fh = await open(join(dir, name), 'w', 0o600);
  const real = fh.datasync.bind(fh);
  let calls = 0;
  let gate: (() => void) | undefined;
  fh.datasync = async () => {
    calls++;
    await new Promise<void>((resolve) => (gate = resolve));
    return real();
  };
  return { fh, calls: () => calls, release: () => gate?.() };
}

describe('BackgroundSync', () => {
  it('starts a datasync per `every` bytes written, one at a time, and the tracker sees each', async () => {
    const { fh, calls, release } = await countedFile('a');
    const tracked: Promise<unknown>[] = [];
    const errors: unknown[] = [];
    const sync = new BackgroundSync(
      fh,
      1000,
      (p) => (tracked.push(p), p),
      (e) => errors.push(e),
    );
    sync.wrote(600);
    expect(calls()).toBe(0);
    sync.wrote(600); // 1200 ≥ 1000: one starts
    expect(calls()).toBe(1);
    sync.wrote(5000); // due again, but one is running: none more
    expect(calls()).toBe(1);
    release();
    await Promise.all(tracked);
    sync.wrote(1); // the 5001 bytes since the last start
    expect(calls()).toBe(2);
    release();
    await Promise.all(tracked);
    expect(tracked).toHaveLength(2);
    expect(errors).toEqual([]);
    await fh.close();
  });

  it('a failed datasync goes to onError (the run fails), never unhandled', async () => {
    const fh = await open(join(dir, 'b'), 'w', 0o600);
    const eio = Object.assign(new Error('EIO: i/o error, fdatasync'), { code: 'EIO' });
    fh.datasync = () => Promise.reject(eio);
    const tracked: Promise<unknown>[] = [];
    const errors: unknown[] = [];
    const sync = new BackgroundSync(
      fh,
      10,
      (p) => (tracked.push(p), p),
      (e) => errors.push(e),
    );
    sync.wrote(10);
    await Promise.allSettled(tracked);
    await new Promise((r) => setImmediate(r));
    expect(errors).toEqual([eio]);
    await fh.close();
  });
});
