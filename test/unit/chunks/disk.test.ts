import { createHash } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { closeSync, existsSync, openSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  ChunkStore,
  chunkCount,
  chunkIdAt,
  isChunkError,
  readChunkList,
  readDiskFromStore,
  writeChunkList,
  writeDiskToStore,
  zeroChunk,
} from '../../../src/index.js';
import { diskImage, tempDir } from './helpers.js';

const MiB = 1024 * 1024;
const sha = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');
const LIST_SOURCE = fileURLToPath(new URL('../../../src/chunks/list.ts', import.meta.url));

let dir: string;
let cleanup: () => void;
beforeEach(() => ({ dir, cleanup } = tempDir()));
afterEach(() => cleanup());

describe('writeDiskToStore / readDiskFromStore', () => {
  it('stores a disk, then an unchanged copy adds nothing, then a changed one adds only its changed chunks', async () => {
    const image = diskImage(10 * 4 * MiB + 12345); // 11 chunks, the last one short
    const src = join(dir, 'disk.raw');
    writeFileSync(src, image);
    await using store = await ChunkStore.forDestination(dir);
    const events: number[] = [];
    const first = await writeDiskToStore(src, store, { onProgress: (e) => events.push(e.bytesDone), size: image.length });
    // the disk's identity is its list: no whole-disk sha256 unless asked
    expect(first.rawSha256).toBeUndefined();
    expect(first.bytesRead).toBe(image.length);
    expect(first.chunks).toBe(11);
    expect(chunkCount(first.list)).toBe(11);
    expect(first.list).toMatchObject({ rawSize: image.length, chunkSize: 4 * MiB, rawSha256: undefined });
    // chunk kinds cycle text/random/zeros/half: the 3 zero chunks are one chunk in the store
    expect(first.zeroChunks).toBe(3);
    expect(first.chunksNew + first.chunksReused).toBe(11);
    // 3 zero chunks, 2 equal text chunks, 2 equal half-text chunks: 4 reused within the disk itself
    expect(first).toMatchObject({ chunksNew: 7, chunksReused: 4 });
    expect(first.bytesAdded).toBeGreaterThan(0);
    expect(events.at(-1)).toBe(image.length);
    for (let i = 0; i < 11; i++) expect(chunkIdAt(first.list, i)).toBe(sha(image.subarray(i * 4 * MiB, (i + 1) * 4 * MiB)));

    const second = await writeDiskToStore(src, store);
    expect(second).toMatchObject({ chunksNew: 0, chunksReused: 11, bytesAdded: 0, rawSha256: undefined });
    expect(second.list.ids.equals(first.list.ids)).toBe(true);
    const whole = await writeDiskToStore(src, store, { wholeSha256: true });
    expect(whole.rawSha256).toBe(sha(image));
    expect(whole.list.rawSha256).toBe(sha(image));
    expect(whole.list.ids.equals(first.list.ids)).toBe(true);

    // rewrite two chunks
    const changed = Buffer.from(image);
    changed.write('changed!', 1 * 4 * MiB + 100);
    changed.write('changed too', 7 * 4 * MiB);
    writeFileSync(src, changed);
    const third = await writeDiskToStore(src, store, { wholeSha256: true });
    expect(third.chunksNew).toBe(2);
    expect(third.rawSha256).toBe(sha(changed));

    // and back, from each list: a list without raw-sha256 is not hashed whole unless asked
    const out = join(dir, 'back.raw');
    const back = await readDiskFromStore(first.list, store, out);
    expect(back.rawSha256).toBeUndefined();
    expect(readFileSync(out).equals(image)).toBe(true);
    expect(statSync(out).mode & 0o777).toBe(0o600);
    expect((await readDiskFromStore(first.list, store, out, { wholeSha256: true })).rawSha256).toBe(sha(image));
    expect((await readDiskFromStore(third.list, store, out)).rawSha256).toBe(sha(changed));
    expect(readFileSync(out).equals(changed)).toBe(true);
  });

  it('reads from a stream, a FileHandle and a file descriptor alike', async () => {
    const image = diskImage(3 * 4 * MiB - 1, 2);
    await using store = await ChunkStore.forDestination(dir);
    const pieces = [];
    for (let off = 0; off < image.length; off += 999_983) pieces.push(image.subarray(off, off + 999_983));
    const fromStream = await writeDiskToStore(Readable.from(pieces), store, { wholeSha256: true });
    writeFileSync(join(dir, 'd'), image);
    const fh = await open(join(dir, 'd'));
    const fromHandle = await writeDiskToStore(fh, store);
    await fh.close();
    const fd = openSync(join(dir, 'd'), 'r');
    const fromFd = await writeDiskToStore(fd, store).finally(() => closeSync(fd));
    expect(fromFd.list.ids.equals(fromStream.list.ids)).toBe(true);
    expect(fromStream.rawSha256).toBe(sha(image));
    expect(fromHandle.list.ids.equals(fromStream.list.ids)).toBe(true);
    expect(fromHandle.chunksNew).toBe(0);
  });

  it('an empty disk is an empty list', async () => {
    writeFileSync(join(dir, 'empty'), '');
    await using store = await ChunkStore.forDestination(dir);
    const r = await writeDiskToStore(join(dir, 'empty'), store, { wholeSha256: true });
    expect(r).toMatchObject({ chunks: 0, bytesRead: 0, rawSha256: sha(Buffer.alloc(0)) });
    await writeChunkList(join(dir, 'empty.chunks'), r.list);
    expect((await readChunkList(join(dir, 'empty.chunks'))).rawSize).toBe(0);
  });

  it('restores zero chunks as holes: a file stays sparse, and sparse skips them on any target', async () => {
    const image = Buffer.alloc(6 * 4 * MiB);
    image.write('start', 0);
    image.write('end', image.length - 10);
    const src = join(dir, 'sparse.raw');
    writeFileSync(src, image);
    await using store = await ChunkStore.forDestination(dir);
    const { list } = await writeDiskToStore(src, store);
    const zero = (await zeroChunk(4 * MiB)).id;
    expect([...Array(6).keys()].map((i) => chunkIdAt(list, i) === zero)).toEqual([false, true, true, true, true, false]);
    const out = join(dir, 'out.raw');
    writeFileSync(out, Buffer.alloc(6 * 4 * MiB, 0xff)); // old content must not survive
    const r = await readDiskFromStore(list, store, out);
    expect(r.zeroChunksSkipped).toBe(4);
    expect(r.bytesWritten).toBe(2 * 4 * MiB);
    expect(sha(readFileSync(out))).toBe(sha(image));
    expect(statSync(out).blocks * 512).toBeLessThan(3 * 4 * MiB);
  });

  it('fails naming the chunk when a chunk file is damaged, with no whole-disk sha256 to compare', async () => {
    const image = diskImage(3 * 4 * MiB, 3);
    writeFileSync(join(dir, 'd'), image);
    await using store = await ChunkStore.forDestination(dir);
    const { list } = await writeDiskToStore(join(dir, 'd'), store);
    expect(list.rawSha256).toBeUndefined();
    const id = chunkIdAt(list, 1);
    const path = store.pathOf(id);
    const gz = readFileSync(path);
    gz[gz.length - 5] ^= 0xff; // inside the CRC/size trailer
    writeFileSync(path, gz);
    const err = await readDiskFromStore(list, store, join(dir, 'out')).catch((e: unknown) => e);
    expect(isChunkError(err, 'KVMBAK_CHUNK_CORRUPT')).toBe(true);
    expect((err as Error).message).toContain(id);
    rmSync(path);
    const gone = await readDiskFromStore(list, store, join(dir, 'out')).catch((e: unknown) => e);
    expect(isChunkError(gone, 'KVMBAK_CHUNK_MISSING')).toBe(true);
    expect((gone as Error).message).toContain(id);
  });

  it('refuses a list whose disk sha256 does not match what the chunks rebuild', async () => {
    const image = diskImage(4 * MiB + 1, 4);
    writeFileSync(join(dir, 'd'), image);
    await using store = await ChunkStore.forDestination(dir);
    const { list } = await writeDiskToStore(join(dir, 'd'), store);
    const wrong = { ...list, rawSha256: '0'.repeat(64) };
    await expect(readDiskFromStore(wrong, store, join(dir, 'out'))).rejects.toThrow(
      /the rebuilt disk hashes to [0-9a-f]{64}, its chunk list says 0{64}/,
    );
  });

  it('stops on abort', async () => {
    const image = diskImage(8 * 4 * MiB, 5);
    writeFileSync(join(dir, 'd'), image);
    await using store = await ChunkStore.forDestination(dir);
    const ac = new AbortController();
    const p = writeDiskToStore(join(dir, 'd'), store, { signal: ac.signal, concurrency: 1, onProgress: () => ac.abort() });
    await expect(p).rejects.toMatchObject({ code: 'ABORT_ERR' });
  });
});

