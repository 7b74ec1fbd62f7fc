import { mkdir, readdir, readFile, symlink, writeFile, appendFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isAbortError, isKvmbakError } from '../../../src/errors.js';
import { archiveCounters, hashImage, isArchiveError, packImage, chunkWindow, unpackImage, type PackResult } from '../../../src/archive/index.js';
import { CHUNK, gone, mixedData, rejectionOf, runToFile, tempDir, writeData, noPartial } from './helpers.js';

let dir: string;
let cleanup: () => Promise<void>;
let good: PackResult;
let goodGz: Buffer;
beforeAll(async () => {
  ({ dir, cleanup } = await tempDir());
  // member 1 is random data (stored deflate blocks): a flipped byte there is a clean CRC failure
  await writeData(join(dir, 'src.raw'), mixedData(6 * CHUNK + 1000, 'trzt'));
  good = await packImage(join(dir, 'src.raw'), join(dir, 'good.gz'), { chunkSize: CHUNK });
  goodGz = await readFile(join(dir, 'good.gz'));
});
afterAll(async () => cleanup());

/** One clear line, a kvmbak code, nothing left at dest or a temporary file of it. */
function expectClean(e: Error & { code?: string }, code: string, dest?: string): void {
  expect(isKvmbakError(e)).toBe(true);
  expect(e.code).toBe(code);
  expect(e.message).not.toContain('\n');
  if (dest) {
    expect(gone(dest)).toBe(true);
    expect(noPartial(dest)).toBe(true);
  }
}

