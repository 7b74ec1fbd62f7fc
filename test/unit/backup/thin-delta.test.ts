/**
 * The thin_delta step of a backup (thinChangedChunks) and its undoing by `kvmbak recover`: the
 * pool's metadata snapshot is reserved (journaled first), thin_delta runs, and it is released in
 * a finally whatever happened; a run killed while holding it leaves a journal that makes recover
 * release it. lvm2, dmsetup and thin_delta answer with the lab captures (fake-thin-pool.ts).
 */
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import {
  type JournalStep,
  ThinDeltaError,
  createSet,
  currentBootId,
  openJournal,
  readJournals,
  recover,
  thinChangedChunks,
} from '../../../src/index.js';
import { rejection } from '../../support/rejection.js';
import { FakeThinPool, HELD_ROOT, thinInfo } from './fake-thin-pool.js';
import { MiB } from './fake-lvm.js';
import { type Env, setup } from './helpers.js';

let env: Env | undefined;
afterEach(async () => {
  await env?.cleanup();
  env = undefined;
});

const VG = 'vg0';
const POOL = 'thin-pool';
const BASE = 'web-root_kvmbak-base';
const CURRENT = 'web-root_kvmbak-new';
const DISK = 64 * MiB;

async function world(): Promise<{ e: Env; pool: FakeThinPool }> {
  env = await setup();
  return { e: env, pool: new FakeThinPool(env.fake, { vg: VG, pool: POOL, base: BASE, current: CURRENT }) };
}

async function journalFor(e: Env) {
  const set = await createSet(e.dest, 'web-01');
  return openJournal(set);
}

const steps = (entries: { step: string }[]): unknown[] =>
  entries.map((x) => {
    const { at: _at, ...rest } = x as { at?: string; step: string };
    return rest;
  });

