import { execFile } from 'node:child_process';
import { chmod, mkdir, readFile, readdir, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { gunzipSync } from 'node:zlib';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { isKvmbakError } from '../../../src/errors.js';
import { readManifest } from '../../../src/manifest/index.js';
import {
  readSetManifest,
  commitSet,
  createSet,
  deleteSet,
  formatChecksums,
  isStoreError,
  listSets,
  openSetFile,
  parseChecksums,
  parseSetPath,
  writeChecksums,
  writeSetFile,
} from '../../../src/store/index.js';
import { buildSet, modes, sha256, tempDir } from './helpers.js';

const run = promisify(execFile);
const NOW = new Date('2026-11-26T03:15:00.456Z');

let dest: string;
beforeEach(async () => {
  dest = await tempDir();
});
afterEach(async () => {
  await rm(dest, { recursive: true, force: true });
});

async function rejection(p: Promise<unknown>): Promise<Error & { code?: string }> {
  try {
    await p;
  } catch (e) {
    return e as Error & { code?: string };
  }
  throw new Error('expected a rejection');
}

describe('createSet', () => {
  it('names the set after the UTC second and creates DEST/DOMAIN/ID', async () => {
    const set = await createSet(dest, 'web01', { now: NOW });
    expect(set).toEqual({
      dest,
      domain: 'web01',
      id: '20261126T031500Z',
      path: join(dest, 'web01', '20261126T031500Z'),
      time: new Date('2026-11-26T03:15:00Z'),
    });
    expect(await readdir(set.path)).toEqual([]);
  });

  it('adds -1, -2 when sets start within the same second', async () => {
    const ids = [];
    for (let i = 0; i < 4; i++) ids.push((await createSet(dest, 'web01', { now: NOW })).id);
    expect(ids).toEqual(['20261126T031500Z', '20261126T031500Z-1', '20261126T031500Z-2', '20261126T031500Z-3']);
    const other = await createSet(dest, 'web01', { now: new Date(NOW.getTime() + 1000) });
    expect(other.id).toBe('20261126T031501Z');
  });

  it('creates the set folders exclusively even when racing', async () => {
    const sets = await Promise.all(Array.from({ length: 6 }, () => createSet(dest, 'web01', { now: NOW })));
    expect(new Set(sets.map((s) => s.id)).size).toBe(6);
  });

  it('refuses a missing destination (an unmounted disk) with a clear error', async () => {
    const gone = join(dest, 'not-mounted');
    const e = await rejection(createSet(gone, 'web01'));
    expect(isStoreError(e, 'KVMBAK_DEST_NOT_FOUND')).toBe(true);
    expect(e.message).toBe(`backup destination ${gone} does not exist; create it (mkdir -m 700 ${gone}) or mount the backup disk there`);
    await expect(stat(gone)).rejects.toThrow();
  });

  it('refuses a destination that is a file', async () => {
    await writeFile(join(dest, 'f'), '');
    const e = await rejection(createSet(join(dest, 'f'), 'web01'));
    expect(e.code).toBe('KVMBAK_DEST_NOT_FOUND');
    expect(e.message).toContain('is not a folder');
  });

  it.each([
    ['', 'it is empty'],
    ['a/b', "it contains '/'"],
    ['..', "it is '..'"],
    ['.', "it is '.'"],
    ['a\0b', 'it contains a NUL character'],
    ['x'.repeat(256), 'it is longer than 255 bytes'],
  ])('rejects the domain name %j', async (name, why) => {
    const e = await rejection(createSet(dest, name));
    expect(isKvmbakError(e)).toBe(true);
    expect(e.code).toBe('KVMBAK_INVALID_ARGUMENT');
    expect(e.message).toContain(why);
    expect(e.message).toContain('cannot name a backup folder');
    expect(await readdir(dest)).toEqual([]);
  });
});

describe.each([0o000, 0o022, 0o077])('permissions with umask %s', (mask) => {
  let old: number;
  beforeEach(() => {
    old = process.umask(mask);
  });
  afterEach(() => {
    process.umask(old);
  });

  it('every folder is 0700 and every file 0600', async () => {
    await buildSet(dest, 'web01', NOW);
    const m = await modes(dest);
    expect(Object.keys(m).sort()).toEqual([
      'web01',
      'web01/20261126T031500Z',
      'web01/20261126T031500Z/SHA256SUMS',
      'web01/20261126T031500Z/disks',
      'web01/20261126T031500Z/disks/vda.img.gz',
      'web01/20261126T031500Z/domain.xml',
      'web01/20261126T031500Z/manifest.json',
      'web01/20261126T031500Z/memory.state',
    ]);
    for (const [path, mode] of Object.entries(m)) {
      const isDir = (await stat(join(dest, path))).isDirectory();
      expect([path, mode]).toEqual([path, isDir ? '700' : '600']);
    }
  });
});

describe('set files', () => {
  it('writeSetFile writes atomically and returns size and sha256', async () => {
    const set = await createSet(dest, 'web01', { now: NOW });
    const w = await writeSetFile(set, 'domain.xml', '<domain/>');
    expect(w).toEqual({ file: 'domain.xml', path: join(set.path, 'domain.xml'), bytes: 9, sha256: sha256('<domain/>') });
    expect(await readFile(w.path, 'utf8')).toBe('<domain/>');
    expect(await readdir(set.path)).toEqual(['domain.xml']);
  });

  it.each([
    ['manifest.json', 'written by commitSet only'],
    ['SHA256SUMS', 'written by commitSet only'],
    ['disks/vda.img.gz.partial', 'must not end in .partial'],
    ['../escape', "must not contain empty, '.' or '..' segments"],
    ['/etc/passwd', 'must be relative'],
    ['disks//x', "must not contain empty, '.' or '..' segments"],
    ['.hidden', "must not have a segment starting with '.'"],
    ['a\nb', 'must not contain NUL, newline or backslash'],
  ])('refuses the set file name %j', async (rel, why) => {
    const set = await createSet(dest, 'web01', { now: NOW });
    const e = await rejection(writeSetFile(set, rel, 'x'));
    expect(e.code).toBe('KVMBAK_INVALID_ARGUMENT');
    expect(e.message).toContain(why);
    await expect(openSetFile(set, rel)).rejects.toThrow(why);
  });

  it('openSetFile streams into .partial and renames on commit', async () => {
    const set = await createSet(dest, 'web01', { now: NOW });
    const w = await openSetFile(set, 'disks/vdb.img.gz');
    expect(w.partialPath).toBe(join(set.path, 'disks/vdb.img.gz.partial'));
    await w.handle.write(Buffer.from('hello '));
    await new Promise<void>((resolve) => w.createWriteStream().end('world', () => resolve()));
    expect(await readdir(join(set.path, 'disks'))).toEqual(['vdb.img.gz.partial']);
    expect(await w.commit()).toEqual({ file: 'disks/vdb.img.gz', path: join(set.path, 'disks/vdb.img.gz'), bytes: 11 });
    expect(await readFile(w.path, 'utf8')).toBe('hello world');
    expect(await readdir(join(set.path, 'disks'))).toEqual(['vdb.img.gz']);
    await w.abort(); // after commit: nothing happens
    expect(await readdir(join(set.path, 'disks'))).toEqual(['vdb.img.gz']);
    await expect(w.commit()).rejects.toThrow('was already committed');
  });

  it('abort and disposal delete the partial file', async () => {
    const set = await createSet(dest, 'web01', { now: NOW });
    const w = await openSetFile(set, 'memory.state');
    await w.handle.write(Buffer.from('x'));
    await w.abort();
    await w.abort();
    expect(await readdir(set.path)).toEqual([]);
    {
      await using w2 = await openSetFile(set, 'memory.state');
      await w2.handle.write(Buffer.from('y'));
    }
    expect(await readdir(set.path)).toEqual([]);
  });

  it('refuses to open the same file twice', async () => {
    const set = await createSet(dest, 'web01', { now: NOW });
    await using _w = await openSetFile(set, 'memory.state');
    await expect(openSetFile(set, 'memory.state')).rejects.toThrow(/EEXIST/);
  });
});

describe('SHA256SUMS', () => {
  it('formats exactly like sha256sum, sorted by path', () => {
    const text = formatChecksums([
      { file: 'memory.state', sha256: 'a'.repeat(64) },
      { file: 'disks/vdb.img.gz', sha256: 'b'.repeat(64) },
      { file: 'domain.xml', sha256: 'c'.repeat(64) },
      { file: 'disks/vda.img.gz', sha256: 'd'.repeat(64) },
    ]);
    expect(text).toBe(
      `${'d'.repeat(64)}  disks/vda.img.gz\n${'b'.repeat(64)}  disks/vdb.img.gz\n` +
        `${'c'.repeat(64)}  domain.xml\n${'a'.repeat(64)}  memory.state\n`,
    );
    expect(parseChecksums(text).entries).toHaveLength(4);
  });

  it('rejects bad entries', () => {
    expect(() => formatChecksums([{ file: 'x', sha256: 'nope' }])).toThrow('is not a sha256');
    expect(() => formatChecksums([{ file: '../x', sha256: 'a'.repeat(64) }])).toThrow('the path must not contain');
    expect(() =>
      formatChecksums([
        { file: 'x', sha256: 'a'.repeat(64) },
        { file: 'x', sha256: 'b'.repeat(64) },
      ]),
    ).toThrow('listed twice');
  });

  it('parses sha256sum output, binary markers included, and reports bad lines', () => {
    const p = parseChecksums(`${'A'.repeat(64)} *disks/vda.img.gz\nnot a line\n`);
    expect(p.entries).toEqual([{ file: 'disks/vda.img.gz', sha256: 'a'.repeat(64) }]);
    // the line is not quoted: a file that is not a checksum list may hold secrets
    expect(p.problems).toEqual(['line 2 is not "<sha256>  <file>"']);
  });

  it('writeChecksums refuses files that are not in the set', async () => {
    const set = await createSet(dest, 'web01', { now: NOW });
    await expect(writeChecksums(set, [{ file: 'domain.xml', sha256: 'a'.repeat(64) }])).rejects.toThrow('cannot list domain.xml in SHA256SUMS');
  });

  it('`sha256sum -c SHA256SUMS` passes in a committed set, and catches damage', async () => {
    const { set, raw } = await buildSet(dest, 'web01', NOW);
    const ok = await run('sha256sum', ['-c', 'SHA256SUMS'], { cwd: set.path });
    expect(ok.stdout).toBe('disks/vda.img.gz: OK\ndomain.xml: OK\nmemory.state: OK\n');
    // The image is a plain multi-member gzip: every gzip tool reads it as one stream.
    const { stdout } = await run('sh', ['-c', 'zcat disks/vda.img.gz | sha256sum'], { cwd: set.path });
    expect(stdout.split(' ')[0]).toBe(sha256(raw));
    expect(gunzipSync(await readFile(join(set.path, 'disks/vda.img.gz')))).toEqual(raw);

    await writeFile(join(set.path, 'domain.xml'), '<tampered/>');
    await chmod(join(set.path, 'domain.xml'), 0o600);
    const bad = await rejection(run('sha256sum', ['-c', 'SHA256SUMS'], { cwd: set.path }));
    expect((bad as unknown as { stdout: string }).stdout).toContain('domain.xml: FAILED');
  });
});

describe('commitSet', () => {
  it('writes nothing that looks complete before the commit', async () => {
    const { set, manifest } = await buildSet(dest, 'web01', NOW, { commit: false });
    expect((await readdir(set.path)).sort()).toEqual(['disks', 'domain.xml', 'memory.state']);
    const [info] = await listSets(dest);
    expect(info.status).toBe('incomplete');
    expect(info.complete).toBe(false);
    expect(info.errorCode).toBe('KVMBAK_MANIFEST_MISSING');
    await expect(readSetManifest(set.path)).rejects.toThrow('incomplete backup: no manifest.json');

    await commitSet(set, manifest);
    expect((await readdir(set.path)).sort()).toEqual(['SHA256SUMS', 'disks', 'domain.xml', 'manifest.json', 'memory.state']);
    expect(await readManifest(set.path)).toEqual(manifest);
    expect((await listSets(dest))[0].complete).toBe(true);
  });

  it('a crash in the middle of writing the manifest leaves an incomplete set', async () => {
    const { set } = await buildSet(dest, 'web01', NOW, { commit: false });
    // What an interrupted atomic write leaves: a hidden temporary file, no manifest.json.
    await writeFile(join(set.path, '.manifest.json.tmp-1234-0123456789ab'), '{"format":"kvm');
    const [info] = await listSets(dest);
    expect(info.status).toBe('incomplete');
  });

  it('makes files written by others private (0600/0700)', async () => {
    const { set, manifest } = await buildSet(dest, 'web01', NOW, { commit: false });
    await chmod(join(set.path, 'memory.state'), 0o644);
    await chmod(join(set.path, 'disks'), 0o755);
    await commitSet(set, manifest);
    expect((await stat(join(set.path, 'memory.state'))).mode & 0o777).toBe(0o600);
    expect((await stat(join(set.path, 'disks'))).mode & 0o777).toBe(0o700);
  });

  it('refuses a second commit', async () => {
    const { set, manifest } = await buildSet(dest, 'web01', NOW);
    const e = await rejection(commitSet(set, manifest));
    expect(isStoreError(e, 'KVMBAK_SET_COMMITTED')).toBe(true);
    expect(e.message).toBe(`backup set ${set.path} is already committed`);
  });

  it('refuses missing, wrong-sized, unfinished and unexpected files, and a foreign domain', async () => {
    const { set, manifest } = await buildSet(dest, 'web01', NOW, { commit: false });
    await rm(join(set.path, 'domain.xml'));
    await writeFile(join(set.path, 'memory.state'), 'short');
    await writeFile(join(set.path, 'disks/vdb.img.gz.partial'), 'x');
    await writeFile(join(set.path, 'notes.txt'), 'x');
    const e = await rejection(commitSet(set, { ...manifest, domain: { ...manifest.domain, name: 'db01' } }));
    expect(isStoreError(e, 'KVMBAK_SET_NOT_READY')).toBe(true);
    expect(e.message).toBe(
      `cannot commit backup set ${set.path}: the manifest is for domain db01, the set for web01; domain.xml is missing; ` +
        `memory.state has 5 bytes, the manifest says ${manifest.memory!.bytes}; ` +
        'disks/vdb.img.gz.partial is an unfinished write; notes.txt is not part of the manifest',
    );
    expect(await readdir(set.path)).not.toContain('manifest.json');
    expect(await readdir(set.path)).not.toContain('SHA256SUMS');
  });

  it('refuses an invalid manifest before touching the set', async () => {
    const { set, manifest } = await buildSet(dest, 'web01', NOW, { commit: false });
    const e = await rejection(commitSet(set, { ...manifest, mode: 'pause' }));
    expect(e.code).toBe('KVMBAK_MANIFEST_INVALID');
    expect(await readdir(set.path)).not.toContain('manifest.json');
  });
});

describe('deleteSet', () => {
  it('deletes a set (manifest first) and is idempotent', async () => {
    const { set } = await buildSet(dest, 'web01', NOW);
    expect(await deleteSet(set.path, { dest })).toBe(true);
    expect(await readdir(join(dest, 'web01'))).toEqual([]);
    expect(await deleteSet(set)).toBe(false);
  });

  it.each([
    ['a folder not named like a set', (d: string) => join(d, 'web01', 'important'), 'is not a set name'],
    ['the domain folder', (d: string) => join(d, 'web01'), 'is not a set name'],
    ['the destination', (d: string) => d, 'is not a set name'],
    ['/', () => '/', 'is not a set name'],
    ['a set at the file-system root', () => '/20261126T031500Z', 'it is not inside a domain folder'],
  ])('refuses %s', async (_name, pathOf, why) => {
    await buildSet(dest, 'web01', NOW);
    await mkdir(join(dest, 'web01', 'important'));
    const e = await rejection(deleteSet(pathOf(dest)));
    expect(isStoreError(e, 'KVMBAK_NOT_A_SET')).toBe(true);
    expect(e.message).toContain(why);
    expect((await listSets(dest)).length).toBe(1);
  });

  it('refuses a set outside the given destination', async () => {
    const { set } = await buildSet(dest, 'web01', NOW);
    const other = await tempDir();
    try {
      const e = await rejection(deleteSet(set.path, { dest: other }));
      expect(e.message).toContain(`it is not under the destination ${other}`);
      expect(await readdir(set.path)).toContain('manifest.json');
    } finally {
      await rm(other, { recursive: true });
    }
  });

  it('refuses a symbolic link named like a set, and leaves its target alone', async () => {
    const { set } = await buildSet(dest, 'web01', NOW);
    const link = join(dest, 'web01', '20261126T031600Z');
    await symlink(set.path, link);
    const e = await rejection(deleteSet(link));
    expect(e.message).toContain('it is not a folder');
    expect(await readdir(set.path)).toContain('manifest.json');
  });

  it('parseSetPath reads the parts back', () => {
    expect(parseSetPath('/b/web01/20261126T031500Z-2/')).toEqual({
      dest: '/b',
      domain: 'web01',
      id: '20261126T031500Z-2',
      path: '/b/web01/20261126T031500Z-2',
      time: new Date('2026-11-26T03:15:00Z'),
    });
  });
});
