import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { changedChunks, heldMetadataRoot, isChunkError, parseThinDelta, thinDeltaArgs } from '../../../src/index.js';

const DIR = fileURLToPath(new URL('../../fixtures/thin/', import.meta.url));
const SCRIPT = fileURLToPath(new URL('../../e2e/guest/capture-thin-delta.sh', import.meta.url));
const read = (name: string): string => readFileSync(`${DIR}${name}`, 'utf8');
const run = (name: string): { argv: string[]; exitCode: number; stdout: string; stderr: string } => JSON.parse(read(name));

interface Info {
  thinDeltaVersion: string;
  lvmVersion: string;
  capturedAt: string;
  chunkBytes: number;
  pools: { pool: string; tpool: string; tmeta: string; snapThinId: number; originThinId: number; poolChunkSizeBytes: number; lvSize: number }[];
  changes: { offset: number; length: number; discard?: boolean }[];
  changedChunks: number[];
}
const info = JSON.parse(read('info.json')) as Info;

describe('the thin_delta fixtures', () => {
  it('are real lab captures: every file is one the capture script writes, from thin-provisioning-tools 0.9', () => {
    const script = readFileSync(SCRIPT, 'utf8');
    const written = new Set(['info.json']);
    const names = [...script.matchAll(/"(?:\$out\/)?\$pool-([a-z-]+\.(?:xml|run\.json))"/g)].map((m) => m[1]);
    expect(names.length).toBe(15);
    for (const p of info.pools) for (const n of names) written.add(`${p.pool}-${n}`);
    const files = readdirSync(DIR).filter((f) => f !== 'README.md');
    expect(files.sort()).toEqual([...written].sort());
    expect(info.thinDeltaVersion).toBe('0.9.0');
    expect(info.lvmVersion).toMatch(/2\.03\.16/);
    expect(info.pools.map((p) => p.poolChunkSizeBytes)).toEqual([65536, 524288]);
    for (const p of info.pools) {
      const nosnap = run(`${p.pool}-delta-nosnap.run.json`);
      expect(nosnap.argv).toEqual(['thin_delta', ...thinDeltaArgs(p.snapThinId, p.originThinId, p.tmeta)]);
    }
  });

  it('capture script is valid bash', () => {
    execFileSync('/bin/bash', ['-n', SCRIPT]);
  });
});

