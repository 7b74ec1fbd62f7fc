import { chmod, open, rm, truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { isManifestError } from '../../../src/manifest/index.js';
import { type VerifyProgress, sha256File, verifySetFiles } from '../../../src/store/index.js';
import { buildSet, sha256, tempDir } from './helpers.js';

let dest: string;
const NOW = new Date('2026-11-26T03:15:00Z');
beforeEach(async () => {
  dest = await tempDir();
});
afterEach(async () => {
  await rm(dest, { recursive: true, force: true });
});

describe('verifySetFiles', () => {
  it('passes a good set and hands the images on for decompression checks', async () => {
    const { set, manifest, raw } = await buildSet(dest, 'web01', NOW);
    const events: VerifyProgress[] = [];
    const r = await verifySetFiles(set.path, { onProgress: (p) => events.push(p) });
    expect(r.ok).toBe(true);
    expect(r.problems).toEqual([]);
    expect(r.warnings).toEqual([]);
    expect(r.files.map((f) => [f.file, f.kind, f.status])).toEqual([
      ['domain.xml', 'domain-xml', 'ok'],
      ['memory.state', 'memory', 'ok'],
      ['disks/vda.img.gz', 'image', 'ok'],
    ]);
    const img = manifest.disks[0].image!;
    expect(r.images).toEqual([
      {
        target: 'vda',
        file: 'disks/vda.img.gz',
        path: join(set.path, 'disks/vda.img.gz'),
        fileOk: true,
        storedBytes: img.storedBytes,
        rawBytes: raw.length,
        rawSha256: sha256(raw),
        chunkSize: img.chunkSize,
        members: img.members,
        zeroChunks: 1,
      },
    ]);
    expect(r.bytesHashed).toBe(r.files.reduce((s, f) => s + (f.actualBytes ?? 0), 0));
    expect(events.at(-1)).toEqual({ phase: 'verify', file: 'disks/vda.img.gz', bytesDone: r.bytesHashed, bytesTotal: r.bytesHashed });
  });

  it('finds a flipped byte, a truncated file, a missing file and an extra file', async () => {
    const { set, manifest } = await buildSet(dest, 'web01', NOW);
    const h = await open(join(set.path, 'disks/vda.img.gz'), 'r+');
    await h.write(Buffer.from([0xff]), 0, 1, 100);
    await h.close();
    await truncate(join(set.path, 'memory.state'), 10);
    await rm(join(set.path, 'domain.xml'));
    await writeFile(join(set.path, 'disks/vdb.img.gz.partial'), 'x', { mode: 0o600 });
    await writeFile(join(set.path, 'notes.txt'), 'x', { mode: 0o600 });

    const r = await verifySetFiles(set.path);
    expect(r.ok).toBe(false);
    expect(r.problems).toEqual([
      'domain.xml is missing',
      `memory.state has 10 bytes, the manifest says ${manifest.memory!.bytes} (truncated or damaged)`,
      'disks/vda.img.gz: sha256 differs from the manifest (the file is damaged)',
      'disks/vdb.img.gz.partial is left over from an unfinished write',
      'notes.txt is not part of the set',
    ]);
    expect(r.files.map((f) => [f.file, f.status])).toEqual([
      ['domain.xml', 'missing'],
      ['memory.state', 'size-mismatch'],
      ['disks/vda.img.gz', 'checksum-mismatch'],
      ['disks/vdb.img.gz.partial', 'unfinished'],
      ['notes.txt', 'extra'],
    ]);
    expect(r.files[2].actualSha256).toBe((await sha256File(join(set.path, 'disks/vda.img.gz'))).sha256);
    expect(r.images[0].fileOk).toBe(false);
  });

  it('checks that SHA256SUMS agrees with the manifest', async () => {
    const { set, manifest } = await buildSet(dest, 'web01', NOW);
    const sums = join(set.path, 'SHA256SUMS');
    await writeFile(sums, `${'0'.repeat(64)}  disks/vda.img.gz\n${manifest.domainXml.sha256}  domain.xml\n${'1'.repeat(64)}  other.bin\ngarbage\n`);
    const r = await verifySetFiles(set.path);
    expect(r.problems).toEqual([
      'SHA256SUMS: line 4 is not "<sha256>  <file>"',
      'SHA256SUMS does not list memory.state',
      'SHA256SUMS and the manifest disagree on the sha256 of disks/vda.img.gz',
      'SHA256SUMS lists other.bin, which the manifest does not',
    ]);
    expect(r.files.every((f) => f.status === 'ok')).toBe(true);
    await rm(sums);
    expect((await verifySetFiles(set.path)).problems).toEqual(['SHA256SUMS is missing']);
  });

  it('warns about permissions wider than 0600/0700', async () => {
    const { set } = await buildSet(dest, 'web01', NOW);
    await chmod(join(set.path, 'memory.state'), 0o644);
    await chmod(set.path, 0o755);
    const r = await verifySetFiles(set.path);
    expect(r.ok).toBe(true);
    expect(r.warnings).toEqual(['the set folder has mode 755, expected 700', 'memory.state has mode 644, expected 600']);
  });

  it('throws the manifest error for an incomplete set', async () => {
    const { set } = await buildSet(dest, 'web01', NOW, { commit: false });
    const e = await verifySetFiles(set.path).catch((err: unknown) => err);
    expect(isManifestError(e, 'KVMBAK_MANIFEST_MISSING')).toBe(true);
  });

  it('stops when aborted', async () => {
    const { set } = await buildSet(dest, 'web01', NOW);
    const ac = new AbortController();
    ac.abort();
    await expect(verifySetFiles(set.path, { signal: ac.signal })).rejects.toMatchObject({ code: 'ABORT_ERR' });
  });
});
