import { execFileSync } from 'node:child_process';
import { open, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import { chunkIdAt, readChunkList } from '../../src/chunks/index.js';
import { manifestFormatFor } from '../../src/manifest/index.js';
import { commitSet, openChunkStore, storeChunked } from '../../src/store/index.js';
import { buildSet, tempDir } from '../unit/store/helpers.js';
import { ensureBuilt, kvmbak } from './helpers.js';

beforeAll(() => {
  ensureBuilt();
}, 120_000);

let dest: string;
beforeEach(async () => {
  dest = await tempDir('kvmbak-cli-verify-');
});
afterEach(async () => {
  await rm(dest, { recursive: true, force: true });
});

const now = new Date('2026-11-26T03:15:00Z');

async function flipByte(path: string, at: number): Promise<void> {
  const fh = await open(path, 'r+');
  const b = Buffer.alloc(1);
  await fh.read(b, 0, 1, at);
  b[0] ^= 0x55;
  await fh.write(b, 0, 1, at);
  await fh.close();
}

describe('kvmbak verify: folders that are not sets, files that are not files', () => {
  it('DEST and DEST/DOMAIN: "not a backup set folder", exit 1', async () => {
    await buildSet(dest, 'web01', now);
    for (const p of [dest, join(dest, 'web01')]) {
      const r = await kvmbak(['verify', p]);
      expect(r.code).toBe(1);
      expect(r.stderr).toBe(
        `kvmbak: ${p} is not a backup set folder (DEST/DOMAIN/<set id>, e.g. /backup/web01/20261126T031500Z); kvmbak list DEST shows the sets\n`,
      );
    }
  });

  it('a manifest.json that is a FIFO: exit 1 at once (it used to hang, deaf even to SIGTERM)', async () => {
    const { set } = await buildSet(dest, 'web01', now);
    await rm(join(set.path, 'manifest.json'));
    execFileSync('mkfifo', [join(set.path, 'manifest.json')]);
    const r = await kvmbak(['verify', set.path]);
    expect(r.code).toBe(1);
    expect(r.stderr).toBe(
      `kvmbak: malformed manifest ${join(set.path, 'manifest.json')}: it is a FIFO (named pipe), not a regular file; the backup set is damaged or was tampered with, use another set\n`,
    );
  }, 20_000);
});

describe('kvmbak verify', () => {
  it('a good set: exit 0, one line per file; --json gives the result document', async () => {
    const { set } = await buildSet(dest, 'web01', now);
    const r = await kvmbak(['verify', set.path, '--threads', '2']);
    expect(r.code).toBe(0);
    expect(r.stderr).toBe('');
    const lines = r.stdout.trim().split('\n');
    expect(lines[0]).toBe(`verify ${set.path} (web01, 2026-11-26T03:15:00.000Z, mode save)`);
    expect(lines.slice(1, 4)).toEqual([
      '  ok         domain.xml        sha256 ok',
      '  ok         memory.state      sha256 ok',
      '  ok         disks/vda.img.gz  192 KiB raw, sha256 ok',
    ]);
    expect(lines.at(-1)).toMatch(/^result: ok, 3 files, .+ read in /);

    const j = await kvmbak(['verify', set.path, '--json']);
    expect(j.code).toBe(0);
    const doc = JSON.parse(j.stdout);
    expect(doc).toMatchObject({ ok: true, command: 'verify', domain: 'web01', quick: false, problems: [] });
    expect(doc.images[0]).toMatchObject({ target: 'vda', status: 'ok' });
  });

  it('a flipped byte in an image: exit 1, the error line names the file', async () => {
    const { set } = await buildSet(dest, 'web01', now);
    await flipByte(join(set.path, 'disks/vda.img.gz'), 40);
    const r = await kvmbak(['verify', set.path]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^kvmbak: verify failed: disks\/vda.img.gz: image .*vda.img.gz is corrupt: gzip member #0 at compressed offset 0 .*\n$/);
    expect(r.stdout).toContain('  DAMAGED    disks/vda.img.gz  corrupt gzip data');
    expect(r.stdout).toMatch(/result: FAILED, 1 problem\n$/);
    // --quick finds it by the file checksum alone
    const q = await kvmbak(['verify', set.path, '--quick']);
    expect(q.code).toBe(1);
    expect(q.stderr).toBe('kvmbak: verify failed: disks/vda.img.gz: sha256 differs from the manifest (the file is damaged)\n');
  });

  it('a truncated image: exit 1 naming it; --json says ok false', async () => {
    const { set } = await buildSet(dest, 'web01', now);
    const img = join(set.path, 'disks/vda.img.gz');
    const gz = await readFile(img);
    await writeFile(img, gz.subarray(0, gz.length - 100));
    const r = await kvmbak(['verify', set.path]);
    expect(r.code).toBe(1);
    expect(r.stderr).toBe(
      `kvmbak: verify failed: disks/vda.img.gz has ${gz.length - 100} bytes, the manifest says ${gz.length} (truncated or damaged) (and 1 more problem)\n`,
    );
    expect(r.stdout).toContain('  DAMAGED    disks/vda.img.gz  truncated');
    const j = await kvmbak(['verify', set.path, '--json']);
    expect(j.code).toBe(1);
    expect(JSON.parse(j.stdout)).toMatchObject({ ok: false, images: [{ status: 'damaged', code: 'KVMBAK_ARCHIVE_TRUNCATED' }] });
  });

  it('an incomplete set or no set: exit 1 with what to do; no argument: exit 2', async () => {
    const { set } = await buildSet(dest, 'web01', now, { commit: false });
    const r = await kvmbak(['verify', set.path]);
    expect(r.code).toBe(1);
    expect(r.stderr).toBe(
      `kvmbak: incomplete backup: no manifest.json in ${set.path} (the backup did not finish, or is still running); kvmbak prune removes it once it is a day old\n`,
    );
    const missing = await kvmbak(['verify', join(dest, 'nope')]);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toMatch(/the folder does not exist; check the path/);
    expect((await kvmbak(['verify'])).code).toBe(2);
  });
});

/** A committed kvmbak/2 set: vda as a chunk list into DEST/.chunks (20 MiB: text, zeros, random). */
async function chunkedSet(at: Date, data: Buffer): Promise<{ path: string; ids: string[] }> {
  const { set, manifest } = await buildSet(dest, 'web01', at, { commit: false, mode: 'pause' });
  await rm(join(set.path, 'disks/vda.img.gz'));
  const src = join(dest, `raw-${at.getTime()}`);
  await writeFile(src, data);
  const store = await openChunkStore(dest);
  const { chunks } = await storeChunked(store, src, set, 'disks/vda.chunks');
  await store.close();
  await rm(src);
  const { image: _image, ...disk } = manifest.disks[0]!;
  const m = { ...manifest, disks: [{ ...disk, chunks }] };
  m.format = manifestFormatFor(m);
  await commitSet(set, m);
  const list = await readChunkList(join(set.path, 'disks/vda.chunks'));
  return { path: set.path, ids: Array.from({ length: list.ids.byteLength / 32 }, (_, i) => chunkIdAt(list, i)) };
}

describe('kvmbak verify of chunked sets', () => {
  const data = Buffer.alloc(5 * 4 * 1024 * 1024);
  data.fill('kvmbak cli chunks\n', 0, 4 * 1024 * 1024);
  randomBytes(4 * 1024 * 1024).copy(data, 12 * 1024 * 1024);

  it('one line per chunk list; a flipped byte in a chunk two sets share: both named in one line, exit 1', async () => {
    const a = await chunkedSet(now, data);
    const b = await chunkedSet(new Date(now.getTime() + 86400_000), data);
    const ok = await kvmbak(['verify', a.path]);
    expect(ok.code).toBe(0);
    expect(ok.stdout).toContain('  ok         disks/vda.chunks  5 chunks, 20.0 MiB raw, all sha256 ok');
    expect(ok.stdout).toContain(`  chunks: 3 distinct in ${join(dest, '.chunks')}, 12.0 MiB raw decompressed and checked against their ids\n`);
    const both = await kvmbak(['verify', a.path, b.path]);
    expect(both.code).toBe(0);
    expect(both.stdout.trim().split('\n').at(-1)).toMatch(/^all ok: 2 sets, 3 distinct chunks checked in /);

    const bad = a.ids[3]!;
    const file = join(dest, '.chunks', bad.slice(0, 4), bad);
    await flipByte(file, 25);
    const line = `chunk ${bad} is damaged (${file}: its data does not decompress to its sha256); the 2 sets using it cannot be restored in full: ${a.path}, ${b.path}`;
    const r = await kvmbak(['verify', a.path]);
    expect(r.code).toBe(1);
    expect(r.stderr).toBe(`kvmbak: verify failed: ${line}\n`);
    expect(r.stdout).toContain('  DAMAGED    disks/vda.chunks  5 chunks, 20.0 MiB raw, missing or damaged chunks (see below)');
    expect(r.stdout).toContain(`  problem: ${line}`);
    const m = await kvmbak(['verify', a.path, b.path]);
    expect(m.code).toBe(1);
    expect(m.stderr).toBe(`kvmbak: verify failed: ${line}\n`);
    expect(m.stdout.trim().split('\n').at(-1)).toBe('FAILED: 2 of 2 sets, 1 missing or damaged chunk');
    // --quick sees the chunk there: it checks presence and size only
    expect((await kvmbak(['verify', a.path, '--quick'])).code).toBe(0);
    await rm(file);
    const q = await kvmbak(['verify', a.path, '--quick', '--json']);
    expect(q.code).toBe(1);
    expect(JSON.parse(q.stdout)).toMatchObject({ ok: false, quick: true, chunkProblems: [{ id: bad, kind: 'missing', sets: [a.path, b.path] }] });
  }, 60_000);
});
