import { open, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { packImage, unpackImage, type PackResult } from '../../../src/archive/index.js';
import { attachLoop, canUseLoopDevices, CHUNK, detachLoop, mixedData, rejectionOf, sha256, tempDir, writeData } from './helpers.js';

// Real block devices: loop devices over temp files (needs root; CI runs as root).
const loopOk = await canUseLoopDevices();

describe.runIf(loopOk)('block devices (loop)', () => {
  let dir: string;
  let cleanup: () => Promise<void>;
  const loops: string[] = [];
  let data: Buffer;
  let packed: PackResult;

  const device = async (name: string, size: number, fill: number): Promise<string> => {
    await writeData(join(dir, name), Buffer.alloc(size, fill));
    const dev = await attachLoop(join(dir, name));
    loops.push(dev);
    return dev;
  };
  const readDevice = async (dev: string): Promise<Buffer> => readFile(dev);

  beforeAll(async () => {
    ({ dir, cleanup } = await tempDir());
    // zero chunks in the middle and at the end, and a size that is not a multiple of the chunk size
    data = mixedData(10 * CHUNK + 8 * 512, 'rzzt');
    await writeData(join(dir, 'src.img'), data);
    const src = await attachLoop(join(dir, 'src.img'));
    loops.push(src);
    packed = await packImage(src, join(dir, 'dev.gz'), { chunkSize: CHUNK });
  });
  afterAll(async () => {
    for (const l of loops) await detachLoop(l);
    await cleanup?.();
  });

  it('packs a block device: its size comes from sysfs, the data is byte-exact', () => {
    expect(packed.bytes).toBe(data.byteLength);
    expect(packed.sha256).toBe(sha256(data));
    expect(packed.zeroChunks).toBeGreaterThan(0);
  });

  it('unpacks onto a block device in place, writing the zero chunks too', async () => {
    for (const index of [packed, undefined]) {
      // the device starts full of 0xff: zero chunks must really be written
      const dev = await device(`dst-${index ? 'idx' : 'str'}.img`, data.byteLength + CHUNK, 0xff);
      const r = await unpackImage(join(dir, 'dev.gz'), dev, { index, expectSha256: packed.sha256 });
      expect(r).toMatchObject({ destKind: 'block', bytes: data.byteLength, verified: true });
      const back = await readDevice(dev);
      expect(sha256(back.subarray(0, data.byteLength))).toBe(packed.sha256);
      // bytes past the image are left alone
      expect(back.subarray(data.byteLength).every((b) => b === 0xff)).toBe(true);
    }
  });

  it('refuses a device smaller than the image before writing anything', async () => {
    const small = data.byteLength - 4096;
    const dev = await device('small.img', small, 0xff);
    for (const opts of [{ index: packed }, { expectBytes: packed.bytes }]) {
      const e = await rejectionOf(unpackImage(join(dir, 'dev.gz'), dev, opts));
      expect(e.code).toBe('KVMBAK_DEST_TOO_SMALL');
      expect(e.message).toBe(
        `destination ${dev} holds ${small} bytes but the image needs ${data.byteLength}; use a destination of at least ${data.byteLength} bytes (e.g. lvextend it)`,
      );
      expect((await readDevice(dev)).every((b) => b === 0xff)).toBe(true);
    }
    // streamed without a size: stops at the end of the device with the same code
    const e = await rejectionOf(unpackImage(join(dir, 'dev.gz'), dev));
    expect(e.code).toBe('KVMBAK_DEST_TOO_SMALL');
    expect(e.message).not.toContain('\n');
  });

  it('refuses a device that is held exclusively (O_EXCL)', async () => {
    const dev = await device('busy.img', data.byteLength, 0);
    const holder = await open(dev, 'r+');
    // a second exclusive open of the same device fails like a mounted one would
    const excl = await open(dev, (await import('node:fs')).constants.O_RDONLY | (await import('node:fs')).constants.O_EXCL);
    try {
      const e = await rejectionOf(unpackImage(join(dir, 'dev.gz'), dev, { index: packed }));
      expect(e.code).toBe('KVMBAK_DEST_BUSY');
      expect(e.message).toBe(`${dev} is in use (mounted or held by another program); unmount or release it first`);
    } finally {
      await excl.close();
      await holder.close();
    }
  });
});
