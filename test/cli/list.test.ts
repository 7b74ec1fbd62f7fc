import { mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openJournal, parseSetPath } from '../../src/store/index.js';
import { buildSet, tempDir } from '../unit/store/helpers.js';
import { ensureBuilt, kvmbak } from './helpers.js';

let dest: string;
beforeAll(async () => {
  ensureBuilt();
  dest = await tempDir('kvmbak-cli-list-');
  await buildSet(dest, 'web01', new Date('2026-11-25T03:15:00Z'), { mode: 'pause' });
  await buildSet(dest, 'web01', new Date('2026-11-26T03:15:00Z'));
  await buildSet(dest, 'db01', new Date('2026-11-26T01:00:00Z'), { commit: false });
}, 120_000);
afterAll(async () => {
  if (dest) await rm(dest, { recursive: true, force: true });
});

describe('kvmbak list', () => {
  it('one line per set: domain, time, mode, disks, size, logical size, bytes added, status', async () => {
    const r = await kvmbak(['list', dest]);
    expect(r.code).toBe(0);
    expect(r.stderr).toBe('');
    const lines = r.stdout.trimEnd().split('\n');
    expect(lines[0]).toMatch(/^DOMAIN +SET +TIME +MODE +DISKS +SIZE +LOGICAL +ADDED +STATUS$/);
    expect(lines.slice(1).map((l) => l.trim().split(/ {2,}/))).toEqual([
      ['db01', '20261126T010000Z', '2026-11-26 01:00:00Z', '-', '-', expect.stringMatching(/ KiB$/), '-', '-', 'incomplete'],
      [
        'web01',
        '20261125T031500Z',
        '2026-11-25 03:15:00Z',
        'pause',
        'vda',
        expect.stringMatching(/ KiB$/),
        '192 KiB',
        expect.stringMatching(/ KiB$/),
        'complete',
      ],
      [
        'web01',
        '20261126T031500Z',
        '2026-11-26 03:15:00Z',
        'save',
        'vda',
        expect.stringMatching(/ KiB$/),
        expect.stringMatching(/ KiB$/),
        expect.stringMatching(/ KiB$/),
        'complete',
      ],
    ]);
  });

  it('a destination with a chunk store: what each set added, and the store against the sets (also in --json)', async () => {
    const other = await tempDir('kvmbak-cli-list-chunks-');
    try {
      await buildSet(other, 'web01', new Date('2026-11-25T03:15:00Z'), { format: 'chunks', mode: 'pause' });
      await buildSet(other, 'web01', new Date('2026-11-26T03:15:00Z'), { format: 'chunks', mode: 'pause' });
      await buildSet(other, 'db01', new Date('2026-11-26T01:00:00Z'), { mode: 'pause' });
      const r = await kvmbak(['list', other]);
      expect(r.code).toBe(0);
      expect(r.stderr).toBe('');
      const lines = r.stdout.trimEnd().split('\n');
      expect(lines.slice(1, 4).map((l) => l.trim().split(/ {2,}/).slice(5))).toEqual([
        [expect.stringMatching(/ KiB$/), '192 KiB', expect.stringMatching(/ KiB$/), 'complete'],
        // 4 chunks of 4 MiB; the first set added 3 (one is all zeroes, stored once and small), the second 1
        [expect.stringMatching(/^\d+ B$/), '16.0 MiB', expect.stringMatching(/ KiB$/), 'complete'],
        [expect.stringMatching(/^\d+ B$/), '16.0 MiB', expect.stringMatching(/ (B|KiB)$/), 'complete'],
      ]);
      expect(lines[4]).toMatch(
        new RegExp(`^chunk store ${join(other, '.chunks')}: .+ in 5 chunks for 32.0 MiB of data in 2 sets, deduplication \\d+\\.\\dx$`),
      );
      expect(lines).toHaveLength(5);

      const j = await kvmbak(['list', other, 'web01', '--json']);
      expect(j.code).toBe(0);
      const doc = JSON.parse(j.stdout);
      expect(doc.sets.map((s: { format: string; logicalBytes: number }) => [s.format, s.logicalBytes])).toEqual([
        ['kvmbak/2', 16 * 1024 * 1024],
        ['kvmbak/2', 16 * 1024 * 1024],
      ]);
      expect(doc.sets[1].addedBytes).toBeLessThan(doc.sets[0].addedBytes);
      // the store is the destination's, whatever domain is listed
      expect(doc.store).toMatchObject({ path: join(other, '.chunks'), chunks: 5, sets: 2, logicalBytes: 32 * 1024 * 1024 });
      expect(doc.store.ratio).toBeCloseTo(doc.store.logicalBytes / doc.store.bytes, 6);
    } finally {
      await rm(other, { recursive: true, force: true });
    }
  });

  it('DOMAIN narrows it; --json gives the sets', async () => {
    const r = await kvmbak(['list', dest, 'web01', '--json']);
    expect(r.code).toBe(0);
    const doc = JSON.parse(r.stdout);
    expect(doc).toMatchObject({ ok: true, command: 'list', dest, store: null });
    expect(doc.sets.map((s: { id: string; status: string; mode: string; time: string }) => [s.id, s.status, s.mode, s.time])).toEqual([
      ['20261125T031500Z', 'complete', 'pause', '2026-11-25T03:15:00.000Z'],
      ['20261126T031500Z', 'complete', 'save', '2026-11-26T03:15:00.000Z'],
    ]);
    expect(doc.sets[1].path).toBe(join(dest, 'web01', '20261126T031500Z'));
    const none = await kvmbak(['list', dest, 'nothing-here']);
    expect(none).toMatchObject({ code: 0, stdout: `no backup sets in ${dest} for nothing-here\n` });
  });

  it('an unreadable set is reported on stderr and the others are listed (exit 0); a live run\'s set is "in progress"', async () => {
    const other = await tempDir('kvmbak-cli-list-bad-');
    try {
      const bad = await buildSet(other, 'web01', new Date('2026-11-25T03:15:00Z'));
      await buildSet(other, 'web01', new Date('2026-11-26T03:15:00Z'));
      const running = await buildSet(other, 'db01', new Date('2026-11-26T05:00:00Z'), { commit: false });
      await rm(join(bad.set.path, 'manifest.json'));
      await mkdir(join(bad.set.path, 'manifest.json'));
      const journal = await openJournal(parseSetPath(running.set.path));
      const r = await kvmbak(['list', other]);
      await journal.remove();
      expect(r.code).toBe(0);
      expect(
        r.stdout
          .trimEnd()
          .split('\n')
          .slice(1)
          .map((l) => l.trim().split(/ {2,}/).at(-1)),
      ).toEqual(['incomplete (in progress)', 'unreadable', 'complete']);
      expect(r.stderr).toBe(
        `kvmbak: warning: web01/20261125T031500Z: malformed manifest ${join(bad.set.path, 'manifest.json')}: it is a folder, not a regular file; the backup set is damaged or was tampered with, use another set\n`,
      );
    } finally {
      await rm(other, { recursive: true, force: true });
    }
  });

  it('a missing destination: exit 1 with what to do; a bad domain name: exit 2', async () => {
    const r = await kvmbak(['list', join(dest, 'nope')]);
    expect(r.code).toBe(1);
    expect(r.stderr).toBe(
      `kvmbak: backup destination ${join(dest, 'nope')} does not exist; create it (mkdir -m 700 ${join(dest, 'nope')}) or mount the backup disk there\n`,
    );
    const bad = await kvmbak(['list', dest, '..']);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/^kvmbak: invalid domain name "\.\."/);
  });
});
