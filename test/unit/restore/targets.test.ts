import { describe, expect, it } from 'vitest';
import { parseDiskMap, parseLvTarget, resolveDiskTargets } from '../../../src/restore/index.js';
import { sampleManifest } from '../manifest/sample.js';

const m = sampleManifest();
const two = [
  m.disks[0],
  { ...m.disks[0], target: 'vdb', lv: 'web01-data', source: '/dev/vg0/web01-data', image: { ...m.disks[0].image!, file: 'disks/vdb.img.gz' } },
];

function configError(fn: () => unknown): { message: string; option: string | undefined; code: string } {
  try {
    fn();
  } catch (e) {
    return e as { message: string; option: string | undefined; code: string };
  }
  throw new Error('expected a ConfigError');
}

describe('parseDiskMap', () => {
  it('parses TARGET=LV entries', () => {
    expect(parseDiskMap(['vda=/dev/vg1/web-root', 'vdb = vg2/data '])).toEqual({ vda: '/dev/vg1/web-root', vdb: 'vg2/data' });
    expect(parseDiskMap([])).toEqual({});
  });

  it('rejects malformed entries and repeated targets', () => {
    for (const bad of ['vda', '=/dev/vg/lv', 'vda=', '/dev/vg/lv']) {
      const e = configError(() => parseDiskMap([bad]));
      expect(e).toMatchObject({ code: 'KVMBAK_INVALID_ARGUMENT', option: 'map' });
      expect(e.message).toBe(`\`map\` ${JSON.stringify(bad)}: write it as TARGET=/dev/VG/LV, e.g. vda=/dev/vg1/web-root`);
    }
    expect(configError(() => parseDiskMap(['vda=vg/a', 'vda=vg/b'])).message).toBe('`map` names disk vda twice; give one LV per disk');
  });
});

describe('parseLvTarget', () => {
  it('accepts /dev/VG/LV and VG/LV', () => {
    expect(parseLvTarget('/dev/vg-1/web.root_2', 'vda')).toEqual({ vg: 'vg-1', lv: 'web.root_2' });
    expect(parseLvTarget('vg1/x', 'vda')).toEqual({ vg: 'vg1', lv: 'x' });
  });

  it('refuses other paths and bad names, naming the disk', () => {
    expect(configError(() => parseLvTarget('/dev/mapper/vg1-x', 'vda')).message).toBe(
      '`map` vda=/dev/mapper/vg1-x: device-mapper names are ambiguous; give the LV as /dev/VG/LV or VG/LV',
    );
    expect(configError(() => parseLvTarget('/srv/disk.img', 'vdb')).message).toMatch(/^`map` vdb=\/srv\/disk.img: not a \/dev path;/);
    expect(configError(() => parseLvTarget('/dev/vg1/a/b', 'vda')).message).toMatch(/not a VG\/LV pair/);
    expect(configError(() => parseLvTarget('vg1', 'vda')).message).toMatch(/not a VG\/LV pair/);
    expect(configError(() => parseLvTarget('vg 1/x', 'vda')).message).toMatch(
      /^`map` vda=vg 1\/x: Volume group name "vg 1" contains characters lvm2 does not allow/,
    );
  });
});

describe('resolveDiskTargets', () => {
  it('keeps the original LVs by default, moves VG with vg, and map wins', () => {
    expect(resolveDiskTargets(two, m.skipped, {})).toEqual([
      { target: 'vda', vg: 'vg0', lv: 'web01-root', from: 'original' },
      { target: 'vdb', vg: 'vg0', lv: 'web01-data', from: 'original' },
    ]);
    expect(resolveDiskTargets(two, m.skipped, { vg: 'vg9', map: { vdb: '/dev/fast/db' } })).toEqual([
      { target: 'vda', vg: 'vg9', lv: 'web01-root', from: 'vg' },
      { target: 'vdb', vg: 'fast', lv: 'db', from: 'map' },
    ]);
  });

  it('refuses an unknown target, a skipped one, a bad VG and two disks on one LV', () => {
    expect(configError(() => resolveDiskTargets(two, m.skipped, { map: { vdz: 'vg/x' } })).message).toBe(
      '`map` vdz: the backup set has no disk vdz; its disks are vda, vdb',
    );
    expect(configError(() => resolveDiskTargets(two, m.skipped, { map: { hdc: 'vg/x' } })).message).toBe(
      "`map` hdc: disk hdc is not in this backup set (not an LVM volume (cdrom)); map only the set's disks: vda, vdb",
    );
    expect(configError(() => resolveDiskTargets(two, m.skipped, { vg: '-bad' }))).toMatchObject({ option: 'vg' });
    const e = configError(() => resolveDiskTargets(two, m.skipped, { map: { vda: 'vg0/web01-data' } }));
    expect(e.message).toBe('disks vda and vdb would both be restored into vg0/web01-data; give each disk its own LV with `map`');
  });
});
