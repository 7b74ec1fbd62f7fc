import { readdir, rm, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { ChunkStore } from '../../src/chunks/index.js';
import { acquireLock, chunkStorePath } from '../../src/store/index.js';
import { buildSet, tempDir } from '../unit/store/helpers.js';
import { ensureBuilt, kvmbak } from './helpers.js';

beforeAll(() => {
  ensureBuilt();
}, 120_000);

const HOUR = 3600_000;
const DAY = 24 * HOUR;
/** The clock is real: sets are dated relative to now. */
const ago = (ms: number): Date => new Date(Date.now() - ms);

let dest: string;
let ids: Record<string, string>;
beforeEach(async () => {
  dest = await tempDir('kvmbak-cli-prune-');
  ids = {};
  const make = async (key: string, domain: string, age: number, commit = true): Promise<void> => {
    const { set } = await buildSet(dest, domain, ago(age), { commit, mode: 'pause' });
    ids[key] = set.id;
  };
  await make('a', 'web01', HOUR);
  await make('b', 'web01', DAY + HOUR);
  await make('c', 'web01', 2 * DAY + HOUR);
  await make('d', 'web01', 10 * DAY);
  await make('oldPartial', 'web01', 3 * DAY, false);
  await make('newPartial', 'web01', 2 * HOUR, false);
  await make('db', 'db01', 5 * DAY);
});
afterEach(async () => {
  await rm(dest, { recursive: true, force: true });
});

const left = async (domain: string): Promise<string[]> => (await readdir(join(dest, domain))).filter((n) => !n.startsWith('.')).sort();

describe('kvmbak prune', () => {
  it('--dry-run shows what would go and why, and deletes nothing', async () => {
    const before = await left('web01');
    const r = await kvmbak(['prune', dest, '--keep-last', '2', '--dry-run']);
    expect(r.code).toBe(0);
    expect(r.stderr).toBe('');
    const lines = r.stdout.trimEnd().split('\n');
    expect(lines[0]).toMatch(/^db01: keep 1, would remove 0 \(0 B\)$/);
    expect(lines[1]).toBe(`  keep         ${ids.db}  last 1 of 2; newest complete set`);
    expect(lines[2]).toMatch(/^web01: keep 3, would remove 3 \(.+\)$/);
    expect(lines.slice(3, 9)).toEqual([
      `  would remove ${ids.d}  matched no keep rule`,
      `  would remove ${ids.oldPartial}  incomplete, more than a day old`,
      `  would remove ${ids.c}  matched no keep rule`,
      `  keep         ${ids.b}  last 2 of 2`,
      `  keep         ${ids.newPartial}  incomplete, less than a day old: may still be in progress`,
      `  keep         ${ids.a}  last 1 of 2; newest complete set`,
    ]);
    expect(lines.at(-1)).toMatch(/^dry run: would remove 3 sets, freeing .+; nothing was changed$/);
    expect(await left('web01')).toEqual(before);

    const j = await kvmbak(['prune', dest, 'web01', '--keep-last', '2', '--dry-run', '--json']);
    expect(j.code).toBe(0);
    const doc = JSON.parse(j.stdout);
    expect(doc).toMatchObject({ ok: true, command: 'prune', dryRun: true });
    expect(doc.domains.map((d: { domain: string }) => d.domain)).toEqual(['web01']);
    expect(doc.domains[0].remove.map((s: { id: string }) => s.id)).toEqual([ids.d, ids.oldPartial, ids.c]);
    expect(doc.domains[0].deleted).toEqual([]);
  });

  it('for real: the sets no rule keeps are gone, the rest stay; never the newest complete set', async () => {
    const r = await kvmbak(['prune', dest, '--keep-last', '3']);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain(`  removed      ${ids.d}  matched no keep rule`);
    expect(r.stdout.trimEnd().split('\n').at(-1)).toMatch(/^removed 2 sets, freed .+$/);
    expect(await left('web01')).toEqual([ids.b, ids.c, ids.a, ids.newPartial].sort());
    expect(await left('db01')).toEqual([ids.db]);
    // keep-daily 1 alone still keeps the newest complete set of every domain
    const again = await kvmbak(['prune', dest, '--keep-daily', '1', '--json']);
    expect(again.code).toBe(0);
    expect(await left('web01')).toEqual([ids.a, ids.newPartial].sort());
    expect(await left('db01')).toEqual([ids.db]);
  });

  it('holds the domain lock: a domain being backed up is not pruned (exit 1, said on stderr)', async () => {
    const lock = await acquireLock(dest, 'web01', 'backup');
    try {
      const one = await kvmbak(['prune', dest, 'web01', '--keep-last', '1']);
      expect(one.code).toBe(1);
      expect(one.stderr).toMatch(new RegExp(`^kvmbak: domain web01 is being backed up by kvmbak pid ${process.pid} since .+; wait for it`));
      const all = await kvmbak(['prune', dest, '--keep-last', '1']);
      expect(all.code).toBe(1);
      expect(all.stdout).toMatch(/^web01: skipped: domain web01 is being backed up/m);
      expect(all.stderr).toMatch(/^kvmbak: prune skipped web01: domain web01 is being backed up by kvmbak pid/);
      expect((await left('web01')).length).toBe(6);
    } finally {
      await lock.release();
    }
  });

  it('with a chunk store: collects the chunks no remaining set uses; busy while a backup writes; a damaged list stops it (exit 1)', async () => {
    const chunked = await tempDir('kvmbak-cli-prune-chunks-');
    const chunkIds = async (): Promise<string[]> => {
      const out: string[] = [];
      for (const d of await readdir(chunkStorePath(chunked)))
        if (/^[0-9a-f]{4}$/.test(d)) out.push(...(await readdir(join(chunkStorePath(chunked), d))));
      return out.sort();
    };
    // chunks written an hour ago: a collection keeps what was used in the second it starts
    const age = async (): Promise<void> => {
      const t = new Date(Date.now() - HOUR);
      for (const id of await chunkIds()) await utimes(join(chunkStorePath(chunked), id.slice(0, 4), id), t, t);
    };
    try {
      for (const old of [3 * DAY, 2 * DAY, DAY]) await buildSet(chunked, 'web01', ago(old), { format: 'chunks', mode: 'pause' });
      await age();
      const writer = await ChunkStore.open(chunkStorePath(chunked));
      await writer.beginWriting();
      const before = await chunkIds();
      let busy;
      try {
        busy = await kvmbak(['prune', chunked, '--keep-last', '2']);
      } finally {
        await writer.close();
      }
      expect(busy.code).toBe(0);
      expect(busy.stderr).toBe('');
      expect(busy.stdout).toContain('\nchunk store busy (a backup is running): 1 set removed, their chunks will be collected by the next prune\n');
      expect(await chunkIds()).toEqual(before);

      const r = await kvmbak(['prune', chunked, '--keep-last', '2']);
      expect(r.code).toBe(0);
      expect(r.stderr).toBe('');
      const lines = r.stdout.trimEnd().split('\n');
      expect(lines.at(-2)).toMatch(/^chunk store: removed 1 chunk no set uses \(.+ KiB\), 5 kept$/);
      expect(lines.at(-1)).toMatch(/^removed 0 sets, freed .+ KiB$/);
      expect(await chunkIds()).toHaveLength(5);

      const dry = await kvmbak(['prune', chunked, '--keep-last', '1', '--dry-run', '--json']);
      expect(JSON.parse(dry.stdout)).toMatchObject({
        ok: true,
        dryRun: true,
        gc: { status: 'estimated', store: chunkStorePath(chunked), chunksRemoved: 1 },
      });
      const dryText = await kvmbak(['prune', chunked, '--keep-last', '1', '--dry-run']);
      expect(dryText.stdout).toMatch(
        /\nchunk store: would remove 1 chunk only these sets use \(.+ KiB\), and any no set uses\ndry run: would remove 1 set, freeing .+; nothing was changed\n$/,
      );
      expect(await chunkIds()).toHaveLength(5);

      const sets = await readdir(join(chunked, 'web01'));
      const newest = sets.sort().at(-1)!;
      await writeFile(join(chunked, 'web01', newest, 'disks', 'vda.chunks'), '# kvmbak chunk list 1\n# raw-size x\n');
      await age();
      const bad = await kvmbak(['prune', chunked, '--keep-last', '1', '--json']);
      expect(bad.code).toBe(1);
      const doc = JSON.parse(bad.stdout);
      expect(doc).toMatchObject({ ok: false, gc: { status: 'failed', errorCode: 'KVMBAK_CHUNK_LIST' } });
      expect(doc.domains[0].deleted).toHaveLength(1);
      expect(bad.stderr).toMatch(
        new RegExp(`^kvmbak: backup set .+${newest}: chunk list .+vda.chunks, line 2: .+; the chunk store was not collected \\(nothing removed\\)`),
      );
      expect(await chunkIds()).toHaveLength(5);
    } finally {
      await rm(chunked, { recursive: true, force: true });
    }
  });

  it('usage errors: no rule, a negative or non-numeric count (exit 2)', async () => {
    const none = await kvmbak(['prune', dest]);
    expect(none.code).toBe(2);
    expect(none.stderr).toBe(
      "kvmbak: say what to keep: give at least one of --keep-last, --keep-daily, --keep-weekly, --keep-monthly (>= 1)\nRun 'kvmbak --help' for usage.\n",
    );
    const zero = await kvmbak(['prune', dest, '--keep-last', '0']);
    expect(zero.code).toBe(2);
    const neg = await kvmbak(['prune', dest, '--keep-last=-1']);
    expect(neg.code).toBe(2);
    expect(neg.stderr).toMatch(/^kvmbak: --keep-last must be a whole number >= 0, got -1/);
    const nan = await kvmbak(['prune', dest, '--keep-daily', 'many']);
    expect(nan.code).toBe(2);
    expect(nan.stderr).toMatch(/^kvmbak: --keep-daily must be a whole number >= 0, got NaN/);
    expect((await left('web01')).length).toBe(6);
  });
});
