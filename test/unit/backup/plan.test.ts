/**
 * Planning: every precondition is checked before anything touches the VM,
 * and a broken one is one clear error. Real test-driver domains, fake lvm2.
 */
import { mkdir, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import {
  type BackupMode,
  type BackupOptions,
  BackupPlanError,
  ConfigError,
  backup,
  chooseMode,
  inspectBackup,
  parseSnapshotSize,
  snapshotSizeFor,
} from '../../../src/index.js';
import { MiB } from './fake-lvm.js';
import { type Env, defaultWorld, setup, stateOf } from './helpers.js';

const GiB = 1024 * MiB;
let env: Env | undefined;
afterEach(async () => {
  await env?.cleanup();
  env = undefined;
});

async function open(spec = defaultWorld()): Promise<Env> {
  env = await setup(spec);
  return env;
}

/** Only lvm2 reports ran (nothing was created, extended or removed), and every domain is as the node file says. */
async function expectUntouched(e: Env): Promise<void> {
  expect([...new Set(e.fake.calls().map((c) => c[0]))].every((c) => c === 'lvs' || c === 'vgs')).toBe(true);
  expect(await stateOf(e.hv, 'web-01')).toBe('running');
  expect(await stateOf(e.hv, 'app-01')).toBe('paused');
  expect(await stateOf(e.hv, 'db-01')).toBe('shutoff');
}

describe('mode', () => {
  it('defaults to save for a running or paused domain and offline for a shut-off one', async () => {
    const e = await open();
    expect((await inspectBackup({ domain: 'web-01' }, e.ctx)).mode).toBe('save');
    expect((await inspectBackup({ domain: 'app-01' }, e.ctx)).mode).toBe('save');
    expect((await inspectBackup({ domain: 'db-01' }, e.ctx)).mode).toBe('offline');
    expect((await inspectBackup({ domain: 'web-01', mode: 'quiesce' }, e.ctx)).mode).toBe('quiesce');
    const p = await inspectBackup({ domain: 'web-01' }, e.ctx);
    expect(p).toMatchObject({ stateBefore: 'running', memoryBytes: 64 * 1024 * 1024, dest: null, destFree: null, uri: e.uri });
    expect((await inspectBackup({ domain: 'web-01', mode: 'pause' }, e.ctx)).memoryBytes).toBe(0);
    await expectUntouched(e);
  });

  it('refuses a mode that does not fit the state, saying what to use', async () => {
    const e = await open();
    await expect(inspectBackup({ domain: 'db-01', mode: 'save' }, e.ctx)).rejects.toMatchObject({
      code: 'KVMBAK_BACKUP_STATE',
      message: 'domain db-01 is shut off, so `mode` save cannot apply; use `mode` offline (or leave `mode` out)',
    });
    await expect(inspectBackup({ domain: 'web-01', mode: 'offline' }, e.ctx)).rejects.toThrow(
      /domain web-01 is running; `mode` offline needs it shut off/,
    );
    await expect(inspectBackup({ domain: 'web-01', mode: 'snap' as 'save' }, e.ctx)).rejects.toBeInstanceOf(ConfigError);
    expect(() => chooseMode('x', 'crashed', undefined)).toThrow(/x is crashed; kvmbak backs up domains that are running, paused or shut off/);
    await expectUntouched(e);
  });

  it('names the domains there are when the name is unknown', async () => {
    const e = await open();
    const err = await inspectBackup({ domain: 'web-02' }, e.ctx).catch((x: unknown) => x);
    expect(err).toBeInstanceOf(BackupPlanError);
    expect(err).toMatchObject({
      code: 'KVMBAK_NO_DOMAIN',
      message: `no domain named web-02 on ${e.uri} (domains: app-01, db-01, files-01, vol-01, web-01); check the name or \`uri\``,
    });
  });
});

describe('disks', () => {
  it('plans every LVM disk with its LV, pool, snapshot; skips the cdrom', async () => {
    const e = await open();
    const p = await inspectBackup({ domain: 'web-01' }, e.ctx);
    expect(p.disks.map((d) => [d.target, d.source, `${d.vg}/${d.lv}`, d.pool, d.lvSize, d.thin, d.snapshotSize])).toEqual([
      ['vda', '/dev/vg0/web-root', 'vg0/web-root', 'vg0', 2 * MiB, false, 2 * MiB],
      ['vdb', '/dev/vg0/web-data', 'vg0/web-data', 'vg0', MiB, false, MiB],
    ]);
    expect(p.disks[0].lvUuid).toBe(e.fake.lv('vg0', 'web-root').uuid);
    expect(p.disks[0].snapshotName).toMatch(/^web-root-kvmbak-\d{8}t\d{6}z$/);
    expect(p.skipped).toEqual([{ target: 'sda', device: 'cdrom', reason: 'cdrom: removable media are not backed up' }]);
    expect(p.volumeGroups).toEqual([{ vg: 'vg0', free: 58 * MiB, needed: 3 * MiB, extentSize: MiB }]);
  });

  it('leaves out the disks named with exclude', async () => {
    const e = await open();
    const p = await inspectBackup({ domain: 'web-01', exclude: ['vdb'] }, e.ctx);
    expect(p.disks.map((d) => d.target)).toEqual(['vda']);
    expect(p.skipped).toEqual([
      { target: 'vdb', device: 'disk', reason: 'excluded with --exclude' },
      { target: 'sda', device: 'cdrom', reason: 'cdrom: removable media are not backed up' },
    ]);
  });

  it('refuses an exclude naming no disk of the domain, listing its disks', async () => {
    const e = await open();
    await expect(inspectBackup({ domain: 'web-01', exclude: ['vdz'] }, e.ctx)).rejects.toMatchObject({
      code: 'KVMBAK_INVALID_ARGUMENT',
      message: '`exclude` vdz: domain web-01 has no disk vdz (its disks: vda, vdb, sda)',
    });
  });

  it('a file disk is an error naming the disk and how to leave it out; with --exclude it is skipped', async () => {
    const e = await open();
    await expect(inspectBackup({ domain: 'files-01' }, e.ctx)).rejects.toMatchObject({
      code: 'KVMBAK_BACKUP_DISK',
      message:
        'disk vdb of domain files-01 is a file qcow2 disk (/var/lib/libvirt/images/files-01-data.qcow2), not an LVM logical ' +
        'volume; kvmbak backs up LVM disks only — leave it out with `exclude` vdb',
    });
    const p = await inspectBackup({ domain: 'files-01', exclude: ['vdb'] }, e.ctx);
    expect(p.disks.map((d) => d.target)).toEqual(['vda']);
    await expectUntouched(e);
  });

  it('resolves a type=volume disk through its libvirt pool', async () => {
    const e = await open();
    const p = await inspectBackup({ domain: 'vol-01' }, e.ctx);
    expect(p.disks).toMatchObject([{ target: 'vda', source: '/dev/vg0/vol-root', vg: 'vg0', lv: 'vol-root', pool: 'vg0' }]);
  });

  it('a block disk that is no LV is an error naming the disk', async () => {
    const spec = defaultWorld();
    spec.lvs = spec.lvs.filter((l) => l.lv !== 'web-data');
    const e = await open(spec);
    // /dev/vg0/web-data is no LV: Lvm.resolve stats the path, which is not there on this host.
    const err = await inspectBackup({ domain: 'web-01' }, e.ctx).catch((x: unknown) => x);
    expect(err).toMatchObject({ code: 'KVMBAK_BACKUP_DISK' });
    expect((err as Error).message).toMatch(/^disk vdb of domain web-01 \(\/dev\/vg0\/web-data\) is not an LVM logical volume .*`exclude` vdb$/);
  });
});

describe('room for the snapshots', () => {
  it('refuses when the VG cannot hold every snapshot, saying how much and what to do', async () => {
    const spec = defaultWorld();
    spec.vgs[0].size = 8 * MiB; // 6 MiB of LVs: 2 MiB free, 3 MiB needed
    const e = await open(spec);
    await expect(inspectBackup({ domain: 'web-01' }, e.ctx)).rejects.toMatchObject({
      code: 'KVMBAK_VG_FULL',
      message:
        'volume group vg0 has 2.0 MiB free but the snapshots need 3.0 MiB; free space in vg0, give a smaller ' +
        '`snapshotSize`, or leave disks out with `exclude`',
    });
    expect((await inspectBackup({ domain: 'web-01', snapshotSize: '50%' }, e.ctx)).volumeGroups[0]).toMatchObject({ needed: 2 * MiB });
    await expectUntouched(e);
  });

  it('sizes snapshots: default 10% of the LV but at least 1 GiB and at most the LV; a share; a size', async () => {
    const spec = defaultWorld();
    spec.vgs[0].size = 64 * GiB;
    spec.lvs = spec.lvs.map((l) => (l.lv === 'web-root' ? { vg: 'vg0', lv: 'web-root', size: 20 * GiB } : l));
    const e = await open(spec);
    const sizes = async (snapshotSize?: string) =>
      (await inspectBackup({ domain: 'web-01', ...(snapshotSize !== undefined ? { snapshotSize } : {}) }, e.ctx)).disks.map((d) => d.snapshotSize);
    expect(await sizes()).toEqual([2 * GiB, MiB]);
    expect(await sizes('25%')).toEqual([5 * GiB, MiB]); // 256 KiB rounds up to one extent
    expect(await sizes('3G')).toEqual([3 * GiB, MiB]);
    expect(await sizes('1536K')).toEqual([2 * MiB, MiB]);
    await expect(sizes('0%')).rejects.toThrow(/snapshotSize: 0% is out of range/);
    await expect(sizes('lots')).rejects.toBeInstanceOf(ConfigError);
    expect(snapshotSizeFor(4 * GiB, 4 * MiB, parseSnapshotSize(undefined))).toBe(GiB);
  });
});

describe('destination', () => {
  it('a missing destination is refused before the VM is touched', async () => {
    const e = await open();
    const dest = join(e.dir, 'no-such-dir');
    await expect(backup(e.opts('web-01', { dest }), e.ctx)).rejects.toMatchObject({
      code: 'KVMBAK_DEST_NOT_FOUND',
      message: `backup destination ${dest} does not exist; create it (mkdir -m 700 ${dest}) or mount the backup disk there`,
    });
    await expectUntouched(e);
  });

  it('a destination that is a file is refused', async () => {
    const e = await open();
    const dest = join(e.dir, 'a-file');
    await writeFile(dest, 'x');
    await expect(backup(e.opts('web-01', { dest }), e.ctx)).rejects.toMatchObject({ code: 'KVMBAK_DEST_NOT_FOUND' });
  });

  it('a destination that is not writable is refused', async () => {
    const e = await open();
    // /proc/sys refuses writes even to root; other users get a folder without write permission.
    let dest = '/proc/sys';
    if (process.getuid?.() !== 0) {
      dest = join(e.dir, 'ro');
      await mkdir(dest, { mode: 0o500 });
    }
    await expect(backup(e.opts('web-01', { dest }), e.ctx)).rejects.toMatchObject({
      code: 'KVMBAK_DEST_NOT_WRITABLE',
      message: `backup destination ${dest} is not writable; fix its permissions or run as root`,
    });
    await expectUntouched(e);
  });

  it('inspect with a destination reports its free space and creates nothing there', async () => {
    const e = await open();
    const p = await inspectBackup({ domain: 'web-01', dest: e.dest }, e.ctx);
    expect(p.dest).toBe(e.dest);
    expect(p.destFree).toBeGreaterThan(0);
    expect(await readdir(e.dest)).toEqual([]);
  });

  it('checks the options before anything', async () => {
    const e = await open();
    await expect(backup({ domain: 'web-01', dest: '' }, e.ctx)).rejects.toMatchObject({ code: 'KVMBAK_INVALID_ARGUMENT' });
    await expect(backup(e.opts('web-01', { level: 12 }), e.ctx)).rejects.toThrow('level must be a whole number from 1 to 9, got 12');
    await expect(backup(e.opts('web-01', { threads: 0 }), e.ctx)).rejects.toThrow('threads must be a whole number from 1 to 256, got 0');
    expect(e.fake.calls()).toEqual([]);
  });

  // Defect 4 of issue 9: `--threads 257` was refused by the archiver only after the VM was saved and snapshotted.
  it("refuses every bad option before planning: nothing held, no set, no lvm2 call (the archiver's limits)", async () => {
    const e = await open();
    const bad: [Partial<BackupOptions>, string, string][] = [
      [{ threads: 257 }, 'threads', 'threads must be a whole number from 1 to 256, got 257'],
      [{ chunkSize: 1000 }, 'chunkSize', 'chunkSize must be a multiple of 4 KiB between 4 KiB and 256 MiB, got 1000 (1000 bytes)'],
      [{ agentTimeoutSeconds: 0 }, 'agentTimeoutSeconds', 'agentTimeoutSeconds must be a whole number of seconds from 1 to 2147483647, got 0'],
      [{ mode: 'snapshot' as BackupMode }, 'mode', 'mode "snapshot" is not a mode; use one of save, pause, quiesce, offline'],
      [{ quiesceFallback: 'stop' as 'pause' }, 'quiesceFallback', `quiesceFallback must be 'pause' or 'none', got "stop"`],
      [{ snapshotSize: 'lots' }, 'snapshotSize', "snapshotSize: 'lots' is not a size; write a number with an optional unit, e.g. 512M, 2G or 1.5GiB"],
      [{ exclude: 'vdb' as unknown as string[] }, 'exclude', 'exclude must be a list of disk targets such as vdb'],
      [{ extendThreshold: 100 }, 'extendThreshold', 'extendThreshold must be a percentage between 0 and 100, got 100'],
      [{ hooks: { beforeHold: 'x' as unknown as () => Promise<void> } }, 'hooks', 'hooks.beforeHold must be a function'],
    ];
    for (const [more, option, message] of bad) {
      await expect(backup(e.opts('web-01', more), e.ctx)).rejects.toMatchObject({ code: 'KVMBAK_INVALID_ARGUMENT', option, message });
    }
    expect(e.fake.calls()).toEqual([]);
    expect(await readdir(e.dest)).toEqual([]);
    expect(await stateOf(e.hv, 'web-01')).toBe('running');
  });
});