describe('the by-hand restore in list.ts', () => {
  /** The <by-hand> lines of list.ts's comment, with the example paths replaced. */
  function byHandScript(store: ChunkStore, listPath: string, dest: string): string {
    const doc = readFileSync(LIST_SOURCE, 'utf8');
    const block = /<by-hand>\n([\s\S]*?)\n \* <\/by-hand>/.exec(doc);
    expect(block).not.toBeNull();
    const lines = (block as RegExpExecArray)[1].split('\n').map((l) => l.replace(/^ \* {5}/, ''));
    expect(lines).toHaveLength(4);
    return lines
      .join('\n')
      .replaceAll('/backup/.chunks', store.root)
      .replaceAll('/backup/web01/20261126T031500Z/disks/vda.chunks', listPath)
      .replaceAll('/dev/vg0/web01-root', dest);
  }

  it('checks every chunk against its name, rebuilds the disk with dd and prints its byte count, exactly as documented', async () => {
    const image = diskImage(9 * 4 * MiB + 4096 + 7, 6); // a zero chunk, random, text, a short last one
    writeFileSync(join(dir, 'disk.raw'), image);
    await using store = await ChunkStore.forDestination(dir);
    const { list } = await writeDiskToStore(join(dir, 'disk.raw'), store);
    const listPath = join(dir, 'vda.chunks');
    await writeChunkList(listPath, list);
    expect(statSync(listPath).mode & 0o777).toBe(0o600);
    expect(readFileSync(listPath, 'utf8')).not.toContain('raw-sha256');

    const dest = join(dir, 'restored.raw');
    const out = execFileSync('/bin/bash', ['-e', '-c', byHandScript(store, listPath, dest)], { encoding: 'utf8' })
      .trim()
      .split('\n');
    expect(readFileSync(dest).equals(image)).toBe(true);
    // dd's count, which the last line only prints when it is the list's raw size
    expect(out).toHaveLength(1);
    expect(out[0]).toMatch(new RegExp(`^${image.length} bytes \\(.*\\) copied`));
  });

  it('stops at a chunk whose data does not hash to its name, before writing anything', async () => {
    const image = diskImage(3 * 4 * MiB, 8);
    writeFileSync(join(dir, 'disk.raw'), image);
    await using store = await ChunkStore.forDestination(dir);
    const { list } = await writeDiskToStore(join(dir, 'disk.raw'), store);
    const listPath = join(dir, 'vda.chunks');
    await writeChunkList(listPath, list);
    // a chunk replaced by another valid gzip member: it decompresses fine, to other data
    const id = chunkIdAt(list, 1);
    writeFileSync(store.pathOf(id), readFileSync(store.pathOf(chunkIdAt(list, 2))));
    const dest = join(dir, 'restored.raw');
    let err: (Error & { status?: number; stdout?: string }) | undefined;
    try {
      execFileSync('/bin/bash', ['-e', '-c', byHandScript(store, listPath, dest)], { encoding: 'utf8', stdio: 'pipe' });
    } catch (e) {
      err = e as Error & { status?: number; stdout?: string };
    }
    expect(err?.status).toBe(1);
    expect(err?.stdout?.trim()).toBe(`damaged: ${id.slice(0, 4)}/${id}`);
    expect(existsSync(dest)).toBe(false);
  });

  it('the chunk files in list order are one multi-member gzip of the disk (zcat)', async () => {
    const image = diskImage(5 * 4 * MiB, 7);
    writeFileSync(join(dir, 'disk.raw'), image);
    await using store = await ChunkStore.forDestination(dir);
    const { list } = await writeDiskToStore(join(dir, 'disk.raw'), store);
    const files = [...Array(chunkCount(list)).keys()].map((i) => store.pathOf(chunkIdAt(list, i)));
    const cat = Buffer.concat(files.map((f) => readFileSync(f)));
    const z = execFileSync('zcat', [], { input: cat, maxBuffer: 64 * MiB });
    expect(z.equals(image)).toBe(true);
  });
});
