// kvmbak's archive layer on real snapshot devices in the lab: packImage of a frozen LV (the fixture's
// lab-pack, known content), the image read back by plain gunzip, unpackImage onto a fresh LV
// (parallel, with the index) and into a file (streamed), and an invalidated snapshot failing the pack.
// LVs it makes start with `e2e-arc-` and are removed at the end.
import { existsSync, mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Lvm, packImage, unpackImage, type PackResult } from '../../../src/index.js';
import { rejection, lab, pipeline, sh, sha256Of, writePattern, type LabFixture } from './lab.js';

const MiB = 1024 * 1024;
const PREFIX = 'e2e-arc-';

describe('archive layer on real snapshot devices', () => {
  let fx: LabFixture;
  let work: string;
  const lvm = new Lvm();
  let packed: PackResult;
  let image: string;

  async function removeOurs(): Promise<void> {
    const { stdout } = await sh('lvs', ['--noheadings', '-o', 'lv_name,origin', fx.vg]);
    const ours = stdout
      .split('\n')
      .map((l) => l.trim().split(/\s+/))
      .filter(([name]) => name?.startsWith(PREFIX));
    ours.sort((a, b) => (b[1] ? 1 : 0) - (a[1] ? 1 : 0));
    for (const [name] of ours) await sh('lvremove', ['-y', `${fx.vg}/${name}`], { check: false });
  }

  beforeAll(async () => {
    fx = lab();
    work = mkdtempSync('/var/tmp/kvmbak-e2e-archive-');
    image = join(work, 'lab-pack.img.gz');
    await removeOurs();
  });
  afterAll(async () => {
    await removeOurs();
    rmSync(work, { recursive: true, force: true });
  });

  it('packs a snapshot of an LV: raw sha256 = the LV content, zero chunks found, file 0600', async () => {
    const lv = fx.lvs['lab-pack'];
    const snap = await lvm.createSnapshot(`${fx.vg}/lab-pack`, { name: `${PREFIX}snap`, size: 8 * MiB });
    try {
      packed = await packImage(snap.path, image, { chunkSize: MiB, level: 3 });
    } finally {
      await lvm.remove(snap.fullName);
    }
    expect(packed).toMatchObject({ bytes: lv.bytes, sha256: lv.sha256, chunkSize: MiB, level: 3 });
    expect(packed.members).toHaveLength(lv.bytes / MiB);
    // The fixture pattern: every 4th MiB block (i % 4 == 2) is zeros.
    expect(packed.zeroChunks).toBe(lv.bytes / MiB / 4);
    expect(packed.storedBytes).toBe(statSync(image).size);
    expect(packed.storedBytes).toBeLessThan(lv.bytes);
    expect(packed.fileSha256).toBe(await sha256Of(image));
    expect(statSync(image).mode & 0o777).toBe(0o600);
    expect(readdirSync(work).filter((f) => f.endsWith('.partial'))).toEqual([]);
  });

  it('the image is plain multi-member gzip: gunzip -c restores the bytes', async () => {
    const out = join(work, 'gunzip.raw');
    const statuses = await pipeline([['gunzip', ['-c']]], { stdin: image, stdout: out });
    expect(statuses.map((s) => s.code)).toEqual([0]);
    expect(await sha256Of(out)).toBe(fx.lvs['lab-pack'].sha256);
    rmSync(out);
  });

  it('unpacks onto a fresh LV in parallel with the index, verifying the checksum', async () => {
    const target = await lvm.createVolume(fx.vg, `${PREFIX}target`, fx.lvs['lab-pack'].bytes);
    const r = await unpackImage(image, target.path, { index: packed, expectSha256: packed.sha256 });
    expect(r).toMatchObject({ bytes: packed.bytes, sha256: packed.sha256, verified: true, mode: 'parallel', destKind: 'block' });
    expect(await sha256Of(target.path)).toBe(packed.sha256);
  });

  it('unpacks into a new file by streaming; a wrong expected checksum fails and leaves no file', async () => {
    const file = join(work, 'stream.raw');
    const r = await unpackImage(image, file, { expectSha256: packed.sha256 });
    expect(r).toMatchObject({ bytes: packed.bytes, verified: true, mode: 'stream', destKind: 'file' });
    expect(await sha256Of(file)).toBe(packed.sha256);

    const wrong = join(work, 'wrong.raw');
    const e = await rejection(unpackImage(image, wrong, { index: packed, expectSha256: '0'.repeat(64) }));
    expect(e).toMatchObject({ code: 'KVMBAK_ARCHIVE_CHECKSUM' });
    expect(existsSync(wrong)).toBe(false);
    expect(readdirSync(work).filter((f) => f.endsWith('.partial'))).toEqual([]);
  });

  it('packing an invalidated (overflowed) snapshot fails with a read error and leaves nothing behind', async () => {
    const origin = await lvm.createVolume(fx.vg, `${PREFIX}origin`, 32 * MiB);
    writePattern(origin.path, 'arc-origin', 32 * MiB);
    const snap = await lvm.createSnapshot(origin.fullName, { name: `${PREFIX}ovf`, size: 4 * MiB });
    writePattern(origin.path, 'arc-overflow', 8 * MiB);
    expect((await lvm.snapshotUsage(snap.fullName)).invalid).toBe(true);

    const dest = join(work, 'invalid.img.gz');
    const e = await rejection(packImage(snap.path, dest, { chunkSize: MiB }));
    expect(e).toMatchObject({ code: 'KVMBAK_SOURCE_UNREADABLE' });
    expect(existsSync(dest)).toBe(false);
    expect(readdirSync(work).filter((f) => f.endsWith('.partial'))).toEqual([]);
    await lvm.remove(snap.fullName);
  });
});