describe('bad input: one clear line, nothing left behind', () => {
  it('missing source', async () => {
    const dest = join(dir, 'x.gz');
    const e = await rejectionOf(packImage(join(dir, 'nope.raw'), dest));
    expectClean(e, 'KVMBAK_SOURCE_MISSING', dest);
    expect(e.message).toBe(`source ${join(dir, 'nope.raw')} does not exist; check the path`);
    const u = await rejectionOf(unpackImage(join(dir, 'nope.gz'), join(dir, 'x.out')));
    expectClean(u, 'KVMBAK_SOURCE_MISSING', join(dir, 'x.out'));
    expect(u.message).toMatch(/^image .*nope\.gz does not exist/);
  });

  it('source is a folder', async () => {
    const e = await rejectionOf(packImage(dir, join(dir, 'x.gz')));
    expectClean(e, 'KVMBAK_SOURCE_UNREADABLE', join(dir, 'x.gz'));
    expect(e.message).toMatch(/is a folder; give a file or a block device$/);
  });

  it('destination folder missing', async () => {
    const dest = join(dir, 'no', 'such', 'dir', 'x.gz');
    const e = await rejectionOf(packImage(join(dir, 'src.raw'), dest));
    expectClean(e, 'KVMBAK_DEST_DIR_MISSING', dest);
    expect(e.message).toMatch(/^destination folder .*no\/such\/dir does not exist; create it first/);
    const u = await rejectionOf(unpackImage(join(dir, 'good.gz'), dest, { index: good }));
    expectClean(u, 'KVMBAK_DEST_DIR_MISSING', dest);
  });

  it('empty image', async () => {
    await writeFile(join(dir, 'empty.gz'), '');
    const e = await rejectionOf(unpackImage(join(dir, 'empty.gz'), join(dir, 'empty.out')));
    expectClean(e, 'KVMBAK_ARCHIVE_TRUNCATED', join(dir, 'empty.out'));
  });

  describe('truncated image', () => {
    const cut = async (name: string, len: number) => {
      await writeFile(join(dir, name), goodGz.subarray(0, len));
      return join(dir, name);
    };

    it('with an index that knows the size: refused before the destination is created', async () => {
      const img = await cut('t1.gz', good.storedBytes - 10);
      const dest = join(dir, 't1.out');
      const e = await rejectionOf(unpackImage(img, dest, { index: good }));
      expectClean(e, 'KVMBAK_ARCHIVE_TRUNCATED', dest);
      expect(e.message).toBe(
        `image ${img} is truncated: it has ${good.storedBytes - 10} bytes but should have ${good.storedBytes}; the copy is incomplete — use a complete copy`,
      );
    });

    it('with offsets only: the last member ends early', async () => {
      const img = await cut('t2.gz', good.storedBytes - 10);
      const dest = join(dir, 't2.out');
      const { storedBytes: _omit, ...offsetsOnly } = good;
      const e = await rejectionOf(unpackImage(img, dest, { index: offsetsOnly }));
      expectClean(e, 'KVMBAK_ARCHIVE_TRUNCATED', dest);
      const last = good.members.length - 1;
      expect(e.message).toContain(`gzip member #${last} at compressed offset ${good.members[last]}`);
      expect(e.offset).toBe(good.members[last]);
    });

    it('with offsets only: members missing altogether', async () => {
      const img = await cut('t3.gz', good.members[3]! - 1);
      const { storedBytes: _omit, ...offsetsOnly } = good;
      const e = await rejectionOf(unpackImage(img, join(dir, 't3.out'), { index: offsetsOnly }));
      expectClean(e, 'KVMBAK_ARCHIVE_TRUNCATED', join(dir, 't3.out'));
    });

    it('streamed (no index), and when hashing', async () => {
      const img = await cut('t4.gz', Math.floor(good.storedBytes / 2));
      const dest = join(dir, 't4.out');
      const e = await rejectionOf(unpackImage(img, dest));
      expectClean(e, 'KVMBAK_ARCHIVE_TRUNCATED', dest);
      expect(e.message).toBe(
        `image ${img} is truncated: it ends inside a gzip member (at compressed offset ${Math.floor(good.storedBytes / 2)}, after ${e.rawOffset} raw bytes); use a complete copy`,
      );
      expectClean(await rejectionOf(hashImage(img)), 'KVMBAK_ARCHIVE_TRUNCATED');
      const { storedBytes: _omit, ...offsetsOnly } = good;
      expectClean(await rejectionOf(hashImage(img, { index: offsetsOnly })), 'KVMBAK_ARCHIVE_TRUNCATED');
    });
  });

  describe('corrupt image', () => {
    let img: string;
    let crc: string;
    beforeAll(async () => {
      // a flipped bit in the middle of member 1's deflate data
      const bad = Buffer.from(goodGz);
      const at = Math.floor((good.members[1]! + good.members[2]!) / 2);
      bad[at] = bad[at]! ^ 0x40;
      img = join(dir, 'flip.gz');
      await writeFile(img, bad);
      // a flipped bit in member 2's CRC32 trailer: the data decodes, the check fails
      const bad2 = Buffer.from(goodGz);
      bad2[good.members[3]! - 6] = bad2[good.members[3]! - 6]! ^ 0x01;
      crc = join(dir, 'crc.gz');
      await writeFile(crc, bad2);
    });

    it('a flipped byte, indexed: names the member and its offset', async () => {
      const dest = join(dir, 'flip.out');
      const e = await rejectionOf(unpackImage(img, dest, { index: good, threads: 2 }));
      expectClean(e, 'KVMBAK_ARCHIVE_CORRUPT', dest);
      expect(e.message).toMatch(
        new RegExp(
          `^image ${img} is corrupt: gzip member #1 at compressed offset ${good.members[1]} \\(raw offset ${CHUNK}\\) does not decompress \\([a-z /]+\\); the image is damaged — use another copy$`,
        ),
      );
      expect(e.offset).toBe(good.members[1]);
      expectClean(await rejectionOf(hashImage(img, { index: good })), 'KVMBAK_ARCHIVE_CORRUPT');
      const c = await rejectionOf(unpackImage(crc, dest, { index: good }));
      expectClean(c, 'KVMBAK_ARCHIVE_CORRUPT', dest);
      expect(c.message).toBe(
        `image ${crc} is corrupt: gzip member #2 at compressed offset ${good.members[2]} (raw offset ${2 * CHUNK}) does not decompress (incorrect data check); the image is damaged — use another copy`,
      );
    });

    it('a flipped byte, streamed', async () => {
      const dest = join(dir, 'flip2.out');
      const e = await rejectionOf(unpackImage(img, dest));
      expectClean(e, 'KVMBAK_ARCHIVE_CORRUPT', dest);
      expect(e.message).toMatch(/^image .*flip\.gz is corrupt at compressed offset \d+ or within the \d+ bytes after it: [a-z /]+; /);
      const c = await rejectionOf(unpackImage(crc, dest));
      expectClean(c, 'KVMBAK_ARCHIVE_CORRUPT', dest);
      expect(c.message).toContain(': incorrect data check; ');
    });

    it('trailing garbage after the last member', async () => {
      const img2 = join(dir, 'trail.gz');
      await writeFile(img2, goodGz);
      await appendFile(img2, 'garbage!');
      const e = await rejectionOf(unpackImage(img2, join(dir, 'trail.out')));
      expectClean(e, 'KVMBAK_ARCHIVE_CORRUPT', join(dir, 'trail.out'));
      const e2 = await rejectionOf(unpackImage(img2, join(dir, 'trail.out'), { index: good }));
      expectClean(e2, 'KVMBAK_ARCHIVE_CORRUPT', join(dir, 'trail.out'));
      expect(e2.message).toContain(`8 bytes of unexpected data after offset ${good.storedBytes}`);
      // trailing zeros (which zlib itself skips) are caught too
      await writeFile(img2, Buffer.concat([goodGz, Buffer.alloc(100)]));
      expectClean(await rejectionOf(unpackImage(img2, join(dir, 'trail.out'))), 'KVMBAK_ARCHIVE_CORRUPT', join(dir, 'trail.out'));
    });

    it('not gzip at all', async () => {
      const raw = join(dir, 'src.raw');
      const e = await rejectionOf(unpackImage(raw, join(dir, 'notgz.out')));
      expectClean(e, 'KVMBAK_ARCHIVE_CORRUPT', join(dir, 'notgz.out'));
      expect(e.message).toContain('incorrect header check');
    });
  });

  it('wrong expected sha256 or size: no file committed', async () => {
    const dest = join(dir, 'sum.out');
    const wrong = 'ab'.repeat(32);
    const e = await rejectionOf(unpackImage(join(dir, 'good.gz'), dest, { index: good, expectSha256: wrong }));
    expectClean(e, 'KVMBAK_ARCHIVE_CHECKSUM', dest);
    expect(e.message).toBe(
      `raw sha256 of image ${join(dir, 'good.gz')} is ${good.sha256}, expected ${wrong}: the image is damaged or not the one expected`,
    );
    const s = await rejectionOf(unpackImage(join(dir, 'good.gz'), dest, { expectBytes: good.bytes + 1 }));
    expectClean(s, 'KVMBAK_ARCHIVE_SIZE', dest);
  });

  it('an index that belongs to another image', async () => {
    const dest = join(dir, 'idx.out');
    const wrongChunk = await rejectionOf(
      unpackImage(join(dir, 'good.gz'), dest, { index: { ...good, chunkSize: CHUNK * 2, members: good.members.slice(0, 4) } }),
    );
    expectClean(wrongChunk, 'KVMBAK_ARCHIVE_INDEX', dest);
    const wrongCount = await rejectionOf(unpackImage(join(dir, 'good.gz'), dest, { index: { ...good, members: good.members.slice(1) } }));
    expectClean(wrongCount, 'KVMBAK_ARCHIVE_INDEX', dest);
    // offsets shifted by one member: decodes, but chunk sizes do not add up
    const shifted = { chunkSize: CHUNK, bytes: good.bytes, members: [0, ...good.members.slice(2), good.storedBytes - 1] };
    const e = await rejectionOf(unpackImage(join(dir, 'good.gz'), dest, { index: shifted }));
    expect(gone(dest) && noPartial(dest)).toBe(true);
    expect(isArchiveError(e)).toBe(true);
  });

  it('bad options are ConfigErrors naming the option', async () => {
    const src = join(dir, 'src.raw');
    await expect(packImage(src, join(dir, 'o.gz'), { level: 0 })).rejects.toMatchObject({ code: 'KVMBAK_INVALID_ARGUMENT', option: 'level' });
    await expect(packImage(src, join(dir, 'o.gz'), { chunkSize: '3K' })).rejects.toMatchObject({
      code: 'KVMBAK_INVALID_ARGUMENT',
      option: 'chunkSize',
    });
    await expect(packImage(src, join(dir, 'o.gz'), { chunkSize: 'lots' })).rejects.toMatchObject({ option: 'chunkSize' });
    await expect(packImage(src, join(dir, 'o.gz'), { threads: 0 })).rejects.toMatchObject({ option: 'threads' });
    await expect(unpackImage(join(dir, 'good.gz'), join(dir, 'o.out'), { expectSha256: 'xyz' })).rejects.toMatchObject({ option: 'expectSha256' });
    expect(gone(join(dir, 'o.gz')) && gone(join(dir, 'o.out'))).toBe(true);
  });
});

