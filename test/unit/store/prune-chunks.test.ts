/**
 * prune on a destination with a chunk store: the chunks only the removed sets used are collected,
 * every chunk of a remaining set (complete or not) stays and its disk reads back, a running writer
 * makes the collection remove nothing, a damaged list stops it, and a collection killed with -9 (a
 * real child process) leaves every remaining set complete and is finished by the next prune.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, readFile, readdir, rm, stat, truncate, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ChunkStore, chunkCount, chunkIdAt, readChunkList, readDiskFromStore } from '../../../src/chunks/index.js';
import {
  type BackupSet,
  chunkStorePath,
  chunkStoreSummary,
  chunkStoreUsage,
  collectDestinationGarbage,
  listSets,
  pruneSets,
  setChunkLists,
} from '../../../src/store/index.js';
import { buildSet, removeChildModules, sha256, spawnChild, taggedDisk, tempDir } from './helpers.js';

let dest: string;
beforeEach(async () => {
  dest = await tempDir('kvmbak-prune-chunks-');
});
afterEach(async () => {
  await rm(dest, { recursive: true, force: true });
});
afterAll(async () => {
  await removeChildModules();
});

const at = (iso: string): Date => new Date(iso);
const NOW = at('2026-11-26T12:00:00Z');

/** The ids a set's lists reference. */
async function idsOf(set: BackupSet): Promise<Set<string>> {
  const ids = new Set<string>();
  for (const file of ['disks/vda.chunks', 'memory.chunks']) {
    const list = await readChunkList(join(set.path, file)).catch(() => null);
    if (list) for (let i = 0; i < chunkCount(list); i++) ids.add(chunkIdAt(list, i));
  }
  return ids;
}

/** Every chunk id in the store. */
async function storeIds(): Promise<Set<string>> {
  const root = chunkStorePath(dest);
  const out = new Set<string>();
  for (const d of await readdir(root)) if (/^[0-9a-f]{4}$/.test(d)) for (const f of await readdir(join(root, d))) if (!f.startsWith('.')) out.add(f);
  return out;
}

/**
 * Dates every chunk file an hour back, as if the sets were written then: the collection keeps any
 * chunk used in the second it starts in (its mark time is whole seconds), and these tests write
 * their sets just before they prune.
 */
async function ageStore(): Promise<void> {
  const root = chunkStorePath(dest);
  const t = new Date(Date.now() - 3600_000);
  for (const d of await readdir(root))
    if (/^[0-9a-f]{4}$/.test(d)) for (const f of await readdir(join(root, d))) await utimes(join(root, d, f), t, t);
}

/** The set's disk rebuilt from the store, checked against its list's sha256. */
async function readBack(set: BackupSet): Promise<Buffer> {
  const store = await ChunkStore.open(chunkStorePath(dest));
  const out = join(dest, `readback-${set.id}`);
  try {
    await readDiskFromStore(await readChunkList(join(set.path, 'disks/vda.chunks')), store, out);
    return await readFile(out);
  } finally {
    await store.close();
    await rm(out, { force: true });
  }
}

