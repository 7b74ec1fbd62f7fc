import { describe, expect, it } from 'vitest';
import { isKvmbakError } from '../../../src/errors.js';
import {
  LV_FIELDS,
  LvmReportError,
  LVM_REPORT_OPTIONS,
  VG_FIELDS,
  lvsArgs,
  parseLvsReport,
  parseVgsReport,
  vgsArgs,
  type LogicalVolume,
} from '../../../src/lvm/index.js';
import { LV_FIELDS as LVF, REPORT, VG_FIELDS as VGF, fixture, fixtureFiles, labVg, lvsArgv, record, vgsArgv } from './helpers.js';

const MiB = 1024 * 1024;

function byName(lvs: LogicalVolume[], name: string): LogicalVolume {
  const lv = lvs.find((l) => l.lv === name);
  if (!lv) throw new Error(`no ${name} in fixture`);
  return lv;
}

describe('report arguments', () => {
  it('are machine-readable: json, bytes without suffix, numeric yes/no, comma-separated lists', () => {
    expect(LVM_REPORT_OPTIONS).toEqual(REPORT);
    expect(LV_FIELDS.join(',')).toBe(LVF);
    expect(VG_FIELDS.join(',')).toBe(VGF);
    expect(['lvs', ...lvsArgs()]).toEqual(lvsArgv());
    expect(['lvs', ...lvsArgs(['vg-a/lv-b'])]).toEqual(lvsArgv('vg-a/lv-b'));
    expect(['vgs', ...vgsArgs(['vg-a'])]).toEqual(vgsArgv('vg-a'));
    expect(lvsArgs(['@kvmbak']).slice(-2)).toEqual(['--', '@kvmbak']);
  });
});

describe('parseLvsReport on real lvm2 2.03.16 output (host without device-mapper)', () => {
  const lvs = parseLvsReport(fixture('nodm-lvs-vg'));

  it('reads every LV of the VG, names with dashes intact', () => {
    expect(lvs.map((l) => l.lv).sort()).toEqual([
      'plain-lv',
      'thin-disk',
      'thin-disk-kvmbak-snap',
      'thin-pool',
      'web-01-disk',
      'web-01-disk-kvmbak-snap',
    ]);
  });

  it('types a linear LV: sizes in bytes, tags as a list, paths', () => {
    const lv = byName(lvs, 'plain-lv');
    expect(lv).toMatchObject({
      vg: 'kvmbak-nodm-vg',
      fullName: 'kvmbak-nodm-vg/plain-lv',
      path: '/dev/kvmbak-nodm-vg/plain-lv',
      dmPath: '/dev/mapper/kvmbak--nodm--vg-plain--lv',
      size: 8 * MiB,
      segtype: 'linear',
      thin: false,
      pool: null,
      origin: null,
      originSize: null,
      snapshot: null,
      tags: ['kvmbak', 'kvmbak-run-20261126T031500Z'],
      active: false,
      invalid: false,
      snapPercent: null,
      dataPercent: null,
      kernelMajor: null,
      kernelMinor: null,
    });
    expect(lv.uuid).toMatch(/^[A-Za-z0-9]{6}(-[A-Za-z0-9]{4}){5}-[A-Za-z0-9]{6}$/);
    expect(lv.attr).toBe('-wi-XX----');
  });

  it('recognises a classic snapshot and its origin', () => {
    const snap = byName(lvs, 'web-01-disk-kvmbak-snap');
    expect(snap).toMatchObject({ snapshot: 'classic', origin: 'web-01-disk', originSize: 32 * MiB, size: 8 * MiB, thin: false });
    expect(snap.roles).toContain('thicksnapshot');
    const origin = byName(lvs, 'web-01-disk');
    expect(origin).toMatchObject({ snapshot: null, origin: null, originSize: 32 * MiB, tags: ['vm-web-01'] });
    expect(origin.roles).toContain('origin');
  });

  it('recognises a thin pool, a thin LV and a thin snapshot with the activation-skip flag', () => {
    const pool = byName(lvs, 'thin-pool');
    expect(pool).toMatchObject({ segtype: 'thin-pool', path: '', thin: false, snapshot: null });
    const thin = byName(lvs, 'thin-disk');
    expect(thin).toMatchObject({ thin: true, pool: 'thin-pool', snapshot: null, skipActivation: false, size: 24 * MiB });
    const tsnap = byName(lvs, 'thin-disk-kvmbak-snap');
    expect(tsnap).toMatchObject({ thin: true, pool: 'thin-pool', snapshot: 'thin', origin: 'thin-disk', skipActivation: true, active: false });
  });

  it('reads vgs output', () => {
    const [vg] = parseVgsReport(fixture('nodm-vgs'));
    expect(vg).toEqual({
      name: 'kvmbak-nodm-vg',
      uuid: expect.stringMatching(/^[A-Za-z0-9-]{38}$/),
      size: 63 * 4 * MiB,
      free: 41 * 4 * MiB,
      extentSize: 4 * MiB,
      extentCount: 63,
      freeExtents: 41,
      attr: 'wz--n-',
      tags: ['kvmbak-fx-vgtag'],
      lvCount: 6,
      snapCount: 1,
      pvCount: 1,
    });
  });

  it('reads an empty report (lvs prints one even when it fails)', () => {
    expect(parseLvsReport(record('nodm-lvs-missing-lv').stdout)).toEqual([]);
    expect(parseVgsReport(record('nodm-vgs-missing-vg').stdout)).toEqual([]);
  });
});

