// kvmbak's LVM driver (src/lvm) against real lvm2 and device-mapper in the lab: resolve, classic
// snapshots with a COW size, usage, extend, overflow → invalid, remove, tags, list by tag, thin
// snapshots, restore volumes. Every LV it makes starts with `e2e-lvm-` and is removed at the end.
import { readlinkSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Lvm } from '../../../src/index.js';
import { rejection, lab, sh, sha256Of, writePattern, type LabFixture } from './lab.js';

const MiB = 1024 * 1024;
const PREFIX = 'e2e-lvm-';
const RUN_TAG = 'kvmbak-run-e2e';

describe('LVM driver on real lvm2', () => {
  let fx: LabFixture;
  const lvm = new Lvm();

  async function removeOurs(): Promise<void> {
    const { stdout } = await sh('lvs', ['--noheadings', '-o', 'lv_name,origin', fx.vg]);
    const ours = stdout
      .split('\n')
      .map((l) => l.trim().split(/\s+/))
      .filter(([name]) => name?.startsWith(PREFIX));
    // Snapshots first (they have an origin), then the rest.
    ours.sort((a, b) => (b[1] ? 1 : 0) - (a[1] ? 1 : 0));
    for (const [name] of ours) await sh('lvremove', ['-y', `${fx.vg}/${name}`], { check: false });
  }

  beforeAll(async () => {
    fx = lab();
    await removeOurs();
  });
  afterAll(async () => {
    await removeOurs();
  });

  it('resolves /dev/VG/LV, /dev/mapper and /dev/dm-N paths to the LV; refuses what is not an LV', async () => {
    const want = fx.lvs['lab-one-disk0'];
    const byPath = await lvm.resolve(want.path);
    expect(byPath).toMatchObject({
      vg: fx.vg,
      lv: 'lab-one-disk0',
      fullName: `${fx.vg}/lab-one-disk0`,
      size: want.bytes,
      active: true,
      snapshot: null,
    });
    expect(byPath.open).toBe(true); // QEMU holds it open
    const mapper = `/dev/mapper/${fx.vg}-lab--one--disk0`;
    expect((await lvm.resolve(mapper)).uuid).toBe(byPath.uuid);
    const dm = `/dev/${readlinkSync(want.path).replace(/^\.\.\//, '')}`;
    expect(dm).toMatch(/^\/dev\/dm-\d+$/);
    expect((await lvm.resolve(dm)).uuid).toBe(byPath.uuid);

    expect(await rejection(lvm.resolve(fx.files.qcow2))).toMatchObject({ code: 'KVMBAK_NOT_AN_LV' });
    expect(await rejection(lvm.resolve(fx.pv))).toMatchObject({ code: 'KVMBAK_NOT_AN_LV' });
    expect(await rejection(lvm.resolve(`/dev/${fx.vg}/no-such-lv`))).toMatchObject({ code: 'KVMBAK_PATH_NOT_FOUND' });
  });

  it('reports the VG', async () => {
    const vg = await lvm.vgInfo(fx.vg);
    expect(vg).toMatchObject({ name: fx.vg, extentSize: 4 * MiB, pvCount: 1 });
    expect(vg.free).toBeGreaterThan(0);
    expect(vg.size).toBeGreaterThan(vg.free);
    expect(await rejection(lvm.vgInfo('no-such-vg'))).toMatchObject({ code: 'KVMBAK_VG_NOT_FOUND' });
  });

  it('classic snapshot: create with size and tags, usage grows with origin writes, extend, list by tag, remove', async () => {
    const origin = await lvm.createVolume(fx.vg, `${PREFIX}origin`, 32 * MiB);
    expect(origin).toMatchObject({ size: 32 * MiB, snapshot: null, active: true });
    const before = writePattern(origin.path, 'origin', 32 * MiB);

    const snap = await lvm.createSnapshot(origin.fullName, { name: `${PREFIX}snap`, size: 8 * MiB, tags: [RUN_TAG] });
    expect(snap).toMatchObject({ snapshot: 'classic', origin: `${PREFIX}origin`, size: 8 * MiB, active: true, invalid: false });
    expect(snap.tags.sort()).toEqual(['kvmbak', RUN_TAG].sort());
    expect(snap.attr.startsWith('swi-a-s')).toBe(true);

    const fresh = await lvm.snapshotUsage(snap.fullName);
    expect(fresh).toMatchObject({ kind: 'classic', invalid: false, full: false, active: true, size: 8 * MiB });
    expect(fresh.percent).toBeGreaterThanOrEqual(0);
    expect(fresh.percent).toBeLessThan(5);

    // The guest writes 2 MiB: the origin diverges, the snapshot keeps the old data.
    writePattern(origin.path, 'guest-write', 2 * MiB, 4 * MiB);
    const used = await lvm.snapshotUsage(snap.fullName);
    expect(used.percent).toBeGreaterThan(25);
    expect(used.usedBytes).toBeGreaterThan(2 * MiB);
    expect(await sha256Of(snap.path)).toBe(before);
    expect(await sha256Of(origin.path)).not.toBe(before);

    const bigger = await lvm.extend(snap.fullName, 8 * MiB);
    expect(bigger.size).toBe(16 * MiB);
    const after = await lvm.snapshotUsage(snap.fullName);
    expect(after.size).toBe(16 * MiB);
    expect(after.percent).toBeLessThan(used.percent as number);

    expect((await lvm.list({ tag: RUN_TAG })).map((l) => l.fullName)).toEqual([snap.fullName]);
    expect((await lvm.list({ tag: 'kvmbak' })).map((l) => l.fullName)).toContain(snap.fullName);
    const inVg = (await lvm.list({ vg: fx.vg })).map((l) => l.lv);
    expect(inVg).toEqual(expect.arrayContaining([`${PREFIX}origin`, `${PREFIX}snap`, 'lab-one-disk0']));

    // Only kvmbak's own snapshots are removed without force.
    expect(await rejection(lvm.remove(origin.fullName))).toMatchObject({ code: 'KVMBAK_LVM_REFUSED' });
    expect(await lvm.remove(snap.fullName)).toBe(true);
    expect(await lvm.remove(snap.fullName, { missingOk: true })).toBe(false);
    expect(await rejection(lvm.remove(snap.fullName))).toMatchObject({ code: 'KVMBAK_LV_NOT_FOUND' });
    expect(await lvm.list({ tag: RUN_TAG })).toEqual([]);
  });

  it('an overflowing snapshot is reported invalid, reads fail with EIO, and it can still be removed', async () => {
    const origin = await lvm.get(`${fx.vg}/${PREFIX}origin`);
    const snap = await lvm.createSnapshot(origin.fullName, { name: `${PREFIX}ovf`, size: 4 * MiB });
    // More than the COW area: the origin write succeeds, the kernel invalidates the snapshot.
    writePattern(origin.path, 'overflow', 8 * MiB, 8 * MiB);
    const usage = await lvm.snapshotUsage(snap.fullName);
    expect(usage).toMatchObject({ invalid: true, kind: 'classic' });
    expect(usage.percent).toBe(100);
    const lv = await lvm.get(snap.fullName);
    expect(lv.invalid).toBe(true);
    expect(lv.attr[4]).toBe('I');
    expect(await rejection(sha256Of(snap.path))).toMatchObject({ code: 'EIO' });
    expect(await lvm.remove(snap.fullName)).toBe(true);
  });

  it('an oversized COW request is capped by lvm2; a taken name is refused before lvcreate', async () => {
    const origin = await lvm.get(`${fx.vg}/${PREFIX}origin`);
    const snap = await lvm.createSnapshot(origin.fullName, { name: `${PREFIX}big`, size: 16 * 1024 * MiB });
    expect(snap.size).toBeGreaterThanOrEqual(origin.size);
    expect(snap.size).toBeLessThan(origin.size + 8 * MiB);
    expect(await rejection(lvm.createSnapshot(origin.fullName, { name: `${PREFIX}big`, size: 4 * MiB }))).toMatchObject({
      code: 'KVMBAK_LV_EXISTS',
    });
    expect(await rejection(lvm.createSnapshot(origin.fullName, { name: `${PREFIX}nosize` }))).toMatchObject({
      code: 'KVMBAK_INVALID_ARGUMENT',
    });
    await lvm.remove(snap.fullName);
  });

  it('thin: a thin volume in a thin pool gets a thin snapshot (activated) with pool usage', async () => {
    await sh('lvcreate', ['-q', '-y', '--type', 'thin-pool', '-L', '64M', '-n', `${PREFIX}pool`, fx.vg]);
    const thin = await lvm.createVolume(fx.vg, `${PREFIX}thin`, 32 * MiB, { thinPool: `${PREFIX}pool` });
    expect(thin).toMatchObject({ thin: true, pool: `${PREFIX}pool`, size: 32 * MiB });
    const data = writePattern(thin.path, 'thin', 8 * MiB);

    const snap = await lvm.createSnapshot(thin.fullName, { name: `${PREFIX}thin-snap`, tags: [RUN_TAG] });
    expect(snap).toMatchObject({ snapshot: 'thin', active: true, origin: `${PREFIX}thin` });
    expect(await sha256Of(snap.path, 8 * MiB)).toBe(data);
    const usage = await lvm.snapshotUsage(snap.fullName);
    expect(usage.kind).toBe('thin');
    expect(usage.pool?.name).toBe(`${PREFIX}pool`);
    expect(usage.pool?.dataPercent).toBeGreaterThan(0);
    expect(await lvm.remove(snap.fullName)).toBe(true);
  });
});
