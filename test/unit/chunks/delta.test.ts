/**
 * writeDiskDelta: a disk stored from the previous run's list plus only the chunks that changed
 * (the thin_delta path), on real files.
 */
import { createHash } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  ChunkStore,
  type ChunkList,
  chunkIdAt,
  isChunkError,
  readDiskFromStore,
  writeChunkList,
  writeDiskDelta,
  writeDiskToStore,
} from '../../../src/index.js';
import { rejection } from '../../support/rejection.js';
import { diskImage, tempDir } from './helpers.js';

const MiB = 1024 * 1024;
const CHUNK = 4 * MiB;
const sha = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');

let dir: string;
let cleanup: () => void;
beforeEach(() => ({ dir, cleanup } = tempDir()));
afterEach(() => cleanup());

/** Overwrites chunk `i` of `image` with fresh bytes (the last chunk: its own length). */
function rewrite(image: Buffer, i: number, fill: number): void {
  image.fill(fill, i * CHUNK, Math.min(image.length, (i + 1) * CHUNK));
  image.write(`rewritten chunk ${i} with ${fill}`, i * CHUNK);
}

/** A FileHandle on `path` that records the [position, length] of every read. */
async function recordingHandle(path: string): Promise<{ fh: FileHandle; reads: [number, number][] }> {
  const fh = await open(path, 'r');
  const reads: [number, number][] = [];
  const proxy = new Proxy(fh, {
    get(target, prop, receiver) {
      if (prop === 'read') {
        return (buf: Buffer, offset: number, length: number, position: number) => {
          reads.push([position, length]);
          return target.read(buf, offset, length, position);
        };
      }
      const v = Reflect.get(target, prop, receiver) as unknown;
      return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
    },
  });
  return { fh: proxy, reads };
}

