/**
 * Which path a thin disk takes in format chunks (planThinDelta): thin delta only when the base the
 * previous set recorded is still exactly that snapshot — tagged kvmbak-base, a thin snapshot of
 * this LV in its pool, with the recorded thin id — and the disk kept its size; otherwise a full
 * read with the reason. lvm2 answers with the lab captures: the thin pool, origin and thin
 * snapshot of test/fixtures/lvm/lvs-thin.json (names and tags replaced) and the thin ids of
 * test/fixtures/thin (fake-thin-pool.ts).
 */
import { describe, expect, it } from 'vitest';
import type { CommandRunner } from '../../../src/exec/index.js';
import type { ManifestDisk, PlannedDisk } from '../../../src/index.js';
import { planThinDelta } from '../../../src/backup/plan.js';
import { FakeThinPool, thinInfo, thinVgReport } from './fake-thin-pool.js';
import { ok } from '../lvm/helpers.js';

const VG = 'vg0';
const POOL = 'thin-pool';
const ORIGIN = 'web-root';
const BASE = 'web-root-kvmbak-20261201t010000z';
const MiB = 1024 * 1024;
const SIZE = 64 * MiB;
const BASE_ID = thinInfo.pools.find((p) => p.pool === 'pool64k')!.snapThinId;

/** lvs of the VG: the capture's pool, origin and snapshot, renamed, the snapshot with `tags`. */
function world(tags: string, origin = ORIGIN): FakeThinPool {
  const text = thinVgReport({ vg: VG, pool: POOL, origin: ORIGIN, snapshot: BASE }, tags, origin);
  const inner: CommandRunner = { run: async () => ok(text) };
  return new FakeThinPool(inner, { vg: VG, pool: POOL, base: BASE, current: `${ORIGIN}-now` });
}

function disk(over: Partial<PlannedDisk> = {}): PlannedDisk {
  return {
    target: 'vda',
    source: `/dev/${VG}/${ORIGIN}`,
    vg: VG,
    lv: ORIGIN,
    lvPath: `/dev/${VG}/${ORIGIN}`,
    lvSize: SIZE,
    lvUuid: 'x',
    thin: true,
    thinPool: POOL,
    pool: null,
    capacity: SIZE,
    allocation: SIZE,
    physical: SIZE,
    snapshotName: `${ORIGIN}-kvmbak-20261202t010000z`,
    snapshotSize: null,
    readPath: 'full',
    ...over,
  };
}

function before(base: { lv: string; thinId: number } | undefined, rawBytes = SIZE): ManifestDisk {
  return {
    target: 'vda',
    vg: VG,
    lv: ORIGIN,
    chunks: {
      file: 'disks/vda.chunks',
      listBytes: 100,
      listSha256: 'a'.repeat(64),
      rawBytes,
      rawSha256: 'b'.repeat(64),
      chunkSize: 4 * MiB,
      chunks: rawBytes / (4 * MiB),
      zeroChunks: 0,
      newChunks: 0,
      addedBytes: 0,
      read: 'full',
      chunksRead: rawBytes / (4 * MiB),
      ...(base !== undefined ? { base } : {}),
    },
  } as unknown as ManifestDisk;
}

describe('planThinDelta: thin delta only from the very base the previous set recorded', () => {
  it('the base is there as recorded: thin delta, from the previous set’s list', async () => {
    const p = disk();
    await planThinDelta(world('kvmbak,kvmbak-base').lvm, p, before({ lv: BASE, thinId: BASE_ID }), '/b/web/20261201T010000Z');
    expect(p.readPath).toBe('thin-delta');
    expect(p.readNote).toBeUndefined();
    expect(p.delta).toEqual({
      base: { vg: VG, lv: BASE, thinId: BASE_ID },
      previousList: '/b/web/20261201T010000Z/disks/vda.chunks',
      previousListSha256: 'a'.repeat(64),
    });
  });

  const cases: [string, () => Promise<PlannedDisk>, RegExp][] = [
    [
      'no base recorded',
      async () => {
        const p = disk();
        await planThinDelta(world('kvmbak,kvmbak-base').lvm, p, before(undefined), '/s');
        return p;
      },
      /the previous set kept no base snapshot of vg0\/web-root$/,
    ],
    [
      'the base is gone',
      async () => {
        const p = disk();
        await planThinDelta(world('kvmbak,kvmbak-base').lvm, p, before({ lv: 'web-root-kvmbak-other', thinId: BASE_ID }), '/s');
        return p;
      },
      /the base vg0\/web-root-kvmbak-other of the previous set is gone$/,
    ],
    [
      'an LV of that name without the base tag (a run snapshot, or someone else’s)',
      async () => {
        const p = disk();
        await planThinDelta(world('kvmbak,kvmbak-run-x').lvm, p, before({ lv: BASE, thinId: BASE_ID }), '/s');
        return p;
      },
      /is not a kvmbak base \(a thin snapshot tagged kvmbak-base\)$/,
    ],
    [
      'a base of another LV (the disk was restored onto a new LV)',
      async () => {
        const p = disk();
        await planThinDelta(world('kvmbak,kvmbak-base', 'web-old').lvm, p, before({ lv: BASE, thinId: BASE_ID }), '/s');
        return p;
      },
      /the base vg0\/web-root-kvmbak-20261201t010000z is not a snapshot of vg0\/web-root in pool thin-pool$/,
    ],
    [
      'another thin id (the name was reused)',
      async () => {
        const p = disk();
        await planThinDelta(world('kvmbak,kvmbak-base').lvm, p, before({ lv: BASE, thinId: BASE_ID + 7 }), '/s');
        return p;
      },
      new RegExp(`has thin id ${BASE_ID}, the previous set recorded ${BASE_ID + 7}$`),
    ],
    [
      'the disk was resized',
      async () => {
        const p = disk({ lvSize: 2 * SIZE });
        await planThinDelta(world('kvmbak,kvmbak-base').lvm, p, before({ lv: BASE, thinId: BASE_ID }), '/s');
        return p;
      },
      /the disk is 134217728 bytes now, the previous set's list 67108864$/,
    ],
    [
      'a base whose origin is gone (the disk was lost and restored onto a new LV)',
      async () => {
        const p = disk();
        await planThinDelta(world('kvmbak,kvmbak-base', '').lvm, p, before({ lv: BASE, thinId: BASE_ID }), '/s');
        return p;
      },
      /is not a snapshot of vg0\/web-root in pool thin-pool \(its origin is gone\)$/,
    ],
  ];
  for (const [name, plan, note] of cases) {
    it(`${name}: a full read, saying why`, async () => {
      const p = await plan();
      expect(p.readPath).toBe('full');
      expect(p.delta).toBeUndefined();
      expect(p.readNote).toMatch(/^vda: reading the whole disk: /);
      expect(p.readNote).toMatch(note);
    });
  }
});