describe('prune collects the chunk store', () => {
  it('removes the chunks only the pruned sets used; the remaining sets keep all theirs and read back', async () => {
    const old = await buildSet(dest, 'web01', at('2026-11-24T03:00:00Z'), { format: 'chunks' });
    const mid = await buildSet(dest, 'web01', at('2026-11-25T03:00:00Z'), { format: 'chunks', mode: 'pause' });
    const keep = await buildSet(dest, 'web01', at('2026-11-26T03:00:00Z'), { format: 'chunks' });
    const other = await buildSet(dest, 'db01', at('2026-11-20T03:00:00Z'), { format: 'chunks', disk: taggedDisk(['shared-1', 'db']) });
    const oldIds = await idsOf(old.set);
    const keepIds = await idsOf(keep.set);
    const otherIds = await idsOf(other.set);
    const only = new Set([...oldIds, ...(await idsOf(mid.set))].filter((id) => !keepIds.has(id) && !otherIds.has(id)));
    expect(only.size).toBe(3); // old's disk chunk and memory state, mid's disk chunk; the shared and zero chunks stay
    let onlyBytes = 0;
    for (const id of only) onlyBytes += (await stat(join(chunkStorePath(dest), id.slice(0, 4), id))).size;

    await ageStore();
    const dry = await pruneSets(dest, 'web01', { keepLast: 1 }, { dryRun: true, now: NOW });
    // read-only: what only the sets to remove use (2 lists each of old, 1 of mid; 2 of keep, 2 of db01)
    expect(dry.gc).toEqual({ status: 'estimated', store: chunkStorePath(dest), chunksRemoved: 3, bytesFreed: onlyBytes, listsRead: 7 });
    expect(await storeIds()).toEqual(new Set([...oldIds, ...(await idsOf(mid.set)), ...keepIds, ...otherIds]));

    const r = await pruneSets(dest, 'web01', { keepLast: 1 }, { now: NOW });
    expect(r.domains[0].deleted).toEqual([old.set.path, mid.set.path]);
    expect(r.gc).toMatchObject({ status: 'collected', chunksRemoved: 3, bytesFreed: onlyBytes, missingCount: 0, missing: [], writers: [] });
    // the db01 set is not pruned (another domain) but its lists count: 2 lists of keep, 2 of db01
    expect(r.gc).toMatchObject({ listsRead: 4 });
    const left = await storeIds();
    for (const id of only) expect(left.has(id)).toBe(false);
    expect(left).toEqual(new Set([...keepIds, ...otherIds]));
    expect(sha256(await readBack(keep.set))).toBe(sha256(keep.raw));
    expect(sha256(await readBack(other.set))).toBe(sha256(other.raw));

    // nothing more to collect
    const again = await pruneSets(dest, undefined, { keepLast: 1 }, { now: NOW });
    expect(again.gc).toMatchObject({ status: 'collected', chunksRemoved: 0, chunksKept: left.size });
  }, 60_000);

  it('the chunks of incomplete and unreadable sets stay', async () => {
    await buildSet(dest, 'web01', at('2026-11-24T03:00:00Z'), { format: 'chunks', mode: 'pause' });
    const kept = await buildSet(dest, 'web01', at('2026-11-26T03:00:00Z'), { format: 'chunks', mode: 'pause' });
    // a backup that is running (less than a day old, no manifest yet) and a set whose manifest is damaged
    const running = await buildSet(dest, 'web01', at('2026-11-26T11:00:00Z'), { format: 'chunks', mode: 'pause', commit: false });
    const damaged = await buildSet(dest, 'db01', at('2026-11-26T01:00:00Z'), { format: 'chunks', mode: 'pause' });
    await writeFile(join(damaged.set.path, 'manifest.json'), '{ damaged');
    const lists = [];
    for await (const l of setChunkLists(dest)) lists.push(`${l.set.slice(dest.length + 1)}/${l.file}:${l.named}`);
    await ageStore();
    expect(lists).toEqual([
      `db01/${damaged.set.id}/disks/vda.chunks:false`,
      `web01/20261124T030000Z/disks/vda.chunks:true`,
      `web01/${kept.set.id}/disks/vda.chunks:true`,
      `web01/${running.set.id}/disks/vda.chunks:false`,
    ]);
    const r = await pruneSets(dest, undefined, { keepLast: 1 }, { now: NOW });
    expect(r.domains.find((d) => d.domain === 'web01')!.deleted).toHaveLength(1);
    expect(r.gc).toMatchObject({ status: 'collected', chunksRemoved: 1, listsRead: 3 });
    const left = await storeIds();
    for (const s of [kept, running, damaged]) for (const id of await idsOf(s.set)) expect(left.has(id)).toBe(true);
  }, 60_000);

  it('removes nothing while a backup writes into the store (busy), and collects at the next prune', async () => {
    const old = await buildSet(dest, 'web01', at('2026-11-24T03:00:00Z'), { format: 'chunks', mode: 'pause' });
    await buildSet(dest, 'web01', at('2026-11-26T03:00:00Z'), { format: 'chunks', mode: 'pause' });
    await ageStore();
    const before = await storeIds();
    const writer = await ChunkStore.open(chunkStorePath(dest));
    await writer.beginWriting();
    let r;
    try {
      r = await pruneSets(dest, 'web01', { keepLast: 1 }, { now: NOW });
    } finally {
      await writer.close();
    }
    expect(r.domains[0].deleted).toEqual([old.set.path]);
    expect(r.gc).toMatchObject({ status: 'busy', chunksRemoved: 0, bytesFreed: 0 });
    expect(r.gc?.status === 'busy' && r.gc.writers.map((w) => [w.pid, w.status])).toEqual([[process.pid, 'alive']]);
    expect(await storeIds()).toEqual(before);
    const next = await pruneSets(dest, 'web01', { keepLast: 1 }, { now: NOW });
    expect(next.gc).toMatchObject({ status: 'collected', chunksRemoved: 1 });
  }, 60_000);

  it('a damaged chunk list of a remaining set stops the collection before anything is removed', async () => {
    await buildSet(dest, 'web01', at('2026-11-24T03:00:00Z'), { format: 'chunks', mode: 'pause' });
    const kept = await buildSet(dest, 'web01', at('2026-11-26T03:00:00Z'), { format: 'chunks', mode: 'pause' });
    const list = join(kept.set.path, 'disks/vda.chunks');
    await truncate(list, (await stat(list)).size - 40);
    await ageStore();
    const before = await storeIds();
    const r = await pruneSets(dest, 'web01', { keepLast: 1 }, { now: NOW });
    expect(r.domains[0].deleted).toHaveLength(1);
    expect(r.gc).toMatchObject({ status: 'failed', errorCode: 'KVMBAK_CHUNK_LIST' });
    const error = r.gc?.status === 'failed' ? r.gc.error : '';
    expect(error).toContain(`backup set ${kept.set.path}: chunk list ${list}, line`);
    expect(error).toContain('the list is truncated');
    expect(error).toContain('the chunk store was not collected (nothing removed)');
    expect(await storeIds()).toEqual(before);
    await expect(collectDestinationGarbage(dest)).rejects.toMatchObject({ code: 'KVMBAK_CHUNK_LIST', path: list });

    // a list the manifest names that is gone stops it too
    await rm(list);
    await expect(collectDestinationGarbage(dest)).rejects.toThrow(`backup set ${kept.set.path}: chunk list ${list} does not exist`);
    expect(await storeIds()).toEqual(before);
  }, 60_000);

  it('a destination without a chunk store: no collection, and none created', async () => {
    await buildSet(dest, 'web01', at('2026-11-24T03:00:00Z'), { mode: 'pause' });
    await buildSet(dest, 'web01', at('2026-11-26T03:00:00Z'), { mode: 'pause' });
    const r = await pruneSets(dest, 'web01', { keepLast: 1 }, { now: NOW });
    expect(r.domains[0].deleted).toHaveLength(1);
    expect(r.gc).toBeNull();
    expect(await readdir(dest)).toEqual(['web01']);
    expect(await collectDestinationGarbage(dest)).toBeNull();
    expect(await chunkStoreUsage(dest)).toBeNull();
    expect(await chunkStoreSummary(dest)).toBeNull();
  });

  it.each(['mark', 'sweep'] as const)(
    'kill -9 of a collection in its %s phase: every remaining set stays complete, the next prune finishes',
    async (killIn) => {
      await buildSet(dest, 'web01', at('2026-11-24T03:00:00Z'), { format: 'chunks', mode: 'pause' });
      const a = await buildSet(dest, 'web01', at('2026-11-25T03:00:00Z'), { format: 'chunks', mode: 'pause' });
      const b = await buildSet(dest, 'web01', at('2026-11-26T03:00:00Z'), { format: 'chunks' });
      const c = await buildSet(dest, 'db01', at('2026-11-26T03:00:00Z'), { format: 'chunks', disk: taggedDisk(['db', 'shared-2']) });
      // garbage spread over some 600 folders, so the sweep reports progress (every 256 folders) midway
      const garbage: string[] = [];
      for (let i = 0; i < 600; i++) {
        const id = sha256(randomBytes(16));
        await mkdir(join(chunkStorePath(dest), id.slice(0, 4)), { recursive: true, mode: 0o700 });
        await writeFile(join(chunkStorePath(dest), id.slice(0, 4), id), 'not referenced', { mode: 0o600 });
        garbage.push(id);
      }
      await pruneSets(dest, 'web01', { keepLast: 2 }, { now: NOW, collectGarbage: false });
      await ageStore();
      const remaining = [a, b, c];
      const needed = new Set<string>();
      for (const s of remaining) for (const id of await idsOf(s.set)) needed.add(id);

      const child = await spawnChild('gc', { dest, killIn });
      expect(await child.next()).toMatchObject({ event: 'ready' });
      const dying = await child.next();
      expect(dying).toMatchObject({ event: 'dying', progress: { phase: killIn } });
      expect(await child.exited).toEqual({ code: null, signal: 'SIGKILL' });
      const mid = await storeIds();
      for (const id of needed) expect(mid.has(id)).toBe(true);
      const removedBeforeKill = garbage.filter((id) => !mid.has(id)).length;
      if (killIn === 'sweep') expect(removedBeforeKill).toBeGreaterThan(0);
      else expect(removedBeforeKill).toBe(0);
      expect(removedBeforeKill).toBeLessThan(garbage.length + 1);

      // the killed collection's presence file is stale: the next prune judges it so and finishes
      const r = await pruneSets(dest, undefined, { keepLast: 2 }, { now: NOW });
      expect(r.gc).toMatchObject({ status: 'collected', missingCount: 0 });
      const left = await storeIds();
      expect(left).toEqual(needed);
      for (const s of remaining) expect(sha256(await readBack(s.set))).toBe(sha256(s.raw));
      expect((await listSets(dest)).map((s) => s.status)).toEqual(['complete', 'complete', 'complete']);
    },
    60_000,
  );
});