describe('thinChangedChunks', () => {
  it('reserves (journaled first), runs thin_delta, releases (journaled): the captured delta’s chunks', async () => {
    const { e, pool } = await world();
    const journal = await journalFor(e);
    const r = await thinChangedChunks({ lvm: pool.lvm, journal, base: { vg: VG, lv: BASE }, current: `${VG}/${CURRENT}`, diskSize: DISK });
    expect(r).toEqual({ changed: thinInfo.changedChunks, vg: VG, pool: POOL, baseThinId: 2, currentThinId: 1, poolBlockBytes: 64 * 1024 });
    expect(pool.held).toBe(false);
    expect(pool.calls.map((c) => c.slice(0, 2).join(' '))).toEqual(['lvs --reportformat', 'dmsetup message', 'thin_delta -m', 'dmsetup message']);
    expect(pool.calls[1]).toEqual(['dmsetup', 'message', 'vg0-thin--pool-tpool', '0', 'reserve_metadata_snap']);
    expect(pool.calls[2]).toEqual(['thin_delta', '-m', '--thin1', '2', '--thin2', '1', '/dev/mapper/vg0-thin--pool_tmeta']);
    expect(pool.calls[3]).toEqual(['dmsetup', 'message', 'vg0-thin--pool-tpool', '0', 'release_metadata_snap']);
    expect(steps(journal.document.entries)).toEqual([
      { step: 'metadata-reserved', vg: VG, pool: POOL },
      { step: 'metadata-released', vg: VG, pool: POOL },
    ]);
    await journal.remove();
  });

  it('the journal says reserved before the reserve runs', async () => {
    const { e, pool } = await world();
    const journal = await journalFor(e);
    let seen: unknown[] = [];
    pool.during('dmsetup', () => void (seen = steps(journal.document.entries)));
    await thinChangedChunks({ lvm: pool.lvm, journal, base: `${VG}/${BASE}`, current: `${VG}/${CURRENT}`, diskSize: DISK });
    expect(seen).toEqual([{ step: 'metadata-reserved', vg: VG, pool: POOL }]);
    await journal.remove();
  });

  it.each([
    ['no metadata snapshot', 'delta-nosnap', 'no current metadata snap'],
    ['an unknown thin id', 'delta-unknown-id', 'Unable to find mapping tree for snap2 (999)'],
  ])('thin_delta fails (%s): ThinDeltaError, and the metadata snapshot is released all the same', async (_what, name, words) => {
    const { e, pool } = await world();
    const journal = await journalFor(e);
    pool.failNext('thin_delta', '-m', name);
    const err = await rejection(thinChangedChunks({ lvm: pool.lvm, journal, base: `${VG}/${BASE}`, current: `${VG}/${CURRENT}`, diskSize: DISK }));
    expect(err).toBeInstanceOf(ThinDeltaError);
    expect(err).toMatchObject({
      code: 'KVMBAK_THIN_DELTA_FAILED',
      metadataHeld: false,
      message: `thin_delta on thin pool ${VG}/${POOL} failed: thin_delta failed (exit code 1): ${words}`,
    });
    expect(pool.held).toBe(false);
    expect(pool.calls.at(-1)).toEqual(['dmsetup', 'message', 'vg0-thin--pool-tpool', '0', 'release_metadata_snap']);
    expect(steps(journal.document.entries).map((s) => (s as { step: string }).step)).toEqual(['metadata-reserved', 'metadata-released']);
    await journal.remove();
  });

  it('aborted during thin_delta: AbortError, released', async () => {
    const { e, pool } = await world();
    const journal = await journalFor(e);
    const ac = new AbortController();
    pool.during('thin_delta', () => ac.abort());
    const err = await rejection(
      thinChangedChunks({ lvm: pool.lvm, journal, base: `${VG}/${BASE}`, current: `${VG}/${CURRENT}`, diskSize: DISK, signal: ac.signal }),
    );
    expect(err).toMatchObject({ name: 'AbortError' });
    expect(pool.held).toBe(false);
    expect(steps(journal.document.entries).map((s) => (s as { step: string }).step)).toEqual(['metadata-reserved', 'metadata-released']);
    await journal.remove();
  });

  it('someone else holds the metadata snapshot: ThinDeltaError, and theirs is NOT released', async () => {
    const { e, pool } = await world();
    const journal = await journalFor(e);
    pool.held = true;
    const err = await rejection(thinChangedChunks({ lvm: pool.lvm, journal, base: `${VG}/${BASE}`, current: `${VG}/${CURRENT}`, diskSize: DISK }));
    expect(err).toMatchObject({ code: 'KVMBAK_THIN_DELTA_FAILED', metadataHeld: false, message: expect.stringContaining('is already reserved') });
    expect(pool.held).toBe(true);
    expect(pool.calls.filter((c) => c.includes('release_metadata_snap'))).toEqual([]);
    await journal.remove();
  });

  it('the release fails: the error says the snapshot is held and the journal keeps it reserved for recover', async () => {
    const { e, pool } = await world();
    const journal = await journalFor(e);
    pool.failNext('dmsetup', 'release_metadata_snap', 'release-again');
    const err = await rejection(thinChangedChunks({ lvm: pool.lvm, journal, base: `${VG}/${BASE}`, current: `${VG}/${CURRENT}`, diskSize: DISK }));
    expect(err).toMatchObject({
      code: 'KVMBAK_THIN_DELTA_FAILED',
      metadataHeld: true,
      message: `the metadata snapshot of thin pool ${VG}/${POOL} could not be released (dmsetup failed (exit code 1): device-mapper: message ioctl on vg0-thin--pool-tpool  failed: Invalid argument): kvmbak recover releases it`,
    });
    expect(pool.held).toBe(true);
    expect(steps(journal.document.entries)).toEqual([{ step: 'metadata-reserved', vg: VG, pool: POOL }]);
    await journal.remove();
  });

  it('a base that is not a thin volume of the pool, or a delta beyond the disk: ThinDeltaError, nothing reserved', async () => {
    const { e, pool } = await world();
    const journal = await journalFor(e);
    const missing = await rejection(thinChangedChunks({ lvm: pool.lvm, journal, base: `${VG}/gone`, current: `${VG}/${CURRENT}`, diskSize: DISK }));
    expect(missing).toMatchObject({
      code: 'KVMBAK_THIN_DELTA_FAILED',
      message: `cannot compare ${VG}/gone with ${VG}/${CURRENT}: Logical volume ${VG}/gone does not exist: check the name (lvs ${VG} lists its volumes)`,
    });
    expect(pool.calls.filter((c) => c[0] !== 'lvs')).toEqual([]);
    expect(journal.document.entries).toEqual([]);
    // The captured delta changes chunk 12: a 32 MiB disk cannot be the disk it describes.
    const small = await rejection(
      thinChangedChunks({ lvm: pool.lvm, journal, base: `${VG}/${BASE}`, current: `${VG}/${CURRENT}`, diskSize: 32 * MiB }),
    );
    expect(small).toMatchObject({ code: 'KVMBAK_THIN_DELTA_FAILED', message: expect.stringContaining('beyond the 33554432-byte disk') });
    expect(pool.held).toBe(false);
    await journal.remove();
  });
});

/** A pid that ran and is gone. */
function deadPid(): number {
  return spawnSync(process.execPath, ['-e', '']).pid!;
}

