import { spawn } from 'node:child_process';
import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { archiveCounters, hashImage, packImage, unpackImage, type ArchiveProgress } from '../../../src/archive/index.js';
import { CHUNK, execFileP, gzipTest, mixedData, runToFile, sha256, sha256File, tempDir, writeData, zcatSha256, noPartial } from './helpers.js';

let dir: string;
let cleanup: () => Promise<void>;
beforeAll(async () => ({ dir, cleanup } = await tempDir()));
afterAll(async () => cleanup());

const sizes: [string, number][] = [
  ['0 bytes', 0],
  ['1 byte', 1],
  ['chunk size - 1', CHUNK - 1],
  ['chunk size', CHUNK],
  ['chunk size + 1', CHUNK + 1],
  ['not a multiple of 512', 3 * CHUNK + 777],
  ['several chunks of zero/random/text', 11 * CHUNK + 4096],
];

describe('packImage → unpackImage round trips', () => {
  it.each(sizes)('%s: byte-exact, zcat-compatible, member offsets start gzip members', async (_name, size) => {
    const base = join(dir, `size-${size}`);
    const data = mixedData(size, 'rztzzr');
    await writeData(`${base}.raw`, data);

    const packed = await packImage(`${base}.raw`, `${base}.gz`, { chunkSize: CHUNK, threads: 2 });
    expect(packed.bytes).toBe(size);
    expect(packed.sha256).toBe(sha256(data));
    expect(packed.chunkSize).toBe(CHUNK);
    expect(packed.level).toBe(3);
    const gz = await readFile(`${base}.gz`);
    expect(packed.storedBytes).toBe(gz.byteLength);
    expect(packed.fileSha256).toBe(sha256(gz));
    expect(packed.members.length).toBe(Math.max(1, Math.ceil(size / CHUNK)));
    for (const off of packed.members) expect([gz[off], gz[off + 1]]).toEqual([0x1f, 0x8b]);
    expect(packed.members[0]).toBe(0);
    expect(noPartial(`${base}.gz`)).toBe(true);
    expect((await stat(`${base}.gz`)).mode & 0o777).toBe(0o600);

    // the real gzip tools read it as one stream
    await gzipTest(`${base}.gz`);
    const z = await zcatSha256(`${base}.gz`);
    expect(z).toEqual({ sha256: packed.sha256, bytes: size });

    // parallel (indexed) and streamed unpack give the same bytes
    const par = await unpackImage(`${base}.gz`, `${base}.par`, { index: packed, expectSha256: packed.sha256, threads: 2, hashFile: true });
    expect(par).toMatchObject({
      bytes: size,
      sha256: packed.sha256,
      fileSha256: packed.fileSha256,
      verified: true,
      mode: 'parallel',
      destKind: 'file',
    });
    expect(sha256(await readFile(`${base}.par`))).toBe(packed.sha256);
    expect((await stat(`${base}.par`)).mode & 0o777).toBe(0o600);

    const str = await unpackImage(`${base}.gz`, `${base}.str`, { expectSha256: packed.sha256, expectBytes: size, hashFile: true });
    expect(str).toMatchObject({ bytes: size, sha256: packed.sha256, fileSha256: packed.fileSha256, mode: 'stream' });
    const noFileHash = await unpackImage(`${base}.gz`, `${base}.str`, { index: packed, overwrite: true });
    expect(noFileHash.fileSha256).toBeUndefined();
    expect(Buffer.compare(await readFile(`${base}.str`), data)).toBe(0);

    const h = await hashImage(`${base}.gz`, { index: packed });
    expect(h).toMatchObject({ bytes: size, sha256: packed.sha256, fileSha256: packed.fileSha256, storedBytes: gz.byteLength });
    const hs = await hashImage(`${base}.gz`);
    expect(hs).toMatchObject({ bytes: size, sha256: packed.sha256, fileSha256: packed.fileSha256 });
  });

  it('counts zero chunks, writes them as one precomputed member, and leaves holes in a new file', async () => {
    const src = join(dir, 'zeros.raw');
    // 8 zero chunks, one random chunk, 7 zero chunks, a short zero tail
    const data = Buffer.concat([Buffer.alloc(8 * CHUNK), mixedData(CHUNK, 'r'), Buffer.alloc(7 * CHUNK + 100)]);
    await writeData(src, data);
    const packed = await packImage(src, join(dir, 'zeros.gz'), { chunkSize: CHUNK });
    expect(packed.zeroChunks).toBe(16);
    const gz = await readFile(join(dir, 'zeros.gz'));
    const member = (i: number) => gz.subarray(packed.members[i], packed.members[i + 1] ?? gz.byteLength);
    // every full zero chunk is the very same member
    for (const i of [1, 2, 7, 9, 15]) expect(Buffer.compare(member(i), member(0))).toBe(0);
    expect(member(0).byteLength).toBeLessThan(1024);
    await gzipTest(join(dir, 'zeros.gz'));

    const u = await unpackImage(join(dir, 'zeros.gz'), join(dir, 'zeros.out'), { index: packed, expectSha256: packed.sha256 });
    expect(u.zeroChunks).toBe(16);
    const st = await stat(join(dir, 'zeros.out'));
    expect(st.size).toBe(data.byteLength);
    // holes: far fewer blocks allocated than the size (only the random chunk)
    expect(st.blocks * 512).toBeLessThan(data.byteLength / 4);
    expect(sha256(await readFile(join(dir, 'zeros.out')))).toBe(packed.sha256);
  });

  it('stores incompressible chunks instead of compressing them, compresses the rest', async () => {
    const src = join(dir, 'stored.raw');
    const data = mixedData(4 * CHUNK, 'rtrz');
    await writeData(src, data);
    const packed = await packImage(src, join(dir, 'stored.gz'), { chunkSize: CHUNK });
    expect(packed).toMatchObject({ storedChunks: 2, zeroChunks: 1 });
    const gz = await readFile(join(dir, 'stored.gz'));
    const size = (i: number) => (packed.members[i + 1] ?? gz.byteLength) - packed.members[i]!;
    // stored: the data plus a few bytes of block headers and the gzip frame
    for (const i of [0, 2]) expect(size(i)).toBeGreaterThan(CHUNK);
    for (const i of [0, 2]) expect(size(i)).toBeLessThan(CHUNK + 64);
    expect(size(1)).toBeLessThan(CHUNK / 2);
    expect((await zcatSha256(join(dir, 'stored.gz'))).sha256).toBe(sha256(data));
  });

  it('writes the same bytes whatever the thread count (members are deterministic)', async () => {
    const src = join(dir, 'det.raw');
    await writeData(src, mixedData(9 * CHUNK + 5, 'trzt'));
    const a = await packImage(src, join(dir, 'det1.gz'), { chunkSize: CHUNK, threads: 1 });
    const b = await packImage(src, join(dir, 'det3.gz'), { chunkSize: CHUNK, threads: 3 });
    expect(b.fileSha256).toBe(a.fileSha256);
    expect(b.members).toEqual(a.members);
  });

  it('honours the level: level 1 and level 9 differ, both restore', async () => {
    const src = join(dir, 'lvl.raw');
    await writeData(src, mixedData(4 * CHUNK, 't'));
    const l1 = await packImage(src, join(dir, 'l1.gz'), { chunkSize: CHUNK, level: 1 });
    const l9 = await packImage(src, join(dir, 'l9.gz'), { chunkSize: '64K', level: 9 });
    expect(l9.level).toBe(9);
    expect(l9.storedBytes).toBeLessThan(l1.storedBytes);
    expect((await zcatSha256(join(dir, 'l1.gz'))).sha256).toBe(l1.sha256);
    expect((await zcatSha256(join(dir, 'l9.gz'))).sha256).toBe(l9.sha256);
  });

  it('unpacks a plain `gzip -3` stream made by the real gzip (no index)', async () => {
    const src = join(dir, 'plain.raw');
    const data = mixedData(5 * CHUNK + 321, 'tzr');
    await writeData(src, data);
    await runToFile('gzip', ['-3', '-c', src], join(dir, 'plain.gz'));
    const u = await unpackImage(join(dir, 'plain.gz'), join(dir, 'plain.out'), { expectSha256: sha256(data), hashFile: true });
    expect(u).toMatchObject({ bytes: data.byteLength, verified: true, mode: 'stream', fileSha256: await sha256File(join(dir, 'plain.gz')) });
    expect(Buffer.compare(await readFile(join(dir, 'plain.out')), data)).toBe(0);
  });

  it('unpacks a multi-member file made by concatenating real gzip outputs', async () => {
    const a = mixedData(CHUNK + 3, 't');
    const b = mixedData(2 * CHUNK, 'zr');
    await writeData(join(dir, 'a.raw'), a);
    await writeData(join(dir, 'b.raw'), b);
    await runToFile('gzip', ['-1', '-c', join(dir, 'a.raw'), join(dir, 'b.raw')], join(dir, 'ab.gz'));
    const u = await unpackImage(join(dir, 'ab.gz'), join(dir, 'ab.out'));
    expect(u.bytes).toBe(a.byteLength + b.byteLength);
    expect(Buffer.compare(await readFile(join(dir, 'ab.out')), Buffer.concat([a, b]))).toBe(0);
  });

  it('replaces an existing destination only when asked', async () => {
    const src = join(dir, 'ow.raw');
    await writeData(src, mixedData(CHUNK, 't'));
    await writeData(join(dir, 'ow.gz'), Buffer.from('old'));
    await expect(packImage(src, join(dir, 'ow.gz'))).rejects.toMatchObject({ code: 'KVMBAK_DEST_EXISTS' });
    expect((await readFile(join(dir, 'ow.gz'))).toString()).toBe('old');
    const r = await packImage(src, join(dir, 'ow.gz'), { overwrite: true });
    expect(r.fileSha256).toBe(await sha256File(join(dir, 'ow.gz')));
    await writeData(join(dir, 'ow.out'), Buffer.from('old'));
    await expect(unpackImage(join(dir, 'ow.gz'), join(dir, 'ow.out'), { index: r })).rejects.toMatchObject({ code: 'KVMBAK_DEST_EXISTS' });
    await unpackImage(join(dir, 'ow.gz'), join(dir, 'ow.out'), { index: r, overwrite: true });
    expect(await sha256File(join(dir, 'ow.out'))).toBe(r.sha256);
  });

  it('reports throttled progress ending with the totals', async () => {
    const src = join(dir, 'prog.raw');
    const data = mixedData(20 * CHUNK, 'rt');
    await writeData(src, data);
    const events: ArchiveProgress[] = [];
    const r = await packImage(src, join(dir, 'prog.gz'), { chunkSize: CHUNK, onProgress: (e) => events.push(e) });
    expect(events.length).toBeGreaterThan(0);
    const last = events.at(-1)!;
    expect(last).toMatchObject({ phase: 'sync', bytesDone: data.byteLength, bytesTotal: data.byteLength, storedBytes: r.storedBytes });
    for (let i = 1; i < events.length; i++) expect(events[i]!.bytesDone).toBeGreaterThanOrEqual(events[i - 1]!.bytesDone);
    const uev: ArchiveProgress[] = [];
    await unpackImage(join(dir, 'prog.gz'), join(dir, 'prog.out'), { index: r, onProgress: (e) => uev.push(e) });
    expect(uev.at(-1)).toMatchObject({ phase: 'sync', bytesDone: data.byteLength, bytesTotal: data.byteLength });
    expect(uev.some((e) => e.phase === 'unpack')).toBe(true);
  });

  it('packs from a pipe (no positions, no size) and unpacks from one', async () => {
    const data = mixedData(5 * CHUNK + 99, 'tzr');
    await writeData(join(dir, 'pipe.raw'), data);
    await execFileP('mkfifo', [join(dir, 'in.fifo')]);
    const feed = spawn('sh', ['-c', 'cat "$1" > "$2"', 'sh', join(dir, 'pipe.raw'), join(dir, 'in.fifo')]);
    const fed = new Promise((r) => feed.on('close', r));
    const packed = await packImage(join(dir, 'in.fifo'), join(dir, 'pipe.gz'), { chunkSize: CHUNK });
    await fed;
    expect(packed).toMatchObject({ bytes: data.byteLength, sha256: sha256(data) });
    expect((await zcatSha256(join(dir, 'pipe.gz'))).sha256).toBe(sha256(data));

    await execFileP('mkfifo', [join(dir, 'gz.fifo')]);
    const feed2 = spawn('sh', ['-c', 'cat "$1" > "$2"', 'sh', join(dir, 'pipe.gz'), join(dir, 'gz.fifo')]);
    const fed2 = new Promise((r) => feed2.on('close', r));
    // an index cannot be used on a pipe: it streams
    const u = await unpackImage(join(dir, 'gz.fifo'), join(dir, 'pipe.out'), { index: packed, expectSha256: packed.sha256, hashFile: true });
    await fed2;
    expect(u).toMatchObject({ mode: 'stream', bytes: data.byteLength, verified: true, fileSha256: packed.fileSha256 });
  });

  it('leaves no worker threads or chunks behind', () => {
    const c = archiveCounters();
    expect(c.operations).toBe(0);
    expect(c.chunksInFlight).toBe(0);
    expect(c.workersAlive).toBe(0);
  });
});
