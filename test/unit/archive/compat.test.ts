/**
 * Images written by the native codec (libdeflate) and by the previous engine
 * (node's zlib, one member per chunk: level 3 memLevel 8, all-zero chunks as
 * a level 9 run-length member, incompressible chunks stored at level 0) are
 * the same format: each engine reads the other's, and zcat reads both,
 * byte-exact, on awkward sizes.
 */
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { constants, deflateRawSync, gunzipSync, gzipSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { hashImage, packImage, unpackImage, type ImageIndex } from '../../../src/archive/index.js';
import { CHUNK, gzipTest, mixedData, rejectionOf, sha256, tempDir, writeData, zcatSha256 } from './helpers.js';

let dir: string;
let cleanup: () => Promise<void>;
beforeAll(async () => ({ dir, cleanup } = await tempDir('kvmbak-compat-')));
afterAll(async () => cleanup());

/** The previous engine's output for `data`: members made by zlib as it made them, and its index. */
function zlibEngine(data: Buffer): { gz: Buffer; index: ImageIndex } {
  const members: Buffer[] = [];
  const offsets: number[] = [];
  let at = 0;
  for (let pos = 0; pos === 0 || pos < data.byteLength; pos += CHUNK) {
    const chunk = data.subarray(pos, pos + CHUNK);
    let m: Buffer;
    if (chunk.every((b) => b === 0)) m = gzipSync(chunk, { level: 9, memLevel: 9, strategy: constants.Z_RLE });
    else {
      const incompressible = chunk.byteLength >= 4096 && deflateRawSync(chunk, { level: 1 }).byteLength >= chunk.byteLength * 0.99;
      m = gzipSync(chunk, { level: incompressible ? 0 : 3, memLevel: 8 });
    }
    offsets.push(at);
    members.push(m);
    at += m.byteLength;
  }
  return { gz: Buffer.concat(members), index: { chunkSize: CHUNK, bytes: data.byteLength, members: offsets, storedBytes: at } };
}

/** The previous engine's reading: zlib per member (with the index) and zlib over the whole file. */
function zlibRead(gz: Buffer, index: ImageIndex): Buffer[] {
  const ends = [...index.members.slice(1), gz.byteLength];
  const perMember = Buffer.concat(index.members.map((off, i) => gunzipSync(gz.subarray(off, ends[i]))));
  return [perMember, gunzipSync(gz)];
}

const sizes: [string, number][] = [
  ['0 bytes', 0],
  ['1 byte', 1],
  ['chunk size - 1', CHUNK - 1],
  ['chunk size + 1', CHUNK + 1],
  ['not a multiple of 512', 4 * CHUNK + 777],
];

describe('native codec ⇄ previous zlib engine', () => {
  it.each(sizes)('%s: each reads the other, zcat reads both', async (_name, size) => {
    const base = join(dir, `s${size}`);
    const data = mixedData(size, 'tzr');
    await writeData(`${base}.raw`, data);

    // written by the native codec, read by zlib and zcat
    const packed = await packImage(`${base}.raw`, `${base}.native.gz`, { chunkSize: CHUNK, threads: 2 });
    const nativeGz = await readFile(`${base}.native.gz`);
    for (const out of zlibRead(nativeGz, packed)) expect(out.equals(data)).toBe(true);
    expect(await zcatSha256(`${base}.native.gz`)).toEqual({ sha256: sha256(data), bytes: size });

    // written by the previous engine, read by the native codec (indexed), by the stream path and by zcat
    const old = zlibEngine(data);
    await writeFile(`${base}.zlib.gz`, old.gz);
    await gzipTest(`${base}.zlib.gz`);
    expect(await zcatSha256(`${base}.zlib.gz`)).toEqual({ sha256: sha256(data), bytes: size });
    const par = await unpackImage(`${base}.zlib.gz`, `${base}.zlib.par`, { index: old.index, expectSha256: sha256(data) });
    expect(par).toMatchObject({ mode: 'parallel', verified: true, bytes: size });
    expect((await readFile(`${base}.zlib.par`)).equals(data)).toBe(true);
    const str = await unpackImage(`${base}.zlib.gz`, `${base}.zlib.str`);
    expect(str.sha256).toBe(sha256(data));
    expect((await readFile(`${base}.zlib.str`)).equals(data)).toBe(true);
    expect((await hashImage(`${base}.zlib.gz`, { index: old.index })).sha256).toBe(sha256(data));
  });
});

describe('a corrupt member of either engine: the same clear errors', () => {
  let data: Buffer;
  beforeAll(() => {
    data = mixedData(5 * CHUNK + 300, 'tzr');
  });

  const cases = (gz: Buffer, index: ImageIndex) => {
    const m = 3; // a text member
    const end = index.members[m + 1]!;
    const flip = Buffer.from(gz);
    flip[Math.floor((index.members[m]! + end) / 2)]! ^= 0x20;
    const isize = Buffer.from(gz);
    isize[end - 2]! ^= 0x01; // ISIZE is the member's last 4 bytes (little-endian)
    const cut = gz.subarray(0, index.members[m]! + 40);
    return { m, flip, isize, cut };
  };

  it.each(['native', 'zlib'])('written by the %s engine: flipped byte, wrong ISIZE, truncated', async (engine) => {
    await writeData(join(dir, 'c.raw'), data);
    let gz: Buffer;
    let index: ImageIndex;
    if (engine === 'native') {
      index = await packImage(join(dir, 'c.raw'), join(dir, `c.${engine}.gz`), { chunkSize: CHUNK });
      gz = await readFile(join(dir, `c.${engine}.gz`));
    } else ({ gz, index } = zlibEngine(data));
    const { m, flip, isize, cut } = cases(gz, index);
    const where = `gzip member #${m} at compressed offset ${index.members[m]} (raw offset ${m * CHUNK})`;

    await writeFile(join(dir, 'flip.gz'), flip);
    const f = await rejectionOf(unpackImage(join(dir, 'flip.gz'), join(dir, 'flip.out'), { index }));
    expect(f).toMatchObject({ code: 'KVMBAK_ARCHIVE_CORRUPT', offset: index.members[m] });
    expect(f.message).toMatch(
      new RegExp(
        `^image .*flip\\.gz is corrupt: ${where.replace(/[()]/g, '\\$&')} does not decompress \\([a-z /]+\\); the image is damaged — use another copy$`,
      ),
    );

    await writeFile(join(dir, 'isize.gz'), isize);
    const s = await rejectionOf(unpackImage(join(dir, 'isize.gz'), join(dir, 'isize.out'), { index }));
    expect(s.message).toBe(
      `image ${join(dir, 'isize.gz')} is corrupt: ${where} does not decompress (incorrect length check); the image is damaged — use another copy`,
    );
    const s2 = await rejectionOf(unpackImage(join(dir, 'isize.gz'), join(dir, 'isize.out')));
    expect(s2.code).toBe('KVMBAK_ARCHIVE_CORRUPT');
    expect(s2.message).toContain(': incorrect length check; ');

    await writeFile(join(dir, 'cut.gz'), cut);
    const { storedBytes: _omit, ...offsetsOnly } = index;
    const c = await rejectionOf(unpackImage(join(dir, 'cut.gz'), join(dir, 'cut.out'), { index: offsetsOnly }));
    expect(c.code).toBe('KVMBAK_ARCHIVE_TRUNCATED');
    const c2 = await rejectionOf(unpackImage(join(dir, 'cut.gz'), join(dir, 'cut.out')));
    expect(c2.code).toBe('KVMBAK_ARCHIVE_TRUNCATED');
    expect(c2.message).toMatch(/^image .*cut\.gz is truncated: it ends inside a gzip member/);
  });
});
