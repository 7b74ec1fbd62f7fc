import { mkdir, readdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  acquireLock,
  chunkStoreSummary,
  chunkStoreUsage,
  compareSetIds,
  createSet,
  formatSetId,
  isLockError,
  listSets,
  openJournal,
  parseSetId,
  pruneSets,
  type PruneProgress,
} from '../../../src/store/index.js';
import { buildSet, tempDir } from './helpers.js';

let dest: string;
beforeEach(async () => {
  dest = await tempDir();
});
afterEach(async () => {
  await rm(dest, { recursive: true, force: true });
});

const at = (iso: string): Date => new Date(iso);

describe('set ids', () => {
  it('format and parse UTC compact ISO basic times', () => {
    expect(formatSetId(at('2026-11-26T03:15:00.999Z'))).toBe('20261126T031500Z');
    expect(formatSetId(at('2026-11-26T04:15:00+01:00'), 2)).toBe('20261126T031500Z-2');
    expect(parseSetId('20261126T031500Z-12')).toEqual({ id: '20261126T031500Z-12', time: at('2026-11-26T03:15:00Z'), seq: 12 });
    for (const bad of [
      '20261126T031500',
      '20260231T000000Z',
      '20261126T246000Z',
      '20261126T031500Z-0',
      '20261126T031500Z-01',
      'x20261126T031500Z',
      '.lock',
    ]) {
      expect(parseSetId(bad)).toBeNull();
    }
    const ids = ['20261126T031500Z-10', '20261126T031500Z-2', '20261126T031500Z', '20251231T235959Z'].map((s) => parseSetId(s)!);
    expect(ids.sort(compareSetIds).map((p) => p.id)).toEqual(['20251231T235959Z', '20261126T031500Z', '20261126T031500Z-2', '20261126T031500Z-10']);
  });
});