describe('abort', () => {
  it('an already-aborted signal fails at once', async () => {
    const ac = new AbortController();
    ac.abort();
    const e = await rejectionOf(packImage(join(dir, 'src.raw'), join(dir, 'pre.gz'), { signal: ac.signal }));
    expect(isAbortError(e)).toBe(true);
    expect(noPartial(join(dir, 'pre.gz'))).toBe(true);
  });

  it('pack stops mid-way, removes the partial file and the workers', async () => {
    await writeData(join(dir, 'big.raw'), mixedData(64 * CHUNK, 'rt'));
    const ac = new AbortController();
    let events = 0;
    const dest = join(dir, 'abort.gz');
    const e = await rejectionOf(
      packImage(join(dir, 'big.raw'), dest, {
        chunkSize: CHUNK,
        level: 9,
        threads: 2,
        signal: ac.signal,
        onProgress: () => {
          events++;
          ac.abort(new Error('user pressed ^C'));
        },
      }),
    );
    expect(isAbortError(e)).toBe(true);
    expect(events).toBe(1);
    expect(gone(dest) && noPartial(dest)).toBe(true);
    expect(archiveCounters()).toMatchObject({ operations: 0, chunksInFlight: 0, workersAlive: 0 });
  });

  it('unpack (indexed and streamed) stops mid-way and removes the partial file', async () => {
    const packed = await packImage(join(dir, 'big.raw'), join(dir, 'big.gz'), { chunkSize: CHUNK });
    for (const index of [packed, undefined]) {
      const ac = new AbortController();
      const dest = join(dir, 'abort.out');
      const e = await rejectionOf(unpackImage(join(dir, 'big.gz'), dest, { index, signal: ac.signal, onProgress: () => ac.abort() }));
      expect(isAbortError(e)).toBe(true);
      expect(gone(dest) && noPartial(dest)).toBe(true);
    }
    expect(archiveCounters()).toMatchObject({ operations: 0, chunksInFlight: 0, workersAlive: 0 });
  });
});

