import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type BuiltSet, buildSet, tempDir } from '../unit/store/helpers.js';
import { ensureBuilt, kvmbak } from './helpers.js';

const USAGE = "\nRun 'kvmbak --help' for usage.\n";

let dest: string;
let complete: BuiltSet;
let incomplete: BuiltSet;
beforeAll(async () => {
  ensureBuilt();
  dest = await tempDir('kvmbak-cli-restore-');
  complete = await buildSet(dest, 'web01', new Date('2026-11-26T03:15:00Z'));
  incomplete = await buildSet(dest, 'web01', new Date('2026-11-26T04:15:00Z'), { commit: false });
}, 120_000);
afterAll(async () => {
  if (dest) await rm(dest, { recursive: true, force: true });
});

describe('kvmbak restore', () => {
  it('an incomplete set: exit 1 "incomplete backup", before any connection', async () => {
    const r = await kvmbak(['restore', incomplete.set.path, '--uri', 'test:///nonexistent.xml']);
    expect(r.code).toBe(1);
    expect(r.stdout).toBe('');
    expect(r.stderr).toBe(
      `kvmbak: incomplete backup: no manifest.json in ${incomplete.set.path} (the backup did not finish, or is still running); kvmbak prune removes it once it is a day old\n`,
    );
    const j = await kvmbak(['restore', incomplete.set.path, '--json']);
    expect(j.code).toBe(1);
    expect(JSON.parse(j.stdout)).toEqual({
      ok: false,
      error: { name: 'ManifestError', code: 'KVMBAK_MANIFEST_MISSING', message: expect.stringMatching(/^incomplete backup: /) },
    });
  });

  it('DEST and DEST/DOMAIN are not backup set folders (never "incomplete backup … delete it")', async () => {
    for (const p of [dest, join(dest, 'web01')]) {
      const r = await kvmbak(['restore', p, '--uri', 'test:///nonexistent.xml', '--dry-run']);
      expect(r.code).toBe(1);
      expect(r.stderr).toBe(
        `kvmbak: ${p} is not a backup set folder (DEST/DOMAIN/<set id>, e.g. /backup/web01/20261126T031500Z); kvmbak list DEST shows the sets\n`,
      );
    }
  });

  it('a set that is not there: exit 1', async () => {
    const r = await kvmbak(['restore', join(dest, 'web01', '20200101T000000Z')]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^kvmbak: no backup set at .*20200101T000000Z: the folder does not exist; check the path/);
  });

  it('usage errors exit 2 with one line saying what is wrong', async () => {
    const cases: [string[], RegExp | string][] = [
      [['restore'], /^kvmbak: Not enough non-option arguments/],
      [['restore', complete.set.path, '--map', 'vda'], `kvmbak: --map "vda": write it as TARGET=/dev/VG/LV, e.g. vda=/dev/vg1/web-root${USAGE}`],
      [
        ['restore', complete.set.path, '--map', 'vda=/dev/mapper/vg-x'],
        /^kvmbak: --map vda=\/dev\/mapper\/vg-x: device-mapper names are ambiguous; give the LV as \/dev\/VG\/LV or VG\/LV\n/,
      ],
      [['restore', complete.set.path, '--map', 'vdz=/dev/vg1/x'], `kvmbak: --map vdz: the backup set has no disk vdz; its disks are vda${USAGE}`],
      [
        ['restore', complete.set.path, '--map', 'hdc=vg1/x'],
        /^kvmbak: --map hdc: disk hdc is not in this backup set \(not an LVM volume \(cdrom\)\)/,
      ],
      [['restore', complete.set.path, '--in-place'], `kvmbak: --in-place writes over existing LVs, which needs --force too${USAGE}`],
      [['restore', complete.set.path, '--name', 'a/b', '--no-memory'], /^kvmbak: --name "a\/b" is not a usable domain name/],
      [['restore', complete.set.path, '--vg', 'bad vg'], /^kvmbak: Volume group name "bad vg" contains characters lvm2 does not allow/],
      [['restore', complete.set.path, '--threads', '0'], /^kvmbak: --threads 0 must be a whole number from 1 to 256\n/],
      [['restore', complete.set.path, '--frobnicate'], /^kvmbak: Unknown argument: frobnicate/],
    ];
    for (const [args, want] of cases) {
      const r = await kvmbak(args);
      expect({ args, code: r.code }).toEqual({ args, code: 2 });
      if (typeof want === 'string') expect(r.stderr).toBe(want);
      else expect(r.stderr).toMatch(want);
      expect(r.stdout).toBe('');
    }
  });

  it('restore --help lists the options', async () => {
    const r = await kvmbak(['restore', '--help']);
    expect(r.code).toBe(0);
    for (const opt of ['--name', '--vg', '--map', '--thin-pool', '--memory', '--start', '--force', '--in-place', '--dry-run', '--threads']) {
      expect(r.stdout).toContain(opt);
    }
  });
});
