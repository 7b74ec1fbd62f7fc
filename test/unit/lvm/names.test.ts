import { describe, expect, it } from 'vitest';
import { ConfigError } from '../../../src/errors.js';
import {
  dmName,
  lvNameProblem,
  parseLvRef,
  parseLvsReport,
  splitDmName,
  lvmTagProblem,
  validateLvName,
  validateLvmTag,
  validateVgName,
  vgNameProblem,
} from '../../../src/lvm/index.js';
import { fixture, fixtureFiles } from './helpers.js';

describe('lvm2 names', () => {
  it('accepts the names lvm2 accepts', () => {
    for (const n of ['vg0', 'vg-a', 'kvmbak-nodm-vg', 'a.b_c+d', 'VG_01', 'x'.repeat(127)]) {
      expect(vgNameProblem(n)).toBeUndefined();
      expect(validateVgName(n)).toBe(n);
    }
    for (const n of ['web-01-disk', 'web-01-disk-kvmbak-snap', 'lv.1+x_y', 'my_snapshot']) {
      expect(lvNameProblem(n)).toBeUndefined();
      expect(validateLvName(n)).toBe(n);
    }
  });

  it('rejects bad VG names with a ConfigError naming the problem', () => {
    const cases: Array<[unknown, RegExp]> = [
      ['', /must not be empty/],
      ['-vg', /must not begin with a hyphen/],
      ['vg a', /characters lvm2 does not allow/],
      ['vg/a', /characters lvm2 does not allow/],
      ['vg;rm', /characters lvm2 does not allow/],
      ['.', /"\." or "\.\."/],
      ['..', /"\." or "\.\."/],
      ['x'.repeat(128), /longer than 127/],
      [42, /must be a string/],
    ];
    for (const [name, why] of cases) {
      expect(vgNameProblem(name)).toMatch(why);
      let err: unknown;
      try {
        validateVgName(name, 'vg');
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(ConfigError);
      expect((err as ConfigError).option).toBe('vg');
      expect((err as ConfigError).code).toBe('KVMBAK_INVALID_ARGUMENT');
    }
  });

  it('rejects LV names lvm2 reserves', () => {
    expect(lvNameProblem('snapshot')).toMatch(/begins with "snapshot"/);
    expect(lvNameProblem('snapshot1')).toMatch(/begins with "snapshot"/);
    expect(lvNameProblem('pvmove0')).toMatch(/begins with "pvmove"/);
    expect(lvNameProblem('pool_tmeta')).toMatch(/"_tmeta"/);
    expect(lvNameProblem('x_rimage_0')).toMatch(/"_rimage"/);
    expect(lvNameProblem('-lv')).toMatch(/hyphen/);
    expect(lvNameProblem('lv\n')).toMatch(/characters/);
    expect(() => validateLvName('a b', 'name')).toThrow(
      /^Logical volume name "a b" contains characters lvm2 does not allow \(allowed: a-z A-Z 0-9 \+ _ \. -\): choose another logical volume name$/,
    );
  });

  it('validates tags with the lvm2 tag charset', () => {
    for (const t of ['kvmbak', 'kvmbak-run-20261126T031500Z', 'a/b=c!d:e#f&g', 'x.y+z_1']) expect(lvmTagProblem(t)).toBeUndefined();
    expect(lvmTagProblem('')).toMatch(/empty/);
    expect(lvmTagProblem('-x')).toMatch(/hyphen/);
    expect(lvmTagProblem('has space')).toMatch(/characters/);
    expect(lvmTagProblem('@kvmbak')).toMatch(/characters/);
    expect(lvmTagProblem('a,b')).toMatch(/characters/);
    expect(lvmTagProblem('t'.repeat(1025))).toMatch(/longer than 1024/);
    expect(() => validateLvmTag('bad tag')).toThrow(ConfigError);
  });

  it('parses VG/LV references', () => {
    expect(parseLvRef('vg-a/lv-b')).toEqual({ vg: 'vg-a', lv: 'lv-b' });
    expect(parseLvRef({ vg: 'vg', lv: 'lv' })).toEqual({ vg: 'vg', lv: 'lv' });
    expect(() => parseLvRef('vg')).toThrow(/write it as VG\/LV/);
    expect(() => parseLvRef('vg/lv/x')).toThrow(ConfigError);
    expect(() => parseLvRef('vg/-lv')).toThrow(/hyphen/);
    expect(() => parseLvRef({ vg: 'v g', lv: 'x' })).toThrow(ConfigError);
  });
});

describe('device-mapper names', () => {
  it('undoes the -- escape: vg--a-lv--b is vg-a / lv-b', () => {
    expect(splitDmName('vg--a-lv--b')).toEqual({ vg: 'vg-a', lv: 'lv-b', layer: '' });
    expect(splitDmName('vg0-root')).toEqual({ vg: 'vg0', lv: 'root', layer: '' });
    expect(splitDmName('vg-lv-real')).toEqual({ vg: 'vg', lv: 'lv', layer: 'real' });
    expect(splitDmName('vg--x-pool-tpool')).toEqual({ vg: 'vg-x', lv: 'pool', layer: 'tpool' });
    expect(splitDmName('a---b')).toEqual({ vg: 'a-', lv: 'b', layer: '' });
    expect(splitDmName('noseparator')).toBeNull();
    expect(splitDmName('vg-')).toBeNull();
    expect(splitDmName('-lv')).toBeNull();
  });

  it('round-trips every dm path lvm2 reported in the fixtures', () => {
    const reports = fixtureFiles().filter((f) => /^(nodm-)?lvs-.*\.json$/.test(f) && !f.includes('.run.'));
    expect(reports.length).toBeGreaterThan(5);
    let checked = 0;
    for (const file of reports) {
      for (const lv of parseLvsReport(fixture(file.replace(/(\.handmade)?\.json$/, '')))) {
        const name = lv.dmPath.replace('/dev/mapper/', '');
        expect(dmName(lv.vg, lv.lv)).toBe(name);
        expect(splitDmName(name)).toEqual({ vg: lv.vg, lv: lv.lv, layer: '' });
        checked++;
      }
    }
    expect(checked).toBeGreaterThan(20);
  });
});
