/**
 * The snapshot watcher on the fake lvm2 world, and the fake itself against
 * the lab captures it is built from.
 */
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { parseLvsReport } from '../../../src/index.js';
import { SnapshotWatcher, type WatchedSnapshot } from '../../../src/backup/watch.js';
import { LV_FIELDS, VG_FIELDS, fixturePath, lvsArgv, vgsArgv } from '../lvm/helpers.js';
import { FakeLvm, MiB } from './fake-lvm.js';
import { formatReport } from './fake-lvm-world.js';

let dir: string;
let fake: FakeLvm;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'kvmbak-watch-'));
  fake = new FakeLvm(dir, {
    vgs: [{ name: 'vg0', size: 16 * MiB }],
    lvs: [
      { vg: 'vg0', lv: 'web-root', content: Buffer.alloc(2 * MiB, 1) },
      { vg: 'vg0', lv: 'web-data', content: Buffer.alloc(MiB, 2) },
    ],
  });
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('the fake lvm2', () => {
  it('lays reports out exactly as lvm2 2.03.16 does', async () => {
    for (const [name, key, fields] of [
      ['lvs-classic', 'lv', LV_FIELDS],
      ['lvs-all', 'lv', LV_FIELDS],
      ['vgs', 'vg', VG_FIELDS],
    ] as const) {
      const text = await readFile(fixturePath(name), 'utf8');
      const rows = (JSON.parse(text) as { report: Record<string, Record<string, string>[]>[] }).report[0][key];
      expect(formatReport(key, rows, fields.split(','))).toBe(text);
    }
  });

  it('answers the exact argv kvmbak runs, with rows made from captured ones', async () => {
    const snap = await fake.lvm.createSnapshot({ vg: 'vg0', lv: 'web-root' }, { name: 'web-root-snap', size: MiB, tags: ['t1'] });
    expect(fake.calls()[0]).toEqual(lvsArgv('vg0'));
    expect(snap).toMatchObject({ snapshot: 'classic', attr: 'swi-a-s---', origin: 'web-root', size: MiB, tags: ['kvmbak', 't1'], invalid: false });
    expect((await readFile(snap.path)).equals(await readFile(fake.lv('vg0', 'web-root').file))).toBe(true);
    fake.setUsage('web-root-snap', 42.5);
    expect(await fake.lvm.snapshotUsage('vg0/web-root-snap')).toMatchObject({ percent: 42.5, invalid: false, usedBytes: 445645 });
    fake.invalidate('web-root-snap');
    expect(await fake.lvm.snapshotUsage('vg0/web-root-snap')).toMatchObject({ percent: 100, invalid: true, full: true });
    expect((await fake.lvm.vgInfo('vg0')).free).toBe(12 * MiB);
    expect(fake.calls('vgs')[0]).toEqual(vgsArgv('vg0'));
    const origin = parseLvsReport((await fake.run('lvs', lvsArgv().slice(1))).stdout).find((l) => l.lv === 'web-root')!;
    expect(origin.attr).toBe('owi-a-s---');
    expect(await fake.lvm.remove('vg0/web-root-snap')).toBe(true);
    expect(fake.snapshots()).toEqual([]);
  });

  it('fails like lvm2: no space, missing VG', async () => {
    await expect(fake.lvm.createSnapshot({ vg: 'vg0', lv: 'web-root' }, { name: 's', size: 64 * MiB })).rejects.toMatchObject({
      message: 'lvcreate failed (exit code 5): Volume group "vg0" has insufficient free space (13 extents): 64 required.',
    });
    await expect(fake.lvm.vgInfo('vg9')).rejects.toMatchObject({ code: 'KVMBAK_VG_NOT_FOUND' });
  });
});

describe('SnapshotWatcher', () => {
  async function watched(): Promise<{ w: SnapshotWatcher; snaps: WatchedSnapshot[]; warnings: string[]; extended: number[] }> {
    const s = await fake.lvm.createSnapshot({ vg: 'vg0', lv: 'web-root' }, { name: 'web-root-snap', size: 2 * MiB });
    const snaps: WatchedSnapshot[] = [{ target: 'vda', vg: 'vg0', lv: s.lv, size: s.size, peakPercent: 0, extendedTo: null, done: false }];
    const warnings: string[] = [];
    const extended: number[] = [];
    const w = new SnapshotWatcher({
      lvm: fake.lvm,
      snapshots: snaps,
      intervalMs: 60_000,
      threshold: 80,
      onExtended: (x) => extended.push(x.size),
      onWarning: (m) => warnings.push(m),
      onInvalid: () => undefined,
    });
    return { w, snaps, warnings, extended };
  }

  it('a usage it cannot read is a warning while polling, and an error for the check that vouches for an image', async () => {
    const { w, warnings } = await watched();
    fake.fail('lvs', { count: 2 });
    expect(await w.check()).toBeNull();
    expect(warnings).toEqual([
      'could not read the usage of snapshot vg0/web-root-snap: Volume group vg0 does not exist on this host: check the name (vgs lists the volume groups)',
    ]);
    await expect(w.check({ strict: true })).rejects.toMatchObject({
      code: 'KVMBAK_SNAPSHOT_UNKNOWN',
      message: expect.stringMatching(
        /^cannot tell whether snapshot vg0\/web-root-snap of disk vda stayed valid \(.*\); the backup is discarded: run it again$/,
      ),
    });
  });

  it('checks run one at a time: two at once extend a filling snapshot once', async () => {
    const { w, snaps, extended } = await watched();
    fake.setUsage('web-root-snap', 90);
    await Promise.all([w.check(), w.check(), w.check({ strict: true })]);
    expect(fake.calls('lvextend')).toEqual([['lvextend', '-L', `+${MiB}b`, '--', 'vg0/web-root-snap']]);
    expect(extended).toEqual([3 * MiB]);
    expect(snaps[0]).toMatchObject({ size: 3 * MiB, extendedTo: 3 * MiB, peakPercent: 90 });
  });

  it('polls on its own until stopped', async () => {
    const { snaps } = await watched();
    const w = new SnapshotWatcher({
      lvm: fake.lvm,
      snapshots: snaps,
      intervalMs: 1,
      threshold: 80,
      onExtended: () => undefined,
      onWarning: () => undefined,
      onInvalid: () => undefined,
    });
    w.start();
    while (fake.calls('lvs').length < 4) await new Promise((r) => setTimeout(r, 2));
    await w.stop();
    const n = fake.calls('lvs').length;
    await new Promise((r) => setTimeout(r, 20));
    expect(fake.calls('lvs').length).toBe(n);
  });
});