describe('parseLvsReport on active LVs (lab captures)', () => {
  it('reads an active classic snapshot: usage percent, not invalid', () => {
    const lvs = parseLvsReport(fixture('lvs-classic'));
    const snap = byName(lvs, 'kvmbak-fx-web-01-snap');
    expect(snap).toMatchObject({ vg: labVg(), snapshot: 'classic', active: true, invalid: false, size: 16 * MiB, origin: 'kvmbak-fx-web-01' });
    expect(snap.snapPercent).toBeGreaterThan(0);
    expect(snap.snapPercent).toBeLessThan(100);
    expect(snap.kernelMajor).toBeGreaterThan(0);
    const origin = byName(lvs, 'kvmbak-fx-web-01');
    expect(origin).toMatchObject({ active: true, snapshot: null, snapPercent: null });
    expect(origin.attr).toMatch(/^owi-a/);
  });

  it('detects an invalidated snapshot (lv_attr state I), never as usable', () => {
    const snap = byName(parseLvsReport(fixture('lvs-invalid')), 'kvmbak-fx-ovf-snap');
    expect(snap.attr[4]).toBe('I');
    expect(snap.invalid).toBe(true);
    expect(snap.snapPercent).toBe(100);
  });

  it('reads thin usage: pool data and metadata percent, thin snapshot active', () => {
    const lvs = parseLvsReport(fixture('lvs-thin'));
    const pool = byName(lvs, 'kvmbak-fx-pool');
    expect(pool.dataPercent).toBeGreaterThan(0);
    expect(pool.metadataPercent).toBeGreaterThan(0);
    const tsnap = byName(lvs, 'kvmbak-fx-db-02-snap');
    expect(tsnap).toMatchObject({ snapshot: 'thin', thin: true, active: true, invalid: false });
  });
});

describe('every report fixture present parses', () => {
  const files = fixtureFiles().filter((f) => f.endsWith('.json') && !f.includes('.run.') && !f.startsWith('info'));
  it.each(files)('%s', (file) => {
    const name = file.replace(/(\.handmade)?\.json$/, '');
    const text = fixture(name);
    const parsed = /(^|-)vgs/.test(name) ? parseVgsReport(text) : parseLvsReport(text);
    expect(parsed.length).toBeGreaterThan(0);
  });
});

describe('parse errors are clear', () => {
  const row = (over: Record<string, string>): string => {
    const base = JSON.parse(fixture('nodm-lvs-vg')) as { report: Array<{ lv: Array<Record<string, string>> }> };
    const first = { ...base.report[0].lv[0], ...over };
    return JSON.stringify({ report: [{ lv: [first] }] });
  };

  it('rejects output that is not JSON', () => {
    const err = (() => {
      try {
        parseLvsReport('  Volume group "x" not found\n');
      } catch (e) {
        return e;
      }
    })();
    expect(err).toBeInstanceOf(LvmReportError);
    expect(isKvmbakError(err)).toBe(true);
    expect((err as LvmReportError).code).toBe('KVMBAK_LVM_REPORT');
    expect((err as Error).message).toMatch(/^Could not read the output of lvs: it is not JSON/);
  });

  it('tolerates stray text before the report', () => {
    expect(parseLvsReport(`  WARNING: something\n${fixture('nodm-lvs-vg')}`)).toHaveLength(6);
  });

  it('rejects a missing field, a non-numeric size, a bad percentage', () => {
    const doc = JSON.parse(row({})) as { report: Array<{ lv: Array<Record<string, string>> }> };
    delete doc.report[0].lv[0].lv_attr;
    expect(() => parseLvsReport(JSON.stringify(doc))).toThrow(/field lv_attr is missing/);
    expect(() => parseLvsReport(row({ lv_size: '8.00m' }))).toThrow(/lv_size is "8.00m", not a byte count/);
    expect(() => parseLvsReport(row({ snap_percent: 'n/a' }))).toThrow(/snap_percent is "n\/a", not a percentage/);
    expect(() => parseLvsReport('{"report": 3}')).toThrow(/no "report" array/);
  });

  it('flags a snapshot invalid from lv_attr alone (state I or S), whatever lv_snapshot_invalid says', () => {
    const snapRow = (attr: string): Record<string, string> => ({
      lv_attr: attr,
      lv_role: 'public,snapshot,thicksnapshot',
      origin: 'web-01-disk',
      lv_snapshot_invalid: '-1',
    });
    expect(parseLvsReport(row(snapRow('swi-I-s---')))[0].invalid).toBe(true);
    expect(parseLvsReport(row(snapRow('swi-S-s---')))[0].invalid).toBe(true);
    expect(parseLvsReport(row(snapRow('swi-a-s---')))[0].invalid).toBe(false);
    expect(parseLvsReport(row({ ...snapRow('swi-a-s---'), lv_snapshot_invalid: '1' }))[0].invalid).toBe(true);
    // Not a snapshot: the state letter means nothing about validity.
    expect(parseLvsReport(row({ lv_attr: '-wi-I-----' }))[0].invalid).toBe(false);
  });

  it('reads edge values: empty percentages are null, 100.00 is 100, -1 device numbers are null', () => {
    const [lv] = parseLvsReport(row({ snap_percent: '100.00', data_percent: '', lv_kernel_major: '-1' }));
    expect(lv.snapPercent).toBe(100);
    expect(lv.dataPercent).toBeNull();
    expect(lv.kernelMajor).toBeNull();
  });
});