describe.each(info.pools)('thin_delta of pool $pool', (pool) => {
  const plain = parseThinDelta(read(`${pool.pool}-delta.xml`));

  it('parses the superblock and the diff header', () => {
    expect(plain.dataBlockBytes).toBe(pool.poolChunkSizeBytes);
    expect(plain.dataBlockSectors).toBe(pool.poolChunkSizeBytes / 512);
    expect(plain.left).toBe(pool.snapThinId);
    expect(plain.right).toBe(pool.originThinId);
    expect(plain.ranges.length).toBeGreaterThan(5);
  });

  it('maps the changed ranges to exactly the 4 MiB chunks the lab changed', () => {
    expect(changedChunks(plain, { diskSize: pool.lvSize })).toEqual(info.changedChunks);
    expect(changedChunks(plain)).toEqual(info.changedChunks);
    // Each change of the capture lies inside the ranges of a changed kind.
    for (const c of info.changes) {
      const first = Math.floor(c.offset / pool.poolChunkSizeBytes);
      const last = Math.floor((c.offset + c.length - 1) / pool.poolChunkSizeBytes);
      for (let b = first; b <= last; b++) {
        const r = plain.ranges.find((x) => x.begin <= b && b < x.begin + x.length);
        expect(r?.kind, `block ${b}`).toBe(c.discard ? 'left_only' : c.offset >= 32 * 1024 * 1024 ? 'right_only' : 'different');
      }
    }
  });

  it('reads --verbose output as the same ranges', () => {
    const verbose = parseThinDelta(read(`${pool.pool}-delta-verbose.xml`));
    expect(verbose.ranges).toEqual(plain.ranges);
    expect(changedChunks(verbose, { diskSize: pool.lvSize })).toEqual(info.changedChunks);
  });

  it('swapping left and right swaps left_only and right_only, same chunks', () => {
    const reverse = parseThinDelta(read(`${pool.pool}-delta-reverse.xml`));
    expect(reverse.left).toBe(pool.originThinId);
    const swap = { left_only: 'right_only', right_only: 'left_only', same: 'same', different: 'different' } as const;
    expect(reverse.ranges).toEqual(plain.ranges.map((r) => ({ ...r, kind: swap[r.kind] })));
    expect(changedChunks(reverse)).toEqual(info.changedChunks);
  });

  it('a thin LV against itself changed nothing', () => {
    const same = parseThinDelta(read(`${pool.pool}-delta-same.xml`));
    expect(same.ranges.every((r) => r.kind === 'same')).toBe(true);
    expect(changedChunks(same)).toEqual([]);
  });

  it('finds a chunk outside a smaller disk and refuses it', () => {
    expect(() => changedChunks(plain, { diskSize: 40 * 1024 * 1024 })).toThrow(/beyond the 41943040-byte disk/);
  });

  it('reads the held metadata root from dmsetup status, reserved and released', () => {
    const held = run(`${pool.pool}-status-held.run.json`);
    const released = run(`${pool.pool}-status-released.run.json`);
    expect(heldMetadataRoot(held.stdout)).toBeGreaterThan(0);
    expect(heldMetadataRoot(released.stdout)).toBeNull();
    expect(() => heldMetadataRoot('0 8 linear 254:0 0')).toThrow(/not a thin-pool status line/);
  });

  it('records how thin_delta and dmsetup fail (what a backup must handle)', () => {
    const nosnap = run(`${pool.pool}-delta-nosnap.run.json`);
    expect(nosnap.exitCode).toBe(1);
    expect(nosnap.stderr.split('\n')[0]).toBe('no current metadata snap');
    const unknown = run(`${pool.pool}-delta-unknown-id.run.json`);
    expect(unknown.exitCode).toBe(1);
    expect(unknown.stderr).toMatch(/^Unable to find mapping tree for snap2 \(999\)/);
    const again = run(`${pool.pool}-reserve-again.run.json`);
    expect(again.exitCode).toBe(1);
    expect(again.stderr).toMatch(/Device or resource busy/);
  });
});

describe('parseThinDelta refuses what is not whole thin_delta output', () => {
  const good = read('pool64k-delta.xml');
  const lines = good.split('\n');
  const cases: [string, string, RegExp][] = [
    ['empty output', '', /line 1: the output ends early/],
    ['truncated after a range', lines.slice(0, 5).join('\n'), /ends early \(truncated\?\)/],
    ['cut inside a tag', good.slice(0, good.indexOf('length="64"') + 5), /line 4: expected an element/],
    ['no superblock', lines.slice(1).join('\n'), /expected <superblock>/],
    ['unknown element', good.replace('<same begin="0"', '<mapped begin="0"'), /line 3: unexpected element <mapped>/],
    ['a non-number', good.replace('begin="128"', 'begin="12x"'), /begin="12x" is not a whole number/],
    ['a huge number', good.replace('begin="128"', 'begin="99999999999999999"'), /is not a whole number below 2\^53/],
    ['overlapping ranges', good.replace('begin="192"', 'begin="150"'), /overlaps or precedes/],
    ['a bad block size', good.replace('data_block_size="128"', 'data_block_size="100"'), /not a thin pool chunk size/],
    ['missing attribute', good.replace(' length="64"/>', '/>'), /attribute length is missing/],
    ['trailing output', `${good}<diff left="1" right="2">`, /more output after <\/superblock>/],
  ];
  it.each(cases)('%s', (_name, text, message) => {
    let err: unknown;
    try {
      parseThinDelta(text);
    } catch (e) {
      err = e;
    }
    expect(isChunkError(err, 'KVMBAK_THIN_DELTA')).toBe(true);
    expect((err as Error).message).toMatch(message);
  });
});