/** The journal a kvmbak killed during the thin_delta step leaves (owner: a dead process). */
async function killedDuringThinDelta(e: Env, after: JournalStep[]): Promise<{ journal: string; setPath: string }> {
  const id = '20260101T000000Z';
  const setPath = join(e.dest, 'web-01', id);
  await mkdir(join(setPath, 'disks'), { recursive: true, mode: 0o700 });
  const at = new Date('2026-01-01T00:00:01Z').toISOString();
  const planned: JournalStep = {
    step: 'planned',
    domain: 'web-01',
    uuid: '6695eb01-f6a4-8304-79aa-97f2502e193f',
    uri: e.uri,
    mode: 'pause',
    stateBefore: 'running',
    setPath,
    snapshots: [],
    runTag: `kvmbak-run-${id}`,
  };
  const journal = join(e.dest, 'web-01', `.journal-${id}.json`);
  const doc = {
    format: 'kvmbak-journal/1',
    operation: 'backup',
    domain: 'web-01',
    setId: id,
    setPath,
    owner: { pid: deadPid(), host: hostname(), bootId: currentBootId(), pidStart: 1, startedAt: at },
    entries: [planned, { step: 'window-start', action: 'suspend', memoryFile: null }, { step: 'resumed' }, ...after].map((s) => ({ ...s, at })),
  };
  await writeFile(journal, `${JSON.stringify(doc, null, 2)}\n`, { mode: 0o600 });
  return { journal, setPath };
}

describe('recover after a kill -9 in the thin_delta step', () => {
  it('the pool still shows a held metadata root: recover releases it, says so, and finishes the run', async () => {
    const { e, pool } = await world();
    const k = await killedDuringThinDelta(e, [{ step: 'metadata-reserved', vg: VG, pool: POOL }]);
    pool.held = true;
    const r = await recover({ dest: e.dest }, { hypervisor: e.hv, lvm: pool.lvm });
    expect(r.errors).toEqual([]);
    expect(r.runs[0]!.actions).toEqual([
      `released the metadata snapshot of thin pool ${VG}/${POOL} (held root ${HELD_ROOT})`,
      `deleted the partial set ${k.setPath}`,
    ]);
    expect(pool.held).toBe(false);
    expect(pool.calls.map((c) => c.join(' '))).toEqual([
      'dmsetup status vg0-thin--pool-tpool',
      'dmsetup message vg0-thin--pool-tpool 0 release_metadata_snap',
    ]);
    expect(existsSync(k.journal)).toBe(false);
  });

  it('killed before the reserve took effect (nothing held): nothing is released, the run is finished', async () => {
    const { e, pool } = await world();
    const k = await killedDuringThinDelta(e, [{ step: 'metadata-reserved', vg: VG, pool: POOL }]);
    const r = await recover({ dest: e.dest }, { hypervisor: e.hv, lvm: pool.lvm });
    expect(r.errors).toEqual([]);
    expect(r.runs[0]!.actions).toEqual([`deleted the partial set ${k.setPath}`]);
    expect(pool.calls.map((c) => c.join(' '))).toEqual(['dmsetup status vg0-thin--pool-tpool']);
    expect(existsSync(k.journal)).toBe(false);
  });

  it('released before the kill: the pool is not even asked', async () => {
    const { e, pool } = await world();
    await killedDuringThinDelta(e, [
      { step: 'metadata-reserved', vg: VG, pool: POOL },
      { step: 'metadata-released', vg: VG, pool: POOL },
    ]);
    pool.held = true; // someone else's: must stay
    const r = await recover({ dest: e.dest }, { hypervisor: e.hv, lvm: pool.lvm });
    expect(r.errors).toEqual([]);
    expect(pool.calls).toEqual([]);
    expect(pool.held).toBe(true);
  });

  it('the release fails: an error naming the pool, and the journal is kept for the next recover', async () => {
    const { e, pool } = await world();
    const k = await killedDuringThinDelta(e, [{ step: 'metadata-reserved', vg: VG, pool: POOL }]);
    pool.held = true;
    pool.failNext('dmsetup', 'release_metadata_snap', 'release-again');
    const r = await recover({ dest: e.dest }, { hypervisor: e.hv, lvm: pool.lvm });
    expect(r.errors).toEqual([
      expect.stringContaining(
        `could not release the metadata snapshot of thin pool ${VG}/${POOL}: dmsetup failed (exit code 1): device-mapper: message ioctl`,
      ),
    ]);
    expect(existsSync(k.journal)).toBe(true);
    const [left] = await readJournals(e.dest, 'web-01');
    expect(left!.assessment!.metadataReserved).toEqual([{ vg: VG, pool: POOL }]);
    // The next recover (another process: this one took the journal over, and exits) releases it.
    const doc = JSON.parse(await readFile(k.journal, 'utf8')) as { owner: { pid: number } };
    doc.owner.pid = deadPid();
    await writeFile(k.journal, JSON.stringify(doc));
    const again = await recover({ dest: e.dest }, { hypervisor: e.hv, lvm: pool.lvm });
    expect(again.errors, JSON.stringify(again)).toEqual([]);
    expect(again.runs[0]!.actions[0]).toBe(`released the metadata snapshot of thin pool ${VG}/${POOL} (held root ${HELD_ROOT})`);
    expect(pool.held).toBe(false);
    expect(existsSync(k.journal)).toBe(false);
  });
});