describe('writeDiskDelta', () => {
  it('reads only the changed chunks, takes the other ids from the previous list, and the result rebuilds the new disk', async () => {
    const image = diskImage(10 * CHUNK + 12345); // 11 chunks, the last one short
    const src = join(dir, 'disk.raw');
    writeFileSync(src, image);
    await using store = await ChunkStore.forDestination(dir);
    const first = await writeDiskToStore(src, store);

    rewrite(image, 1, 0x41);
    image.fill(0, 4 * CHUNK, 5 * CHUNK); // chunk 4 discarded: reads zeros now
    rewrite(image, 10, 0x42);
    writeFileSync(src, image);
    const { fh, reads } = await recordingHandle(src);
    const events: number[] = [];
    let delta;
    try {
      delta = await writeDiskDelta(fh, store, {
        previous: first.list,
        changed: [1, 4, 10],
        size: image.length,
        onProgress: (e) => events.push(e.chunksDone),
      });
    } finally {
      await fh.close();
    }
    expect(delta).toMatchObject({ rawSha256: undefined, chunks: 11, chunksRead: 3, chunksFromPrevious: 8, bytesRead: 2 * CHUNK + 12345 });
    expect(delta.list.rawSha256).toBeUndefined();
    expect(events.at(-1)).toBe(11);
    // Two 1-byte probes at the end (the size check), then exactly the changed chunks.
    expect(reads).toEqual([
      [image.length - 1, 1],
      [image.length, 1],
      [1 * CHUNK, CHUNK],
      [4 * CHUNK, CHUNK],
      [10 * CHUNK, 12345],
    ]);
    // The same list a full read of the new disk makes (neither has a whole-disk sha256).
    const full = await writeDiskToStore(src, store);
    expect(full.list.rawSha256).toBeUndefined();
    expect(delta.list.ids.equals(full.list.ids)).toBe(true);
    expect(full).toMatchObject({ chunksNew: 0 });
    // It rebuilds the new disk byte for byte.
    const out = join(dir, 'rebuilt.raw');
    const back = await readDiskFromStore(delta.list, store, out, { wholeSha256: true });
    expect(back.rawSha256).toBe(sha(image));
  });

  it('a chunk changed on the disk but not listed as changed keeps its previous id: it was not read', async () => {
    const image = diskImage(4 * CHUNK, 2);
    const src = join(dir, 'disk.raw');
    writeFileSync(src, image);
    await using store = await ChunkStore.forDestination(dir);
    const first = await writeDiskToStore(src, store);
    rewrite(image, 0, 0x43);
    rewrite(image, 2, 0x44);
    writeFileSync(src, image);
    const d = await writeDiskDelta(src, store, { previous: first.list, changed: [2], size: image.length });
    expect(chunkIdAt(d.list, 0)).toBe(chunkIdAt(first.list, 0));
    expect(chunkIdAt(d.list, 2)).toBe(sha(image.subarray(2 * CHUNK, 3 * CHUNK)));
    expect(d).toMatchObject({ chunksRead: 1, chunksNew: 1, bytesRead: CHUNK });
  });

  it('nothing changed: no chunk read, the previous ids; the previous list may be given as its file', async () => {
    const image = diskImage(3 * CHUNK, 3);
    const src = join(dir, 'disk.raw');
    writeFileSync(src, image);
    await using store = await ChunkStore.forDestination(dir);
    const first = await writeDiskToStore(src, store);
    const listFile = join(dir, 'vda.chunks');
    await writeChunkList(listFile, first.list);
    const d = await writeDiskDelta(src, store, { previous: listFile, changed: [], size: image.length });
    expect(d).toMatchObject({ chunksRead: 0, chunksFromPrevious: 3, bytesRead: 0, bytesAdded: 0, chunksNew: 0 });
    expect(d.list.ids.equals(first.list.ids)).toBe(true);
  });

  it('announces the store as written to first: a garbage collection meanwhile stays out', async () => {
    const image = diskImage(2 * CHUNK, 4);
    const src = join(dir, 'disk.raw');
    writeFileSync(src, image);
    let list: ChunkList;
    {
      await using s = await ChunkStore.forDestination(dir);
      list = (await writeDiskToStore(src, s)).list;
    }
    await using writer = await ChunkStore.forDestination(dir);
    await writeDiskDelta(src, writer, { previous: list, changed: [], size: image.length });
    await using gc = await ChunkStore.forDestination(dir);
    expect(await gc.collectGarbage({ lists: () => [] })).toMatchObject({ status: 'busy' });
    await writer.close();
    expect(await gc.collectGarbage({ lists: () => [list] })).toMatchObject({ status: 'collected' });
  });

  it('a previous list that does not fit, bad indexes, a short source, a chunk the store lacks: clear errors', async () => {
    const image = diskImage(3 * CHUNK, 5);
    const src = join(dir, 'disk.raw');
    writeFileSync(src, image);
    await using store = await ChunkStore.forDestination(dir);
    const first = await writeDiskToStore(src, store);
    const size = image.length;

    const resized = await rejection(writeDiskDelta(src, store, { previous: first.list, changed: [0], size: size + CHUNK }));
    expect(isChunkError(resized, 'KVMBAK_CHUNK_DISK_MISMATCH')).toBe(true);
    expect((resized as Error).message).toBe(
      `the previous chunk list does not fit this disk: it holds ${size} bytes, the disk ${size + CHUNK}; read the whole disk instead`,
    );
    const otherChunking: ChunkList = { ...first.list, chunkSize: 2 * MiB, ids: Buffer.concat([first.list.ids, first.list.ids]) };
    expect(await rejection(writeDiskDelta(src, store, { previous: otherChunking, changed: [], size }))).toMatchObject({
      code: 'KVMBAK_CHUNK_DISK_MISMATCH',
      message: expect.stringContaining(`its chunk size is ${2 * MiB} bytes, not ${CHUNK}`),
    });
    for (const changed of [[1, 0], [0, 0], [3], [-1], [0.5]]) {
      expect(await rejection(writeDiskDelta(src, store, { previous: first.list, changed, size }))).toMatchObject({
        code: 'KVMBAK_INVALID_ARGUMENT',
        option: 'changed',
      });
    }
    const short = join(dir, 'short.raw');
    writeFileSync(short, image.subarray(0, size - 1));
    expect(await rejection(writeDiskDelta(short, store, { previous: first.list, changed: [2], size }))).toMatchObject({
      code: 'KVMBAK_CHUNK_DISK_MISMATCH',
      message: expect.stringContaining(`the source is not ${size} bytes long`),
    });
    // A list whose chunks are in another store.
    const { dir: other, cleanup: done } = tempDir();
    try {
      await using empty = await ChunkStore.forDestination(other);
      const err = await rejection(writeDiskDelta(src, empty, { previous: first.list, changed: [1], size }));
      expect(err).toMatchObject({ code: 'KVMBAK_CHUNK_MISSING' });
      expect((err as Error).message).toMatch(/^chunk (0|2) of the previous list \([0-9a-f]{64}\) is not in the store: read the whole disk instead$/);
    } finally {
      done();
    }
  });
});
