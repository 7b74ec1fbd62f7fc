// The manual procedure kvmbak automates (DESIGN.md), done by hand with virsh and lvm2 on the lab's
// real libvirtd and LVs: it proves the lab before kvmbak uses it, and pins the real tools' behaviour.
// Domain lab-two (two LV disks, running); it is left running with its original content.
import { mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { domState, lab, lvsReport, pipeline, sh, sha256Of, virsh, zeroSha256, type LabFixture } from './lab.js';

const DOMAIN = 'lab-two';

describe('the manual backup procedure, by hand, on real libvirt + lvm2', () => {
  let fx: LabFixture;
  let work: string;
  let state: string;
  let savedXml: string;
  const disks: Array<{ target: string; lv: string; path: string; bytes: number; sha256: string; snap: string; image: string }> = [];

  beforeAll(() => {
    fx = lab();
    work = mkdtempSync('/var/tmp/kvmbak-e2e-manual-');
    state = join(work, `${DOMAIN}.state`);
    for (const [target, lv] of Object.entries(fx.domains[DOMAIN].disks)) {
      const info = fx.lvs[lv];
      disks.push({ target, lv, path: info.path, bytes: info.bytes, sha256: info.sha256, snap: `${lv}_snap`, image: join(work, `${target}.img.gz`) });
    }
  });

  afterAll(async () => {
    // Never leave a snapshot behind, even when a step failed.
    for (const d of disks) await sh('lvremove', ['-y', `${fx.vg}/${d.snap}`], { check: false });
    rmSync(work, { recursive: true, force: true });
  });

  it('backs up: domblklist, domblkinfo, vol-pool, dumpxml, save --running, lvcreate -s, restore, dd | gzip, lvremove', async () => {
    expect(await domState(DOMAIN)).toBe('running');

    // 1. disks and their sources
    const list = (await virsh('domblklist', DOMAIN, '--details')).stdout
      .split('\n')
      .map((l) => l.trim().split(/\s+/))
      .filter((cols) => cols.length === 4);
    expect(list).toEqual(disks.map((d) => ['block', 'disk', d.target, d.path]));

    // 2. sizes: for an LV, capacity = physical = LV size, allocation 0
    for (const d of disks) {
      const info = Object.fromEntries(
        (await virsh('domblkinfo', DOMAIN, d.target)).stdout
          .split('\n')
          .filter((l) => l.includes(':'))
          .map((l) => l.split(':').map((s) => s.trim())),
      );
      expect(info).toEqual({ Capacity: String(d.bytes), Allocation: '0', Physical: String(d.bytes) });
    }

    // 3. the pool holding each volume
    for (const d of disks) expect((await virsh('vol-pool', d.path)).stdout.trim()).toBe(fx.pool);

    // 4. configuration
    savedXml = join(work, `${DOMAIN}.xml`);
    const xml = (await virsh('dumpxml', '--inactive', '--security-info', DOMAIN)).stdout;
    for (const d of disks) expect(xml).toContain(`<source dev='${d.path}'`);
    writeFileSync(savedXml, xml, { mode: 0o600 });

    // 5. RAM state to a file: the domain stops, the file is root-only
    await virsh('save', DOMAIN, state, '--running');
    expect(await domState(DOMAIN)).toBe('shut off');
    expect(statSync(state).mode & 0o777).toBe(0o600);

    // 6. COW snapshots while stopped
    for (const d of disks) await sh('lvcreate', ['-q', '-s', '-n', d.snap, '-L', '16M', d.path]);
    for (const d of disks) {
      const r = await lvsReport(`${fx.vg}/${d.snap}`, ['lv_name', 'origin', 'lv_attr', 'snap_percent']);
      expect(r.origin).toBe(d.lv);
      expect(r.lv_attr.startsWith('swi-a-s')).toBe(true);
    }

    // 7. the domain runs again, where it was
    await virsh('restore', state);
    expect(await domState(DOMAIN)).toBe('running');

    // The guest writes after the snapshot (simulated from the lab host: SeaBIOS writes nothing):
    // the origin diverges, the snapshot keeps the frozen image.
    const d0 = disks[0];
    const w = await pipeline([['dd', ['if=/dev/urandom', `of=${d0.path}`, 'bs=1M', 'count=2', 'seek=5', 'oflag=direct', 'status=none']]]);
    expect(w.map((s) => s.code)).toEqual([0]);
    expect(await sha256Of(d0.path)).not.toBe(d0.sha256);
    const usage = await lvsReport(`${fx.vg}/${d0.snap}`, ['snap_percent', 'lv_attr']);
    expect(Number(usage.snap_percent)).toBeGreaterThan(0);

    // 8. archive the frozen images, checking every stage's status
    for (const d of disks) {
      expect(await sha256Of(`/dev/${fx.vg}/${d.snap}`)).toBe(d.sha256);
      const statuses = await pipeline(
        [
          ['dd', [`if=/dev/${fx.vg}/${d.snap}`, 'bs=1M', 'status=none']],
          ['gzip', ['-3']],
        ],
        { stdout: d.image },
      );
      expect(statuses.map((s) => [s.command, s.code])).toEqual([
        ['dd', 0],
        ['gzip', 0],
      ]);
      expect(statSync(d.image).size).toBeGreaterThan(0);
      expect(statSync(d.image).size).toBeLessThan(d.bytes);
    }

    // 9. drop the snapshots
    for (const d of disks) await sh('lvremove', ['-y', `${fx.vg}/${d.snap}`]);
    const left = await sh('lvs', ['--noheadings', '-o', 'lv_name', fx.vg]);
    for (const d of disks) expect(left.stdout).not.toContain(d.snap);
  });

  it('restores: destroy, undefine, wipe, gunzip | dd, define, restore; the LVs equal the snapshots', async () => {
    await virsh('destroy', DOMAIN);
    await virsh('undefine', DOMAIN);
    const listed = (await virsh('list', '--all', '--name')).stdout.split('\n').map((s) => s.trim());
    expect(listed).not.toContain(DOMAIN);

    for (const d of disks) {
      const wipe = await pipeline([['dd', ['if=/dev/zero', `of=${d.path}`, 'bs=1M', `count=${d.bytes / 1048576}`, 'oflag=direct', 'status=none']]]);
      expect(wipe.map((s) => s.code)).toEqual([0]);
      expect(await sha256Of(d.path)).toBe(zeroSha256(d.bytes));
    }

    for (const d of disks) {
      const statuses = await pipeline(
        [
          ['gunzip', ['-c']],
          ['dd', [`of=${d.path}`, 'bs=1M', 'iflag=fullblock', 'conv=fsync', 'status=none']],
        ],
        { stdin: d.image },
      );
      expect(statuses.map((s) => [s.command, s.code])).toEqual([
        ['gunzip', 0],
        ['dd', 0],
      ]);
    }

    await virsh('define', savedXml);
    await virsh('restore', state);
    expect(await domState(DOMAIN)).toBe('running');

    // The restored images equal the snapshots (the content at backup time).
    for (const d of disks) expect(await sha256Of(d.path)).toBe(d.sha256);
  });

  it('a broken stage is caught: dd of a missing device fails while gzip still exits 0', async () => {
    const statuses = await pipeline(
      [
        ['dd', [`if=/dev/${lab().vg}/no-such-lv`, 'bs=1M', 'status=none']],
        ['gzip', ['-3']],
      ],
      { stdout: '/dev/null' },
    );
    expect(statuses[0].code).not.toBe(0);
    expect(statuses[1].code).toBe(0);
  });
});