describe('bounded memory', () => {
  it('never has more than chunkWindow(threads) chunks in flight, whatever the size', async () => {
    await writeData(join(dir, 'many.raw'), mixedData(200 * CHUNK, 'rtzr'));
    for (const threads of [1, 2, 4]) {
      archiveCounters({ resetPeak: true });
      const r = await packImage(join(dir, 'many.raw'), join(dir, `many${threads}.gz`), { chunkSize: CHUNK, threads });
      const peak = archiveCounters().peakChunksInFlight;
      expect(peak).toBeLessThanOrEqual(chunkWindow(threads));
      expect(peak).toBeGreaterThanOrEqual(2); // it did pipeline
      archiveCounters({ resetPeak: true });
      await unpackImage(join(dir, `many${threads}.gz`), join(dir, `many${threads}.out`), { index: r, threads });
      expect(archiveCounters().peakChunksInFlight).toBeLessThanOrEqual(chunkWindow(threads));
    }
    expect(archiveCounters().chunksInFlight).toBe(0);
  });
});

describe('temporary files', () => {
  it('a leftover <dest>.partial (or a symlink there) is neither removed nor followed', async () => {
    await mkdir(join(dir, 'stale'), { recursive: true });
    const dest = join(dir, 'stale', 'x.gz');
    await writeFile(`${dest}.partial`, 'left over');
    await symlink(join(dir, 'stale', 'target'), `${dest}.0000.partial`);
    const r = await packImage(join(dir, 'src.raw'), dest, { chunkSize: CHUNK });
    expect(r.bytes).toBe(good.bytes);
    expect(await readFile(`${dest}.partial`, 'utf8')).toBe('left over');
    expect(gone(join(dir, 'stale', 'target'))).toBe(true);
    expect((await readdir(join(dir, 'stale'))).sort()).toEqual(['x.gz', 'x.gz.0000.partial', 'x.gz.partial']);
  });

  // issue 9, defect 2: the input was deleted when named like the output's temporary file
  it('unpack z.partial z keeps its input', async () => {
    await mkdir(join(dir, 'named'), { recursive: true });
    const img = join(dir, 'named', 'z.partial');
    await writeFile(img, goodGz);
    const r = await unpackImage(img, join(dir, 'named', 'z'), { index: good });
    expect(r.sha256).toBe(good.sha256);
    expect((await readFile(img)).equals(goodGz)).toBe(true);
    // and a damaged one fails without taking the input with it
    const cut = join(dir, 'named', 'c.partial');
    await writeFile(cut, goodGz.subarray(0, goodGz.byteLength - 7));
    expectClean(await rejectionOf(unpackImage(cut, join(dir, 'named', 'c'))), 'KVMBAK_ARCHIVE_TRUNCATED');
    expect((await readFile(cut)).byteLength).toBe(goodGz.byteLength - 7);
    expect((await readdir(join(dir, 'named'))).sort()).toEqual(['c.partial', 'z', 'z.partial']);
  });

  it('pack x.partial x keeps its input', async () => {
    const src = join(dir, 'named', 'x.partial');
    const raw = await readFile(join(dir, 'src.raw'));
    await writeFile(src, raw);
    const r = await packImage(src, join(dir, 'named', 'x'), { chunkSize: CHUNK });
    expect(r.sha256).toBe(good.sha256);
    expect((await readFile(src)).equals(raw)).toBe(true);
  });
});

describe('real gzip interop', () => {
  it('gzip -t rejects what kvmbak calls corrupt (sanity of the fixtures)', async () => {
    await runToFile('gzip', ['-c', join(dir, 'src.raw')], join(dir, 'ref.gz'));
    const u = await unpackImage(join(dir, 'ref.gz'), join(dir, 'ref.out'), { expectSha256: good.sha256 });
    expect(u.verified).toBe(true);
  });
});
