import { readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import {
  type JournalDocument,
  type JournalStep,
  assessJournal,
  createSet,
  listSets,
  openJournal,
  processOwner,
  readJournals,
  reopenJournal,
  selectRetention,
} from '../../../src/store/index.js';
import { type Child, buildChildModules, removeChildModules, spawnChild, tempDir } from './helpers.js';

let dest: string;
const children: Child[] = [];
const NOW = new Date('2026-11-26T03:15:00Z');

beforeAll(async () => {
  await buildChildModules();
}, 60_000);
afterAll(async () => {
  await removeChildModules();
});
beforeEach(async () => {
  dest = await tempDir();
});
afterEach(async () => {
  for (const c of children.splice(0)) {
    c.proc.stdin.end();
    if (c.proc.exitCode === null && c.proc.signalCode === null) c.proc.kill('SIGKILL');
    await c.exited;
  }
  await rm(dest, { recursive: true, force: true });
});

const planned = (setPath: string): JournalStep => ({
  step: 'planned',
  domain: 'web01',
  uuid: '6695eb01-f6a4-8304-79aa-97f2502e193f',
  uri: 'qemu:///system',
  mode: 'save',
  stateBefore: 'running',
  setPath,
  snapshots: [
    { vg: 'vg0', lv: 'web01-root', name: 'web01-root_kvmbak' },
    { vg: 'vg0', lv: 'web01-data', name: 'web01-data_kvmbak' },
  ],
  runTag: 'kvmbak-run-20261126T031500Z',
});

describe('journal', () => {
  it('records every step atomically next to the set (0600) and reads back', async () => {
    const set = await createSet(dest, 'web01', { now: NOW });
    const j = await openJournal(set);
    expect(j.path).toBe(join(dest, 'web01', '.journal-20261126T031500Z.json'));
    const steps: JournalStep[] = [
      planned(set.path),
      { step: 'window-start', action: 'save', memoryFile: join(set.path, 'memory.state') },
      { step: 'saved', memoryFile: join(set.path, 'memory.state') },
      { step: 'snapshot-created', vg: 'vg0', lv: 'web01-root', name: 'web01-root_kvmbak' },
    ];
    for (const s of steps) await j.record(s);
    expect((await stat(j.path)).mode & 0o777).toBe(0o600);
    expect((await readdir(join(dest, 'web01'))).sort()).toEqual(['.journal-20261126T031500Z.json', '20261126T031500Z']);
    const doc = JSON.parse(await readFile(j.path, 'utf8')) as JournalDocument;
    expect(doc.format).toBe('kvmbak-journal/1');
    expect(doc.owner).toMatchObject({ pid: process.pid, bootId: processOwner().bootId });
    expect(doc.entries.map(({ at, ...rest }) => (expect(Date.parse(at)).not.toBeNaN(), rest))).toEqual(steps);

    const [rec] = await readJournals(dest);
    expect(rec).toMatchObject({ domain: 'web01', setId: set.id, path: j.path, ownerStatus: 'alive' });
    expect(rec.assessment).toMatchObject({ vm: 'held', memorySaved: true, lastStep: 'snapshot-created' });
    await j.remove();
    await j.remove();
    expect(await readJournals(dest)).toEqual([]);
    await expect(j.record({ step: 'resumed' })).rejects.toThrow('was removed');
  });

  it('keeps records in order when recorded without waiting', async () => {
    const set = await createSet(dest, 'web01', { now: NOW });
    const j = await openJournal(set);
    await Promise.all([
      j.record(planned(set.path)),
      j.record({ step: 'window-start', action: 'suspend', memoryFile: null }),
      j.record({ step: 'resumed' }),
    ]);
    const doc = JSON.parse(await readFile(j.path, 'utf8')) as JournalDocument;
    expect(doc.entries.map((e) => e.step)).toEqual(['planned', 'window-start', 'resumed']);
    expect(await readdir(join(dest, 'web01'))).toHaveLength(2); // no temporary files left
  });

  it('refuses a second journal for the same set', async () => {
    const set = await createSet(dest, 'web01', { now: NOW });
    await openJournal(set);
    await expect(openJournal(set)).rejects.toThrow(/a journal already exists for .*; run kvmbak recover/);
  });

  it('a run killed in the window leaves a journal recover can act on', async () => {
    const c = await spawnChild('journal', {
      dest,
      domain: 'web01',
      now: NOW.toISOString(),
      then: 'kill',
      steps: [
        planned(join(dest, 'web01', '20261126T031500Z')),
        { step: 'window-start', action: 'save', memoryFile: join(dest, 'web01', '20261126T031500Z', 'memory.state') },
      ],
    });
    children.push(c);
    expect((await c.next()).event).toBe('ready');
    const rec = await c.next();
    expect(rec.event).toBe('recorded');
    expect((await c.exited).signal).toBe('SIGKILL');

    const [j] = await readJournals(dest, 'web01');
    expect(j.ownerStatus).toBe('dead');
    expect(j.document?.owner.pid).toBe(c.proc.pid);
    expect(j.assessment).toEqual({
      lastStep: 'window-start',
      committed: false,
      failed: false,
      vm: 'held',
      windowAction: 'save',
      memoryFile: join(dest, 'web01', '20261126T031500Z', 'memory.state'),
      memorySaved: false,
      snapshots: [
        { vg: 'vg0', lv: 'web01-root', name: 'web01-root_kvmbak' },
        { vg: 'vg0', lv: 'web01-data', name: 'web01-data_kvmbak' },
      ],
      setPartial: true,
      archivedTargets: [],
      metadataReserved: [],
      mode: 'save',
      runTag: 'kvmbak-run-20261126T031500Z',
    });

    // The partial set is listed incomplete, with its journal; prune must not delete it even when old.
    const [info] = await listSets(dest);
    expect(info).toMatchObject({ status: 'incomplete', journal: j.path });
    const later = new Date(NOW.getTime() + 7 * 86_400_000);
    const sel = selectRetention([info], { keepLast: 1, now: later });
    expect(sel.keep).toEqual([info]);
    expect(sel.reasons[info.path]).toEqual(['has the journal of an interrupted run: run kvmbak recover first']);

    // recover takes the journal over and finishes it.
    const r = await reopenJournal(j.path);
    expect(r.document.owner.pid).toBe(process.pid);
    expect(r.document.previousOwners?.[0].pid).toBe(c.proc.pid);
    await r.record({ step: 'resumed' });
    await r.record({ step: 'snapshots-removed' });
    const [after] = await readJournals(dest);
    expect(after.assessment).toMatchObject({ vm: 'resumed', snapshots: [] });
    await r.remove();
    expect(await readJournals(dest)).toEqual([]);
  });

  it('reopenJournal refuses a run that is still alive', async () => {
    const set = await createSet(dest, 'web01', { now: NOW });
    const j = await openJournal(set);
    await expect(reopenJournal(j.path)).rejects.toThrow(
      `journal ${j.path} belongs to kvmbak pid ${process.pid}, which may still be running; wait for it to finish`,
    );
  });

  it('reports a damaged journal instead of failing', async () => {
    const set = await createSet(dest, 'web01', { now: NOW });
    const j = await openJournal(set);
    await writeFile(j.path, '{"format":"kvmbak-journal/1"');
    const [rec] = await readJournals(dest);
    expect(rec.error).toMatch(/^journal .* is not valid JSON/);
    expect(rec.ownerStatus).toBeNull();
    await writeFile(j.path, JSON.stringify({ ...j.document, entries: [{ step: 'teleported', at: NOW.toISOString() }] }));
    expect((await readJournals(dest))[0].error).toContain('entries[0] has an unknown step "teleported"');
    await writeFile(j.path, JSON.stringify({ ...j.document, entries: [{ step: 'planned', at: NOW.toISOString() }] }));
    expect((await readJournals(dest))[0].error).toContain('entries[0] (planned) is incomplete');
  });
});

describe('assessJournal', () => {
  const doc = (steps: JournalStep[]): JournalDocument => ({
    format: 'kvmbak-journal/1',
    operation: 'backup',
    domain: 'web01',
    setId: '20261126T031500Z',
    setPath: '/b/web01/20261126T031500Z',
    owner: processOwner(),
    entries: steps.map((s) => ({ ...s, at: NOW.toISOString() })),
  });

  it.each<[string, JournalStep[], Record<string, unknown>]>([
    ['nothing recorded', [], { lastStep: null, vm: 'untouched', snapshots: [], setPartial: true }],
    [
      'planned only',
      [planned('/s')],
      {
        vm: 'untouched',
        snapshots: [
          { vg: 'vg0', lv: 'web01-root', name: 'web01-root_kvmbak' },
          { vg: 'vg0', lv: 'web01-data', name: 'web01-data_kvmbak' },
        ],
      },
    ],
    ['offline window', [planned('/s'), { step: 'window-start', action: 'none', memoryFile: null }], { vm: 'untouched', windowAction: 'none' }],
    [
      'paused',
      [planned('/s'), { step: 'window-start', action: 'suspend', memoryFile: null }],
      { vm: 'held', windowAction: 'suspend', memorySaved: false },
    ],
    ['frozen then thawed', [planned('/s'), { step: 'window-start', action: 'freeze', memoryFile: null }, { step: 'resumed' }], { vm: 'resumed' }],
    [
      'archived one disk',
      [
        planned('/s'),
        { step: 'window-start', action: 'save', memoryFile: '/s/memory.state' },
        { step: 'saved', memoryFile: '/s/memory.state' },
        { step: 'resumed' },
        { step: 'archived', target: 'vda', file: 'disks/vda.img.gz' },
      ],
      { vm: 'resumed', memorySaved: true, archivedTargets: ['vda'], setPartial: true },
    ],
    [
      'snapshots removed, then failed',
      [planned('/s'), { step: 'snapshots-removed' }, { step: 'failed', message: 'disk full', code: 'ENOSPC' }],
      { snapshots: [], failed: true, setPartial: true, lastStep: 'failed' },
    ],
    ['committed', [planned('/s'), { step: 'resumed' }, { step: 'snapshots-removed' }, { step: 'committed' }], { committed: true, setPartial: false }],
    [
      // A thin snapshot kept as the next run's base: snapshots-removed is not recorded; until the
      // commit recover removes it with the run's snapshots, after it the set owns it.
      'a base kept, not committed',
      [planned('/s'), { step: 'resumed' }, { step: 'archived', target: 'vda', file: 'disks/vda.chunks' }],
      { committed: false, snapshots: expect.arrayContaining([{ vg: 'vg0', lv: 'web01-root', name: 'web01-root_kvmbak' }]) },
    ],
    [
      'a base kept, committed',
      [planned('/s'), { step: 'resumed' }, { step: 'archived', target: 'vda', file: 'disks/vda.chunks' }, { step: 'committed' }],
      { committed: true, setPartial: false, snapshots: [] },
    ],
    [
      'a thin pool metadata snapshot reserved, not released',
      [planned('/s'), { step: 'metadata-reserved', vg: 'vg0', pool: 'pool0' }],
      { metadataReserved: [{ vg: 'vg0', pool: 'pool0' }], lastStep: 'metadata-reserved' },
    ],
    [
      'a thin pool metadata snapshot reserved, then released; another still reserved',
      [
        planned('/s'),
        { step: 'metadata-reserved', vg: 'vg0', pool: 'pool0' },
        { step: 'metadata-released', vg: 'vg0', pool: 'pool0' },
        { step: 'metadata-reserved', vg: 'vg1', pool: 'pool1' },
      ],
      { metadataReserved: [{ vg: 'vg1', pool: 'pool1' }] },
    ],
    [
      'an unplanned snapshot is added',
      [planned('/s'), { step: 'snapshot-created', vg: 'vg1', lv: 'x', name: 'x_kvmbak' }],
      { snapshots: expect.arrayContaining([{ vg: 'vg1', lv: 'x', name: 'x_kvmbak' }]) },
    ],
  ])('%s', (_name, steps, expected) => {
    expect(assessJournal(doc(steps))).toMatchObject(expected);
  });
});
