/**
 * Prune and the thin_delta bases: a base that only the deleted sets recorded is removed (when it
 * still is that base: tagged kvmbak-base, the recorded thin id); one a remaining set records, one
 * that is gone, or an LV of the same name that is not that base, stays. lvm2 answers with the lab
 * captures (lvs-thin.json renamed, the thin ids of test/fixtures/thin, lvremove's captured run).
 */
import { afterEach, describe, expect, it } from 'vitest';
import { rm } from 'node:fs/promises';
import type { CommandRunner } from '../../../src/exec/index.js';
import { pruneBackups } from '../../../src/index.js';
import { FakeThinPool, thinInfo, thinVgReport } from './fake-thin-pool.js';
import { ok, record } from '../lvm/helpers.js';
import { buildSet, tempDir } from '../store/helpers.js';

const VG = 'vg0';
const POOL = 'thin-pool';
const ORIGIN = 'web01-root';
const B1 = 'web01-root-kvmbak-20261201t010000z';
const B2 = 'web01-root-kvmbak-20261202t010000z';
const BASE_ID = thinInfo.pools.find((p) => p.pool === 'pool64k')!.snapThinId;

let dest: string | undefined;
afterEach(async () => {
  if (dest !== undefined) await rm(dest, { recursive: true, force: true });
  dest = undefined;
});

/** An LVM where `present` is a thin snapshot of ORIGIN tagged `tags`; records every lvremove. */
function world(present: string, tags = 'kvmbak,kvmbak-base', origin = ORIGIN): { pool: FakeThinPool; removed: string[][] } {
  const lvs = thinVgReport({ vg: VG, pool: POOL, origin: ORIGIN, snapshot: present }, tags, origin);
  const removed: string[][] = [];
  const captured = record('lvremove-snapshot');
  const inner: CommandRunner = {
    run: async (file, args) => {
      if (file === 'lvremove') {
        removed.push([file, ...args]);
        const name = args[args.length - 1]!.split('/')[1]!;
        return ok(captured.stdout.replace('kvmbak-fx-web-01-snap', name));
      }
      return ok(lvs);
    },
  };
  return { pool: new FakeThinPool(inner, { vg: VG, pool: POOL, base: present, current: 'unused' }), removed };
}

async function threeSets(): Promise<string> {
  const d = await tempDir('kvmbak-prune-bases-');
  await buildSet(d, 'web', new Date('2026-12-01T01:00:00Z'), { format: 'chunks', base: { lv: B1, thinId: BASE_ID } });
  await buildSet(d, 'web', new Date('2026-12-02T01:00:00Z'), { format: 'chunks', base: { lv: B2, thinId: BASE_ID } });
  await buildSet(d, 'web', new Date('2026-12-03T01:00:00Z'), { format: 'image' });
  return d;
}

describe('prune removes the bases no remaining set records', () => {
  it('keep-last 1: the deleted sets’ bases go — the one that exists is removed, the one already gone is skipped', async () => {
    dest = await threeSets();
    const { pool, removed } = world(B2);
    const r = await pruneBackups(dest, 'web', { keepLast: 1 }, { lvm: pool.lvm });
    expect(r.domains[0]!.deleted).toHaveLength(2);
    expect(r.domains[0]!.orphanBases).toEqual([
      { vg: VG, lv: B1, thinId: BASE_ID },
      { vg: VG, lv: B2, thinId: BASE_ID },
    ]);
    expect(r.bases).toEqual({ removed: [`${VG}/${B2}`], errors: [] });
    expect(removed).toEqual([['lvremove', '-y', '--', `${VG}/${B2}`]]);
  });

  it('a base whose origin is gone (the disk was lost) is no longer a snapshot, and is still removed', async () => {
    dest = await threeSets();
    const { pool, removed } = world(B2, 'kvmbak,kvmbak-base', '');
    expect((await pool.lvm.find({ vg: VG, lv: B2 }))!.snapshot).toBeNull();
    const r = await pruneBackups(dest, 'web', { keepLast: 1 }, { lvm: pool.lvm });
    expect(r.bases).toEqual({ removed: [`${VG}/${B2}`], errors: [] });
    expect(removed).toEqual([['lvremove', '-y', '--', `${VG}/${B2}`]]);
  });

  it('keep-last 2: the remaining set’s base stays; the deleted set’s base (already gone) asks nothing of LVM to remove', async () => {
    dest = await threeSets();
    const { pool, removed } = world(B2);
    const r = await pruneBackups(dest, 'web', { keepLast: 2 }, { lvm: pool.lvm });
    expect(r.domains[0]!.orphanBases).toEqual([{ vg: VG, lv: B1, thinId: BASE_ID }]);
    expect(r.bases).toEqual({ removed: [], errors: [] });
    expect(removed).toEqual([]);
  });

  it('an LV of the base’s name that is not the base (no kvmbak-base tag) is left alone', async () => {
    dest = await threeSets();
    const { pool, removed } = world(B2, 'kvmbak,kvmbak-run-x');
    const r = await pruneBackups(dest, 'web', { keepLast: 1 }, { lvm: pool.lvm });
    expect(r.bases).toEqual({ removed: [], errors: [] });
    expect(removed).toEqual([]);
  });

  it('no base recorded: LVM is not asked at all', async () => {
    dest = await tempDir('kvmbak-prune-bases-');
    await buildSet(dest, 'web', new Date('2026-12-01T01:00:00Z'), { format: 'chunks' });
    await buildSet(dest, 'web', new Date('2026-12-02T01:00:00Z'), { format: 'chunks' });
    const lvm = { find: () => Promise.reject(new Error('LVM asked')) } as never;
    const r = await pruneBackups(dest, 'web', { keepLast: 1 }, { lvm });
    expect(r.domains[0]!.deleted).toHaveLength(1);
    expect(r.bases).toEqual({ removed: [], errors: [] });
  });
});