describe('listSets', () => {
  it('lists complete, incomplete and unreadable sets sorted by domain then time', async () => {
    await buildSet(dest, 'web01', at('2026-11-26T03:15:00Z'));
    await buildSet(dest, 'web01', at('2026-11-25T03:15:00Z'), { mode: 'pause' });
    await buildSet(dest, 'db01', at('2026-11-26T01:00:00Z'), { commit: false });
    const newer = await createSet(dest, 'app', { now: at('2026-11-20T00:00:00Z') });
    await writeFile(join(newer.path, 'manifest.json'), JSON.stringify({ format: 'kvmbak/3' }));
    // Noise that is not a set.
    await mkdir(join(dest, 'lost+found'));
    await mkdir(join(dest, 'web01', 'not-a-set'));
    await writeFile(join(dest, 'web01', '20261127T000000Z'), 'a file named like a set');
    await writeFile(join(dest, 'README'), 'x');

    const sets = await listSets(dest);
    expect(sets.map((s) => `${s.domain}/${s.id}:${s.status}`)).toEqual([
      'app/20261120T000000Z:unreadable',
      'db01/20261126T010000Z:incomplete',
      'web01/20261125T031500Z:complete',
      'web01/20261126T031500Z:complete',
    ]);
    const [app, db, web25, web26] = sets;
    expect(app).toMatchObject({ complete: false, errorCode: 'KVMBAK_MANIFEST_NEWER' });
    expect(app.error).toContain('written by a newer kvmbak (format kvmbak/3)');
    expect(db).toMatchObject({ complete: false, errorCode: 'KVMBAK_MANIFEST_MISSING', path: join(dest, 'db01', '20261126T010000Z') });
    expect(db.error).toContain('incomplete backup: no manifest.json in');
    expect(db.mode).toBeUndefined();
    expect(db.bytesOnDisk).toBeGreaterThan(0);
    expect(web25).toMatchObject({ complete: true, mode: 'pause', disks: ['vda'], seq: 0 });
    expect(web26).toMatchObject({ complete: true, mode: 'save', disks: ['vda'], time: at('2026-11-26T03:15:00Z') });
    expect(web26.storedBytes).toBeGreaterThan(web25.storedBytes!); // the memory state counts
    expect(web26.bytesOnDisk).toBeGreaterThan(web26.storedBytes!); // + domain.xml, SHA256SUMS, manifest
    expect(web26.error).toBeUndefined();

    expect((await listSets(dest, 'web01')).map((s) => s.id)).toEqual(['20261125T031500Z', '20261126T031500Z']);
    expect(await listSets(dest, 'nothing-yet')).toEqual([]);
  });

  it('kvmbak/2 sets: logical size, bytes added to the store; the store against the sets (deduplication)', async () => {
    const first = await buildSet(dest, 'web01', at('2026-11-25T03:15:00Z'), { format: 'chunks' });
    const second = await buildSet(dest, 'web01', at('2026-11-26T03:15:00Z'), { format: 'chunks', mode: 'pause' });
    const image = await buildSet(dest, 'db01', at('2026-11-26T01:00:00Z'), { mode: 'pause' });
    await buildSet(dest, 'db01', at('2026-11-26T02:00:00Z'), { format: 'chunks', mode: 'pause', commit: false });
    const sets = await listSets(dest);
    const [img, , s1, s2] = sets;
    expect(sets.map((s) => `${s.domain}/${s.id}:${s.status}:${s.format ?? '-'}`)).toEqual([
      'db01/20261126T010000Z:complete:kvmbak/1',
      'db01/20261126T020000Z:incomplete:-',
      'web01/20261125T031500Z:complete:kvmbak/2',
      'web01/20261126T031500Z:complete:kvmbak/2',
    ]);
    // a kvmbak/1 set: what it stores is what it added
    const imageBytes = image.manifest.disks[0].image!.storedBytes;
    expect(img).toMatchObject({ storedBytes: imageBytes, logicalBytes: image.raw.length, addedBytes: imageBytes, chunkedBytes: 0 });
    // the first chunked set wrote its 4 chunks and its memory state; the second only its own chunk
    const m1 = first.manifest;
    const d1 = m1.disks[0].chunks!;
    const mem1 = m1.memory!;
    expect(mem1 !== null && 'chunks' in mem1).toBe(true);
    const memChunks = 'chunks' in mem1 ? mem1.chunks : undefined;
    expect(s1).toMatchObject({
      mode: 'save',
      disks: ['vda'],
      logicalBytes: first.raw.length + mem1.bytes,
      chunkedBytes: first.raw.length + mem1.bytes,
      addedBytes: d1.addedBytes + memChunks!.addedBytes,
      storedBytes: d1.listBytes + memChunks!.listBytes,
    });
    expect(d1.newChunks).toBe(4);
    const d2 = second.manifest.disks[0].chunks!;
    expect(d2.newChunks).toBe(1);
    expect(s2).toMatchObject({ logicalBytes: second.raw.length, addedBytes: d2.addedBytes, storedBytes: d2.listBytes });
    expect(s2.addedBytes!).toBeLessThan(s1.addedBytes!);

    const usage = (await chunkStoreUsage(dest))!;
    expect(usage.path).toBe(join(dest, '.chunks'));
    // 4 chunks of the first disk, its memory state, the second disk's own chunk, the incomplete set's own chunk
    expect(usage.chunks).toBe(7);
    const summary = (await chunkStoreSummary(dest))!;
    expect(summary).toMatchObject({ ...usage, sets: 2, logicalBytes: s1.chunkedBytes! + s2.chunkedBytes! });
    expect(summary.ratio).toBeCloseTo(summary.logicalBytes / usage.bytes, 10);
    expect(await chunkStoreSummary(dest, { sets })).toEqual(summary);
    // the store folder is not a domain
    expect(sets.some((s) => s.domain === '.chunks')).toBe(false);
  });

  it('needs an existing destination', async () => {
    await expect(listSets(join(dest, 'gone'))).rejects.toThrow(/backup destination .*gone does not exist/);
  });
});

