import { execFileSync } from 'node:child_process';
import { open, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
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
