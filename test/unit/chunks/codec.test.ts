/**
 * The chunk codec: members made by the archive's worker threads (MemberCodec) are the members
 * `kvmbak image pack` writes, byte for byte; damaged members fail with the image's error kinds;
 * chunks written by other gzip writers (node:zlib before the native codec, gzip(1)) still read;
 * and a store that is never closed does not keep its process alive.
 */
import { execFileSync, spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gunzipSync, gzipSync } from 'node:zlib';
import { buildSync } from 'esbuild';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  ChunkStore,
  MemberCodec,
  archiveCounters,
  compressMember,
  decompressMember,
  isArchiveError,
  isChunkError,
  packImage,
} from '../../../src/index.js';
import { diskImage, tempDir } from './helpers.js';

const MiB = 1024 * 1024;
const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
const sha = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');

let dir: string;
let cleanup: () => void;
beforeEach(() => ({ dir, cleanup } = tempDir()));
afterEach(() => cleanup());

async function codecFailure(p: Promise<unknown>): Promise<{ code: string; message: string }> {
  const e = await p.then(
    () => undefined,
    (err: unknown) => err,
  );
  expect(isArchiveError(e), String(e)).toBe(true);
  return e as { code: string; message: string };
}

describe('MemberCodec', () => {
  it('makes the member `kvmbak image pack` makes of the same chunk, at each level, stored when it does not compress', async () => {
    const codec = new MemberCodec({ threads: 2 });
    try {
      const text = diskImage(4 * MiB, 4); // seed 4: a text chunk
      const random = randomBytes(4 * MiB);
      for (const [raw, level] of [
        [text, 3],
        [text, 1],
        [text, 9],
        [random, 3],
      ] as const) {
        writeFileSync(join(dir, 'raw'), raw);
        const packed = await packImage(join(dir, 'raw'), join(dir, 'img.gz'), { level, chunkSize: 4 * MiB, threads: 1, overwrite: true });
        expect(packed.members).toEqual([0]);
        const member = await codec.compress(raw, level);
        expect(member.equals(readFileSync(join(dir, 'img.gz'))), `level ${level}`).toBe(true);
        expect(gunzipSync(member).equals(raw)).toBe(true);
        expect((await codec.decompress(member, raw.byteLength)).equals(raw)).toBe(true);
        if (raw === random) {
          expect(packed.storedChunks).toBe(1);
          // stored deflate blocks: 5 bytes per block of up to 65535 bytes, plus the gzip header and trailer
          expect(member.byteLength).toBe(raw.byteLength + 5 * Math.ceil(raw.byteLength / 65535) + 18);
        }
      }
      const { data, sha256 } = await codec.decompressHashed(await codec.compress(text, 3), text.byteLength);
      expect(data.equals(text)).toBe(true);
      expect(sha256).toBe(sha(text));
      expect(await codec.sha256(random)).toBe(sha(random));
      expect(await codec.sha256(new Uint8Array(0))).toBe(sha(new Uint8Array(0)));
      // the empty chunk is a member too
      const empty = await codec.compress(new Uint8Array(0), 3);
      expect(gunzipSync(empty).byteLength).toBe(0);
      expect((await codec.decompress(empty, 0)).byteLength).toBe(0);
      // the caller's buffer is copied, not taken
      expect(text.byteLength).toBe(4 * MiB);
    } finally {
      await codec.destroy();
    }
    expect(archiveCounters().workersAlive).toBe(0);
  }, 120_000);

  it('refuses a damaged member with the image error kinds, in zlib words', async () => {
    const codec = new MemberCodec({ threads: 1 });
    try {
      const raw = diskImage(1 * MiB, 4);
      const member = await codec.compress(raw, 3);
      const truncated = await codecFailure(codec.decompress(member.subarray(0, member.byteLength - 100), raw.byteLength));
      expect(truncated.code).toBe('KVMBAK_ARCHIVE_TRUNCATED');
      expect(truncated.message).toMatch(/^the gzip member \(\d+ bytes\) ends early: unexpected end of file$/);
      const flipped = Buffer.from(member);
      flipped[Math.floor(flipped.byteLength / 2)] ^= 0x10;
      expect((await codecFailure(codec.decompress(flipped, raw.byteLength))).code).toBe('KVMBAK_ARCHIVE_CORRUPT');
      const trailing = Buffer.concat([member, Buffer.from('garbage')]);
      const t = await codecFailure(codec.decompress(trailing, raw.byteLength));
      // zlib reads what follows a member as the next one
      expect(t.code).toBe('KVMBAK_ARCHIVE_CORRUPT');
      expect(t.message).toBe(`the gzip member (${trailing.byteLength} bytes) does not decompress: incorrect header check`);
      const size = await codecFailure(codec.decompress(member, raw.byteLength - 1));
      expect(size.code).toBe('KVMBAK_ARCHIVE_SIZE');
      expect((await codecFailure(codec.decompress(Buffer.alloc(0), 1))).code).toBe('KVMBAK_ARCHIVE_TRUNCATED');
      await expect(codec.compress(raw, 0)).rejects.toThrow(/level must be a whole number from 1 to 9/);
      // a bad member does not break the codec
      expect((await codec.decompress(member, raw.byteLength)).equals(raw)).toBe(true);
    } finally {
      await codec.destroy();
    }
  });

  it('decompressMember bounds a chunk by its trailer before decompressing it', async () => {
    const member = await compressMember(Buffer.alloc(2 * MiB, 1), 1);
    expect((await decompressMember(member)).byteLength).toBe(2 * MiB);
    const big = await codecFailure(decompressMember(member, 1 * MiB));
    expect(big).toMatchObject({
      code: 'KVMBAK_ARCHIVE_SIZE',
      message: `the gzip member (${member.byteLength} bytes) does not hold the expected bytes: member holds more than ${1 * MiB} bytes`,
    });
    expect((await codecFailure(decompressMember(Buffer.from([0x1f, 0x8b])))).code).toBe('KVMBAK_ARCHIVE_TRUNCATED');
  }, 60_000);
});

