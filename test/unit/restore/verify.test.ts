import { open, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { readManifest, writeManifest } from '../../../src/manifest/index.js';
import { type VerifySetProgress, verifySet } from '../../../src/restore/index.js';
import { buildSet, sha256, tempDir } from '../store/helpers.js';

let dest: string;
beforeEach(async () => {
  dest = await tempDir('kvmbak-verify-');
});
afterEach(async () => {
  await rm(dest, { recursive: true, force: true });
});

const now = new Date('2026-11-26T03:15:00Z');

async function flipByte(path: string, at: number): Promise<void> {
  const fh = await open(path, 'r+');
  const b = Buffer.alloc(1);
  await fh.read(b, 0, 1, at);
  b[0] ^= 0xff;
  await fh.write(b, 0, 1, at);
  await fh.close();
}

describe('verifySet', () => {
  it('a good set: every file hashed, every image decompressed once, progress for both', async () => {
    const { set, raw } = await buildSet(dest, 'web01', now);
    const events: VerifySetProgress[] = [];
    const r = await verifySet(set.path, { threads: 2, onProgress: (e) => events.push(e) });
    expect(r).toMatchObject({ ok: true, quick: false, domain: 'web01', mode: 'save', problems: [] });
    expect(r.files.map((f) => [f.file, f.status])).toEqual([
      ['domain.xml', 'ok'],
      ['memory.state', 'ok'],
      ['disks/vda.img.gz', 'ok'],
    ]);
    const gz = await readFile(join(set.path, 'disks/vda.img.gz'));
    // the image's file sha256 comes from the decompressing pass
    expect(r.files[2].actualSha256).toBe(sha256(gz));
    expect(r.images).toEqual([
      expect.objectContaining({ target: 'vda', status: 'ok', rawBytes: raw.length, rawSha256: sha256(raw), expectedRawSha256: sha256(raw) }),
    ]);
    expect(r.bytesRead).toBe(
      gz.length + (await readFile(join(set.path, 'memory.state'))).length + (await readFile(join(set.path, 'domain.xml'))).length,
    );
    expect(events.some((e) => e.phase === 'verify' && e.file === 'memory.state')).toBe(true);
    expect(events.filter((e) => e.phase === 'hash').at(-1)).toMatchObject({
      file: 'disks/vda.img.gz',
      bytesDone: raw.length,
      bytesTotal: raw.length,
    });
    // nothing hashed the image at file level before (one read)
    expect(events.some((e) => e.phase === 'verify' && e.file === 'disks/vda.img.gz')).toBe(false);
  });

  it('a flipped byte in an image: the file and its data are reported damaged, naming the file', async () => {
    const { set } = await buildSet(dest, 'web01', now);
    await flipByte(join(set.path, 'disks/vda.img.gz'), 100);
    const r = await verifySet(set.path, { threads: 2 });
    expect(r.ok).toBe(false);
    expect(r.files.find((f) => f.file === 'disks/vda.img.gz')!.status).toBe('checksum-mismatch');
    expect(r.images[0].status).toBe('damaged');
    expect(r.problems[0]).toMatch(/^disks\/vda.img.gz: image .*vda.img.gz is corrupt: gzip member #0 at compressed offset 0 /);
    // one line for the file: where the damage is
    expect(r.problems).toHaveLength(1);
  });

  it('--quick: file checksums only; a flipped byte is still found, images are not decompressed', async () => {
    const { set } = await buildSet(dest, 'web01', now);
    expect((await verifySet(set.path, { quick: true })).ok).toBe(true);
    await flipByte(join(set.path, 'disks/vda.img.gz'), 100);
    const r = await verifySet(set.path, { quick: true });
    expect(r.quick).toBe(true);
    expect(r.problems).toEqual(['disks/vda.img.gz: sha256 differs from the manifest (the file is damaged)']);
    expect(r.images[0].status).toBe('not-checked');
  });

  it('a truncated image, a missing one, and data that decompresses to something else', async () => {
    const { set } = await buildSet(dest, 'web01', now);
    const img = join(set.path, 'disks/vda.img.gz');
    const gz = await readFile(img);
    await writeFile(img, gz.subarray(0, gz.length - 7));
    let r = await verifySet(set.path, { threads: 2 });
    expect(r.ok).toBe(false);
    expect(r.problems[0]).toBe(`disks/vda.img.gz has ${gz.length - 7} bytes, the manifest says ${gz.length} (truncated or damaged)`);
    expect(r.images[0]).toMatchObject({ status: 'damaged', code: 'KVMBAK_ARCHIVE_TRUNCATED' });

    await rm(img);
    r = await verifySet(set.path);
    expect(r.problems).toEqual(['disks/vda.img.gz is missing']);
    expect(r.images[0]).toMatchObject({ status: 'unreadable', error: 'disks/vda.img.gz is missing' });

    await writeFile(img, gz);
    const m = await readManifest(set.path);
    m.disks[0].image!.rawSha256 = '0'.repeat(64);
    await writeManifest(set.path, m);
    r = await verifySet(set.path);
    expect(r.problems).toEqual([`disks/vda.img.gz: the decompressed data's sha256 differs from the manifest (the disk image is damaged)`]);
    expect(r.images[0].status).toBe('raw-mismatch');
  });

  it('a set without a manifest is an incomplete backup (thrown)', async () => {
    const { set } = await buildSet(dest, 'web01', now, { commit: false });
    await expect(verifySet(set.path)).rejects.toMatchObject({ name: 'ManifestError', code: 'KVMBAK_MANIFEST_MISSING' });
  });
});