describe('pruneSets', () => {
  it('deletes what retention removes, under the lock, and reports it', async () => {
    for (const day of ['20', '21', '22', '23', '24', '25', '26']) await buildSet(dest, 'web01', at(`2026-11-${day}T03:15:00Z`));
    await buildSet(dest, 'web01', at('2026-11-10T03:15:00Z'), { commit: false });
    await buildSet(dest, 'db01', at('2026-11-01T03:15:00Z'));
    const now = at('2026-11-26T12:00:00Z');

    const dry = await pruneSets(dest, undefined, { keepLast: 2 }, { dryRun: true, now });
    expect(dry.dryRun).toBe(true);
    expect(dry.domains.map((d) => [d.domain, d.keep.length, d.remove.length, d.deleted.length])).toEqual([
      ['db01', 1, 0, 0],
      ['web01', 2, 6, 0],
    ]);
    expect(dry.domains[1].freedBytes).toBeGreaterThan(0);
    expect((await listSets(dest)).length).toBe(9);

    const events: PruneProgress[] = [];
    const res = await pruneSets(dest, undefined, { keepLast: 2 }, { now, onProgress: (e) => events.push(e) });
    const web = res.domains.find((d) => d.domain === 'web01')!;
    // One progress event before each deletion, in order, with the set's size.
    expect(events.map((e) => [e.domain, e.path, e.index, e.count])).toEqual(web.deleted.map((p, i) => ['web01', p, i + 1, 6]));
    expect(events.reduce((n, e) => n + e.bytes, 0)).toBe(web.freedBytes);
    expect(web.deleted.map((p) => p.slice(-16))).toEqual([
      '20261110T031500Z',
      '20261120T031500Z',
      '20261121T031500Z',
      '20261122T031500Z',
      '20261123T031500Z',
      '20261124T031500Z',
    ]);
    expect(web.freedBytes).toBe(dry.domains[1].freedBytes);
    expect((await listSets(dest)).map((s) => `${s.domain}/${s.id}`)).toEqual([
      'db01/20261101T031500Z',
      'web01/20261125T031500Z',
      'web01/20261126T031500Z',
    ]);
    expect((await readdir(join(dest, 'web01'))).sort()).toEqual(['20261125T031500Z', '20261126T031500Z']); // lock released
  });

  it('a domain being backed up is skipped (all domains) or refused (named domain)', async () => {
    await buildSet(dest, 'web01', at('2026-11-20T03:15:00Z'));
    await buildSet(dest, 'web01', at('2026-11-26T03:15:00Z'));
    await buildSet(dest, 'db01', at('2026-11-20T03:15:00Z'));
    await buildSet(dest, 'db01', at('2026-11-26T03:15:00Z'));
    const lock = await acquireLock(dest, 'web01', 'backup');
    try {
      const res = await pruneSets(dest, undefined, { keepLast: 1 }, { now: at('2026-11-26T12:00:00Z') });
      const web = res.domains.find((d) => d.domain === 'web01')!;
      expect(web.error).toContain('domain web01 is being backed up by kvmbak pid');
      expect(web.deleted).toEqual([]);
      expect(res.domains.find((d) => d.domain === 'db01')!.deleted).toHaveLength(1);
      const e = await pruneSets(dest, 'web01', { keepLast: 1 }).catch((err: unknown) => err);
      expect(isLockError(e)).toBe(true);
      expect((await listSets(dest, 'web01')).length).toBe(2);
    } finally {
      await lock.release();
    }
  });

  it('keeps the partial set of an interrupted run with a journal', async () => {
    await buildSet(dest, 'web01', at('2026-11-26T03:15:00Z'));
    const { set } = await buildSet(dest, 'web01', at('2026-11-01T03:15:00Z'), { commit: false });
    await openJournal(set);
    const res = await pruneSets(dest, 'web01', { keepLast: 1 }, { now: at('2026-11-26T12:00:00Z') });
    expect(res.domains[0].deleted).toEqual([]);
    expect(res.domains[0].reasons[set.path]).toEqual(['has the journal of an interrupted run: run kvmbak recover first']);
  });

  it('does nothing for a domain without backups, and creates nothing', async () => {
    const res = await pruneSets(dest, 'web01', { keepLast: 1 });
    expect(res.domains).toEqual([{ domain: 'web01', keep: [], remove: [], reasons: {}, deleted: [], freedBytes: 0, orphanBases: [] }]);
    expect(await readdir(dest)).toEqual([]);
  });

  it('stops between deletions when aborted', async () => {
    await buildSet(dest, 'web01', at('2026-11-20T03:15:00Z'));
    await buildSet(dest, 'web01', at('2026-11-26T03:15:00Z'));
    const ac = new AbortController();
    ac.abort();
    await expect(pruneSets(dest, 'web01', { keepLast: 1 }, { signal: ac.signal })).rejects.toMatchObject({ code: 'ABORT_ERR' });
    expect((await listSets(dest)).length).toBe(2);
    expect(await readdir(join(dest, 'web01'))).not.toContain('.lock');
  });

  it('validates the rules first', async () => {
    await expect(pruneSets(dest, undefined, {})).rejects.toThrow('no retention rule');
  });
});