describe('ChunkStore on the native codec', () => {
  it('reads chunks other gzip writers made (node:zlib, gzip(1) with a file name in its header)', async () => {
    await using store = await ChunkStore.forDestination(dir);
    const a = diskImage(4 * MiB, 4);
    const b = Buffer.from('written by gzip(1)\n'.repeat(20_000));
    const idA = sha(a);
    const idB = sha(b);
    mkdirSync(join(store.root, idA.slice(0, 4)), { recursive: true });
    writeFileSync(store.pathOf(idA), gzipSync(a, { level: 6 }));
    mkdirSync(join(store.root, idB.slice(0, 4)), { recursive: true });
    writeFileSync(join(dir, 'named.txt'), b);
    const gz = execFileSync('gzip', ['-c', '-n', '--name', join(dir, 'named.txt')]);
    expect(gz[3]! & 0x08).toBe(0x08); // FNAME set
    writeFileSync(store.pathOf(idB), gz);
    expect((await store.get(idA)).equals(a)).toBe(true);
    expect((await store.get(idB)).equals(b)).toBe(true);
    // what the store writes is one member, as pack writes it (libdeflate level 2 for level 3)
    const c = diskImage(4 * MiB, 8);
    const { id } = await store.put(c);
    expect(readFileSync(store.pathOf(id)).equals(await compressMember(c, 3))).toBe(true);
  });

  it('names the chunk when its member is damaged or holds more than the list expects', async () => {
    await using store = await ChunkStore.forDestination(dir);
    const raw = diskImage(4 * MiB, 4);
    const { id } = await store.put(raw);
    const err = await store.get(id, { maxBytes: 1 * MiB }).catch((e: unknown) => e);
    expect(isChunkError(err, 'KVMBAK_CHUNK_CORRUPT')).toBe(true);
    expect((err as Error).message).toBe(
      `chunk ${id} is damaged (${store.pathOf(id)}): it does not decompress (the gzip member (${readFileSync(store.pathOf(id)).byteLength} bytes) does not hold the expected bytes: member holds more than ${1 * MiB} bytes); every set that uses it is damaged`,
    );
    const gz = readFileSync(store.pathOf(id));
    writeFileSync(store.pathOf(id), gz.subarray(0, gz.byteLength - 4096));
    const cut = await store.get(id).catch((e: unknown) => e);
    expect(isChunkError(cut, 'KVMBAK_CHUNK_CORRUPT')).toBe(true);
    expect((cut as Error).message).toMatch(/it does not decompress \(the gzip member \(\d+ bytes\) ends early: unexpected end of file\)/);
  });

  it('ends its codec threads on close(); a store never closed does not keep its process alive', async () => {
    const before = archiveCounters().workersAlive; // the shared codec's, from the tests above
    const store = await ChunkStore.forDestination(dir, { threads: 2 });
    await store.put(diskImage(4 * MiB, 4));
    expect(archiveCounters().workersAlive).toBe(before + 1);
    await store.close();
    expect(archiveCounters().workersAlive).toBe(before);

    // The library bundled as it ships, in a child process that uses a store and never closes it.
    const cache = join(ROOT, 'node_modules', '.cache', `kvmbak-chunks-test-${process.pid}`);
    mkdirSync(cache, { recursive: true });
    try {
      writeFileSync(
        join(cache, 'entry.ts'),
        `import { ChunkStore } from ${JSON.stringify(join(ROOT, 'src', 'index.ts'))};
const store = await ChunkStore.open(process.argv[2]);
const raw = Buffer.alloc(1 << 20, 7);
const { id } = await store.put(raw);
const back = await store.get(id);
process.stdout.write(JSON.stringify({ id, same: back.equals(raw) }) + '\\n');
`,
      );
      buildSync({
        entryPoints: [join(cache, 'entry.ts')],
        outfile: join(cache, 'child.mjs'),
        bundle: true,
        platform: 'node',
        format: 'esm',
        packages: 'external',
        logLevel: 'error',
      });
      const t0 = Date.now();
      const r = await new Promise<{ code: number | null; out: string; err: string }>((resolve) => {
        const p = spawn(process.execPath, [join(cache, 'child.mjs'), join(dir, 'other')], { stdio: ['ignore', 'pipe', 'pipe'] });
        let out = '';
        let err = '';
        p.stdout.on('data', (d: Buffer) => (out += d.toString()));
        p.stderr.on('data', (d: Buffer) => (err += d.toString()));
        const killer = setTimeout(() => p.kill('SIGKILL'), 20_000);
        p.on('exit', (code) => {
          clearTimeout(killer);
          resolve({ code, out, err });
        });
      });
      expect(r, r.err).toMatchObject({ code: 0 });
      expect(JSON.parse(r.out)).toEqual({ id: sha(Buffer.alloc(1 << 20, 7)), same: true });
      expect(Date.now() - t0).toBeLessThan(20_000);
    } finally {
      rmSync(cache, { recursive: true, force: true });
    }
  }, 60_000);
});
