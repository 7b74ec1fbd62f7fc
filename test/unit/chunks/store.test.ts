import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ChunkStore, isChunkError, zeroChunk, CHUNK_SIZE } from '../../../src/index.js';
import { tempDir } from './helpers.js';

const sha = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');

let dir: string;
let cleanup: () => void;
beforeEach(() => ({ dir, cleanup } = tempDir()));
afterEach(() => cleanup());

describe('ChunkStore', () => {
  it('puts a chunk once, under its sha256, as one gzip member in a 4-hex-digit folder, 0600/0700', async () => {
    await using store = await ChunkStore.forDestination(dir);
    expect(store.root).toBe(join(dir, '.chunks'));
    const raw = Buffer.from('hello chunk store\n'.repeat(1000));
    const id = sha(raw);
    expect(await store.has(id)).toBe(false);
    const first = await store.put(raw);
    expect(first).toMatchObject({ id, added: true, zero: false });
    expect(first.bytesAdded).toBeGreaterThan(0);
    const path = join(dir, '.chunks', id.slice(0, 4), id);
    expect(store.pathOf(id)).toBe(path);
    expect(gunzipSync(readFileSync(path)).equals(raw)).toBe(true);
    expect(statSync(path).mode & 0o777).toBe(0o600);
    expect(statSync(join(dir, '.chunks')).mode & 0o777).toBe(0o700);
    expect(statSync(join(dir, '.chunks', id.slice(0, 4))).mode & 0o777).toBe(0o700);
    expect(await store.has(id)).toBe(true);
    const again = await store.put(raw);
    expect(again).toEqual({ id, added: false, bytesAdded: 0, zero: false });
    expect((await store.get(id)).equals(raw)).toBe(true);
    // no temporary file left behind
    expect(readdirSync(join(dir, '.chunks', id.slice(0, 4)))).toEqual([id]);
  });

  it('recognises the all-zero chunk without compressing it and stores it once, as a real member', async () => {
    await using store = await ChunkStore.forDestination(dir);
    const zeros = Buffer.alloc(CHUNK_SIZE);
    const zc = await zeroChunk(CHUNK_SIZE);
    expect(zc.id).toBe(sha(zeros));
    const r = await store.put(zeros);
    expect(r).toMatchObject({ id: zc.id, added: true, zero: true, bytesAdded: zc.member.byteLength });
    expect(zc.member.byteLength).toBeLessThan(8192);
    expect(readFileSync(store.pathOf(zc.id)).equals(zc.member)).toBe(true);
    expect(gunzipSync(zc.member).equals(zeros)).toBe(true);
    expect(await store.put(Buffer.alloc(CHUNK_SIZE))).toMatchObject({ added: false, zero: true });
    // a shorter zero chunk (a disk's last) is another chunk
    const short = await store.put(Buffer.alloc(4096));
    expect(short.id).toBe(sha(Buffer.alloc(4096)));
  });

  it('get() fails naming the chunk when a byte of its file is flipped, or it is missing', async () => {
    await using store = await ChunkStore.forDestination(dir);
    const raw = Buffer.from('precious data '.repeat(5000));
    const { id } = await store.put(raw);
    const path = store.pathOf(id);
    const gz = readFileSync(path);
    gz[Math.floor(gz.length / 2)] ^= 0x01;
    writeFileSync(path, gz);
    const err = await store.get(id).catch((e: unknown) => e);
    expect(isChunkError(err, 'KVMBAK_CHUNK_CORRUPT')).toBe(true);
    expect((err as Error).message).toContain(`chunk ${id} is damaged (${path})`);
    expect(err).toMatchObject({ chunkId: id, path });

    // A valid member whose content is not the id's: the hash check catches it.
    const other = Buffer.from('other data');
    const { compressMember } = await import('../../../src/index.js');
    writeFileSync(path, await compressMember(other, 1));
    const err2 = await store.get(id).catch((e: unknown) => e);
    expect((err2 as Error).message).toBe(`chunk ${id} is damaged (${path}): its content hashes to ${sha(other)}; every set that uses it is damaged`);

    const missing = 'ab'.repeat(32);
    const err3 = await store.get(missing).catch((e: unknown) => e);
    expect(isChunkError(err3, 'KVMBAK_CHUNK_MISSING')).toBe(true);
    expect((err3 as Error).message).toMatch(new RegExp(`^chunk ${missing} is missing from the store`));
    await expect(store.get('not-an-id')).rejects.toThrow(/is not a sha256/);
  });

  it('touches a chunk it finds (mtime = now) so its age counts from its last use', async () => {
    await using store = await ChunkStore.forDestination(dir);
    const { id } = await store.put(Buffer.from('x'.repeat(100)));
    const { utimesSync } = await import('node:fs');
    utimesSync(store.pathOf(id), 1000, 1000);
    expect(statSync(store.pathOf(id)).mtimeMs).toBe(1_000_000);
    await store.put(Buffer.from('x'.repeat(100)));
    expect(Date.now() - statSync(store.pathOf(id)).mtimeMs).toBeLessThan(60_000);
  });

  it('announces itself as a writer from its first put until close()', async () => {
    const store = await ChunkStore.forDestination(dir);
    expect(existsSync(join(store.root, '.writers'))).toBe(false);
    await store.put(Buffer.from('a'));
    expect(store.writing).toBe(true);
    const files = readdirSync(join(store.root, '.writers'));
    expect(files).toHaveLength(1);
    const owner = JSON.parse(readFileSync(join(store.root, '.writers', files[0]), 'utf8'));
    expect(owner).toMatchObject({ kind: 'writer', pid: process.pid });
    expect(statSync(join(store.root, '.writers', files[0])).mode & 0o777).toBe(0o600);
    await store.close();
    await store.close();
    expect(readdirSync(join(store.root, '.writers'))).toEqual([]);
    await expect(store.put(Buffer.from('b'))).rejects.toThrow(/is closed/);
  });

  it('reuse() announces the writer and touches a chunk it has, without its data; false for one it lacks', async () => {
    const first = await ChunkStore.forDestination(dir);
    const { id } = await first.put(Buffer.from('from the previous set'));
    await first.close();
    const { utimesSync } = await import('node:fs');
    utimesSync(first.pathOf(id), 1000, 1000);
    await using store = await ChunkStore.forDestination(dir);
    expect(store.writing).toBe(false);
    expect(await store.reuse(id)).toBe(true);
    expect(store.writing).toBe(true);
    expect(readdirSync(join(store.root, '.writers'))).toHaveLength(1);
    expect(Date.now() - statSync(store.pathOf(id)).mtimeMs).toBeLessThan(60_000);
    expect(await store.reuse('cd'.repeat(32))).toBe(false);
  });

  it('refuses a bad level and an oversized chunk', async () => {
    await expect(ChunkStore.open(join(dir, 's'), { level: 0 })).rejects.toThrow(/level must be a whole number from 1 to 9/);
    await using store = await ChunkStore.open(join(dir, 's'));
    await expect(store.put(Buffer.alloc(64 * 1024 * 1024 + 1))).rejects.toThrow(/at most 67108864 bytes/);
  });
});
