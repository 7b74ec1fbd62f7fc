/**
 * Thin snapshots: what runs out is the thin pool. Checked at planning (a pool
 * nearly full is refused) and watched while archiving (a pool that fills up
 * fails the backup). lvm2's answers are the lab capture of a thin pool with a
 * thin origin and its snapshot (test/fixtures/lvm/lvs-thin.json), with the
 * pool's usage set per test.
 */
import { describe, expect, it } from 'vitest';
import { Lvm, type PlannedDisk } from '../../../src/index.js';
import type { CommandRunner } from '../../../src/exec/index.js';
import { checkThinPoolRoom } from '../../../src/backup/plan.js';
import { SnapshotWatcher } from '../../../src/backup/watch.js';
import { fixture, ok } from '../lvm/helpers.js';

const VG = 'vgkvmbak';
const POOL = 'kvmbak-fx-pool';
const SNAP = 'kvmbak-fx-db-02-snap';

/** lvm2 answering every lvs with the capture, the pool's data and metadata usage replaced. */
function lvmWithPool(data: string, metadata: string): { lvm: Lvm; calls: string[][] } {
  const doc = JSON.parse(fixture('lvs-thin')) as { report: { lv: Record<string, string>[] }[] };
  const pool = doc.report[0]!.lv.find((r) => r.lv_name === POOL)!;
  pool.data_percent = data;
  pool.snap_percent = data;
  pool.metadata_percent = metadata;
  const text = JSON.stringify(doc);
  const calls: string[][] = [];
  const runner: CommandRunner = {
    run: async (file, args) => {
      calls.push([file, ...args]);
      return ok(text);
    },
  };
  return { lvm: new Lvm(runner), calls };
}

function watcher(lvm: Lvm, invalid: Error[]) {
  return new SnapshotWatcher({
    lvm,
    snapshots: [{ target: 'vda', vg: VG, lv: SNAP, size: 32 << 20, peakPercent: 0, extendedTo: null, done: false, thin: true }],
    intervalMs: 60_000,
    threshold: 80,
    onExtended: () => undefined,
    onWarning: () => undefined,
    onInvalid: (e) => void invalid.push(e),
  });
}

describe('a thin snapshot while archiving: its pool is watched', () => {
  it('a pool with room: nothing happens (no lvextend of a thin snapshot)', async () => {
    const { lvm, calls } = lvmWithPool('9.38', '11.43');
    const invalid: Error[] = [];
    expect(await watcher(lvm, invalid).check({ strict: true })).toBeNull();
    expect(invalid).toEqual([]);
    expect(calls.map((c) => c[0])).toEqual(['lvs']);
  });

  it('a pool whose data filled up fails the backup, saying what to do', async () => {
    const { lvm } = lvmWithPool('100.00', '11.43');
    const invalid: Error[] = [];
    const e = await watcher(lvm, invalid).check();
    expect(e).toMatchObject({
      name: 'SnapshotInvalidError',
      code: 'KVMBAK_SNAPSHOT_INVALID',
      target: 'vda',
      message: `thin pool ${VG}/${POOL} of snapshot ${VG}/${SNAP} (disk vda) ran out of data space while it was archived: the backup is discarded; extend the pool (lvextend ${VG}/${POOL}) and run it again`,
    });
    expect(invalid).toEqual([e]);
  });

  it('a pool whose metadata filled up fails it too', async () => {
    const { lvm } = lvmWithPool('40.00', '100.00');
    expect((await watcher(lvm, []).check())?.message).toMatch(/ran out of metadata space/);
  });
});

describe('a thin disk at planning: its pool must have room', () => {
  const disk = { target: 'vda', vg: VG, thin: true, thinPool: POOL } as PlannedDisk;

  it('a pool with room passes', async () => {
    await checkThinPoolRoom(lvmWithPool('9.38', '11.43').lvm, 'db-02', [disk]);
  });

  it('a nearly full pool is refused before anything is touched', async () => {
    const { lvm, calls } = lvmWithPool('96.50', '11.43');
    await expect(checkThinPoolRoom(lvm, 'db-02', [disk])).rejects.toMatchObject({
      code: 'KVMBAK_THIN_POOL_FULL',
      message: `thin pool ${VG}/${POOL} has too little room for the thin snapshots of db-02 (its data is 96.5% full; kvmbak needs it below 95%): extend it (lvextend ${VG}/${POOL}) or free space in it first`,
    });
    expect(calls.every((c) => c[0] === 'lvs')).toBe(true);
    await expect(checkThinPoolRoom(lvmWithPool('10.00', '97.00').lvm, 'db-02', [disk])).rejects.toThrow(/its metadata is 97\.0% full/);
  });
});
