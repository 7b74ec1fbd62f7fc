/**
 * Sets as a hostile or careless user leaves them: links, FIFOs and folders
 * where files belong, folders that are not sets, domain folders others can
 * write. Each case once made list/verify/prune hang, fail for every domain,
 * follow a link out of the set, print a file's content, or call DEST an
 * incomplete backup to delete.
 */
import { execFileSync } from 'node:child_process';
import { chmod, mkdir, rm, symlink, unlink, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { MANIFEST_FILE } from '../../../src/manifest/index.js';
import { acquireLock, listSets, openJournal, parseSetPath, pruneSets, readSetManifest, verifySetFiles } from '../../../src/store/index.js';
import { buildSet, tempDir } from './helpers.js';
import { rejection } from '../../support/rejection.js';

let dest: string;
beforeEach(async () => {
  dest = await tempDir();
});
afterEach(async () => {
  await rm(dest, { recursive: true, force: true });
});

const NOW = new Date('2026-11-26T03:15:00Z');
const SECRET = 'root:$y$j9T$secret-hash-that-must-never-be-printed:19000:0:99999:7:::\n';

const mkfifo = (path: string): void => {
  execFileSync('mkfifo', ['-m', '600', path]);
};

describe('only a folder named by a set id is a set', () => {
  it('DEST, DEST/DOMAIN and / are "not a backup set folder", never an incomplete backup to delete', async () => {
    const { set } = await buildSet(dest, 'web01', NOW);
    for (const p of [dest, join(dest, 'web01'), '/']) {
      const e = await rejection(readSetManifest(p));
      expect(e).toMatchObject({ name: 'StoreError', code: 'KVMBAK_NOT_A_SET' });
      expect(e.message).toMatch(/ is not a backup set folder \(DEST\/DOMAIN\/<set id>, e\.g\. /);
      expect(e.message).not.toMatch(/incomplete|delete/);
      await expect(verifySetFiles(p)).rejects.toMatchObject({ code: 'KVMBAK_NOT_A_SET' });
    }
    await unlink(join(set.path, MANIFEST_FILE));
    const e = await rejection(readSetManifest(set.path));
    expect(e).toMatchObject({ name: 'ManifestError', code: 'KVMBAK_MANIFEST_MISSING' });
    expect(e.message).toMatch(/^incomplete backup: no manifest.json in .*20261126T031500Z \(the backup did not finish, or is still running\)/);
  });
});

describe('files of a set are opened without following links or waiting on FIFOs', () => {
  it('a manifest.json that is a FIFO: read, list, verify and prune answer at once', async () => {
    const { set } = await buildSet(dest, 'web01', NOW);
    const other = await buildSet(dest, 'db01', NOW);
    await unlink(join(set.path, MANIFEST_FILE));
    mkfifo(join(set.path, MANIFEST_FILE));
    const e = await rejection(readSetManifest(set.path));
    expect(e).toMatchObject({ name: 'ManifestError', code: 'KVMBAK_MANIFEST_MALFORMED' });
    expect(e.message).toContain('it is a FIFO (named pipe), not a regular file');
    await expect(verifySetFiles(set.path)).rejects.toMatchObject({ code: 'KVMBAK_MANIFEST_MALFORMED' });
    const sets = await listSets(dest);
    expect(sets.map((s) => [s.domain, s.status])).toEqual([
      ['db01', 'complete'],
      ['web01', 'unreadable'],
    ]);
    const r = await pruneSets(dest, undefined, { keepLast: 1 });
    expect(r.domains.map((d) => [d.domain, d.keep.length, d.deleted.length, d.error])).toEqual([
      ['db01', 1, 0, undefined],
      ['web01', 1, 0, undefined],
    ]);
    expect(other.set.path).toBeTruthy();
  });

  it('a manifest.json linked to a secret file: refused as a link, its content never in a message', async () => {
    const { set } = await buildSet(dest, 'web01', NOW);
    const secret = join(dest, 'shadow');
    await writeFile(secret, SECRET, { mode: 0o600 });
    await unlink(join(set.path, MANIFEST_FILE));
    await symlink(secret, join(set.path, MANIFEST_FILE));
    const e = await rejection(readSetManifest(set.path));
    expect(e.message).toContain('it is a symbolic link, not a regular file');
    const [info] = await listSets(dest);
    expect(info).toMatchObject({ status: 'unreadable', errorCode: 'KVMBAK_MANIFEST_MALFORMED' });
    expect(JSON.stringify(info)).not.toContain('secret-hash');
    // and a manifest that is not JSON: the parser's message (which quotes the text) is not passed on
    await unlink(join(set.path, MANIFEST_FILE));
    await writeFile(join(set.path, MANIFEST_FILE), SECRET);
    const e2 = await rejection(readSetManifest(set.path));
    expect(e2.code).toBe('KVMBAK_MANIFEST_MALFORMED');
    expect(e2.message).not.toContain('secret');
    expect(e2.message).not.toContain('root:');
  });

  it('one set whose manifest.json is a folder: list and prune report it and go on with the others', async () => {
    const old = await buildSet(dest, 'web01', new Date('2026-11-20T03:15:00Z'));
    await buildSet(dest, 'web01', new Date('2026-11-24T03:15:00Z'));
    await buildSet(dest, 'web01', NOW);
    await unlink(join(old.set.path, MANIFEST_FILE));
    await mkdir(join(old.set.path, MANIFEST_FILE));
    const sets = await listSets(dest);
    expect(sets.map((s) => s.status)).toEqual(['unreadable', 'complete', 'complete']);
    expect(sets[0].error).toContain('it is a folder, not a regular file');
    const r = await pruneSets(dest, undefined, { keepLast: 1 });
    expect(r.domains[0].deleted).toHaveLength(1);
    expect(r.domains[0].keep.map((s) => s.status)).toEqual(['unreadable', 'complete']);
  });

  it('an image or SHA256SUMS that is a link, and a disks/ folder that is a link, are never followed', async () => {
    const { set, manifest } = await buildSet(dest, 'web01', NOW);
    const outside = join(dest, 'outside');
    await mkdir(outside);
    const img = join(set.path, manifest.disks[0].image!.file);
    await writeFile(join(outside, 'vda.img.gz'), await import('node:fs/promises').then((f) => f.readFile(img)));
    await unlink(img);
    await symlink(join(outside, 'vda.img.gz'), img);
    let v = await verifySetFiles(set.path);
    expect(v.files.find((f) => f.file === 'disks/vda.img.gz')?.status).toBe('not-a-file');
    expect(v.problems).toContain('disks/vda.img.gz is not a regular file');
    // disks/ itself a link to a folder holding a good copy
    await rm(join(set.path, 'disks'), { recursive: true });
    await symlink(outside, join(set.path, 'disks'));
    v = await verifySetFiles(set.path);
    expect(v.ok).toBe(false);
    expect(v.files.find((f) => f.file === 'disks/vda.img.gz')?.status).toBe('missing');
    // SHA256SUMS linked to a secret: a problem line, no content
    await unlink(join(set.path, 'SHA256SUMS'));
    await writeFile(join(dest, 'shadow'), SECRET);
    await symlink(join(dest, 'shadow'), join(set.path, 'SHA256SUMS'));
    v = await verifySetFiles(set.path);
    expect(v.problems).toContain('SHA256SUMS is a symbolic link, not a regular file');
    expect(JSON.stringify(v)).not.toContain('secret-hash');
  });
});

describe('list says whether an incomplete set is being written', () => {
  it('a journal whose owner runs is "in progress" (journalOwner alive), a dead one is interrupted', async () => {
    const { set } = await buildSet(dest, 'web01', NOW, { commit: false });
    const journal = await openJournal(parseSetPath(set.path));
    let [info] = await listSets(dest);
    expect(info).toMatchObject({ status: 'incomplete', journal: journal.path, journalOwner: 'alive' });
    // the same journal written by a process that is gone
    const doc = { ...journal.document, owner: { ...journal.document.owner, pid: 2 ** 22 + 17, pidStart: 1 } };
    await writeFile(journal.path, JSON.stringify(doc));
    [info] = await listSets(dest);
    expect(info.journalOwner).toBe('dead');
    await journal.remove();
  });
});

describe('domain folders another user could change are refused', () => {
  it('a group- or other-writable DEST/DOMAIN: no lock (so no backup, restore or prune there); prune over DEST goes on', async () => {
    await buildSet(dest, 'web01', NOW);
    await buildSet(dest, 'db01', NOW);
    await chmod(join(dest, 'web01'), 0o777);
    const e = await rejection(acquireLock(dest, 'web01', 'restore'));
    expect(e).toMatchObject({ name: 'StoreError', code: 'KVMBAK_UNSAFE_DIR' });
    expect(e.message).toBe(
      `backup folder ${join(dest, 'web01')} is not safe to use: it is writable by its group (mode 777), so another user could change the backups in it; ` +
        `make it yours and private (chown, chmod 700 ${join(dest, 'web01')})`,
    );
    const r = await pruneSets(dest, undefined, { keepLast: 1 });
    expect(r.domains.map((d) => [d.domain, d.error === undefined])).toEqual([
      ['db01', true],
      ['web01', false],
    ]);
    await chmod(join(dest, 'web01'), 0o702);
    await expect(acquireLock(dest, 'web01', 'backup')).rejects.toThrow(/it is writable by others \(mode 702\)/);
    // verify only warns: reading is safe, the warning says why the folder matters
    const v = await verifySetFiles(join(dest, 'web01', '20261126T031500Z'));
    expect(v.warnings).toContain(`the domain folder ${join(dest, 'web01')} is not private: it is writable by others (mode 702)`);
    await chmod(join(dest, 'web01'), 0o700);
    await (await acquireLock(dest, 'web01', 'backup')).release();
    expect(dirname(dest)).toBeTruthy();
  });
});

describe('file-system errors name their file', () => {
  it('ENOSPC from a write on an open file names the path (it said only "ENOSPC: no space left on device, write")', async () => {
    const { open } = await import('node:fs/promises');
    const { withPath } = await import('../../../src/util/fs.js');
    const h = await open('/dev/full', 'w');
    const e = await rejection(h.writeFile('x'.repeat(4096)).finally(() => h.close()));
    expect(e.message).toBe('ENOSPC: no space left on device, write');
    withPath(e, '/backup/web01/20261126T031500Z/.SHA256SUMS.tmp-1-abc');
    expect(e).toMatchObject({ code: 'ENOSPC', path: '/backup/web01/20261126T031500Z/.SHA256SUMS.tmp-1-abc' });
    expect(e.message).toBe("ENOSPC: no space left on device, write '/backup/web01/20261126T031500Z/.SHA256SUMS.tmp-1-abc'");
  });
});
