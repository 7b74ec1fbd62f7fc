// The thin-LV path on real lvm2, device-mapper and thin-provisioning-tools: lab-thin's disk is a
// thin LV in the fixture's thin pool. A thin snapshot (the previous run's base), writes to three
// 4 MiB-aligned regions of the origin from the lab host (the SeaBIOS guest writes nothing), a
// second thin snapshot; then thinChangedChunks (reserve the pool's metadata snapshot, thin_delta,
// release) must name exactly the chunks written and leave nothing held, writeDiskDelta must store
// the new snapshot from those chunks alone, and a kvmbak killed (kill -9) while it holds the
// metadata snapshot must leave it to `kvmbak recover`, which releases it. Every LV it makes starts
// with `e2e-thin-` and is removed at the end.
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ChunkStore, Lvm, chunkIdAt, createSet, openJournal, thinChangedChunks, writeDiskDelta, writeDiskToStore } from '../../../src/index.js';
import { CLI, lab, sh, writePattern, type LabFixture } from './lab.js';

const MiB = 1024 * 1024;
const CHUNK = 4 * MiB;
const PREFIX = 'e2e-thin-';
const DOMAIN = 'lab-thin';
/** The chunks the test writes, and how much of each (every write starts at its chunk's start). */
const WRITES: [chunk: number, bytes: number][] = [
  [1, CHUNK],
  [6, MiB],
  [13, 64 * 1024],
];

/** The raw `dmsetup status` line of the pool and its held metadata root field ('-' when none). */
async function poolStatus(tpool: string): Promise<{ line: string; held: string }> {
  const line = (await sh('dmsetup', ['status', tpool])).stdout.trim();
  return { line, held: line.split(/\s+/)[6] ?? '' };
}

/** sha256 of every 4 MiB chunk of a device. */
async function chunkHashes(path: string, size: number): Promise<string[]> {
  const fh = await open(path, 'r');
  try {
    const buf = Buffer.alloc(CHUNK);
    const out: string[] = [];
    for (let pos = 0; pos < size; pos += CHUNK) {
      const len = Math.min(CHUNK, size - pos);
      let got = 0;
      while (got < len) got += (await fh.read(buf, got, len - got, pos + got)).bytesRead;
      out.push(createHash('sha256').update(buf.subarray(0, len)).digest('hex'));
    }
    return out;
  } finally {
    await fh.close();
  }
}

describe('thin_delta on a thin LV (lab-thin)', () => {
  let fx: LabFixture;
  let work: string;
  let vg: string;
  let pool: string;
  let tpool: string;
  let origin: string;
  let size: number;
  const lvm = new Lvm();

  async function removeOurs(): Promise<void> {
    const { stdout } = await sh('lvs', ['--noheadings', '-o', 'lv_name', fx.vg]);
    for (const name of stdout.split('\n').map((l) => l.trim())) {
      if (name.startsWith(PREFIX)) await sh('lvremove', ['-y', `${fx.vg}/${name}`], { check: false });
    }
  }

  beforeAll(async () => {
    fx = lab();
    vg = fx.vg;
    pool = fx.thinPool;
    tpool = `${vg.replace(/-/g, '--')}-${pool.replace(/-/g, '--')}-tpool`;
    origin = fx.domains[DOMAIN]!.disks.vda!;
    size = fx.lvs[origin]!.bytes;
    work = mkdtempSync('/var/tmp/kvmbak-e2e-thin-');
    await removeOurs();
  });

  afterAll(async () => {
    // Never leave the pool's metadata snapshot held, whatever failed.
    if (tpool && (await poolStatus(tpool).catch(() => ({ held: '-' }))).held !== '-') {
      await sh('dmsetup', ['message', tpool, '0', 'release_metadata_snap'], { check: false });
    }
    await removeOurs();
    rmSync(work, { recursive: true, force: true });
  });

  it('the fixture: lab-thin runs on a thin LV of the thin pool, 64 MiB', async () => {
    const v = await lvm.thinVolume({ vg, lv: origin });
    expect(v).toMatchObject({ vg, lv: origin, segtype: 'thin', pool, active: true });
    expect(size).toBe(64 * MiB);
    expect((await sh('virsh', ['-q', '-c', fx.uri, 'domstate', DOMAIN])).stdout.trim()).toBe('running');
    expect((await poolStatus(tpool)).held).toBe('-');
  });

  it('thinChangedChunks names exactly the chunks written between two thin snapshots; nothing is held after; writeDiskDelta stores the new one from them alone', async () => {
    const base = await lvm.createSnapshot({ vg, lv: origin }, { name: `${PREFIX}base` });
    for (const [chunk, bytes] of WRITES) writePattern(fx.lvs[origin]!.path, `thin-${chunk}`, bytes, chunk * CHUNK);
    const current = await lvm.createSnapshot({ vg, lv: origin }, { name: `${PREFIX}new` });
    expect([base.snapshot, current.snapshot]).toEqual(['thin', 'thin']);

    const dest = join(work, 'dest');
    mkdirSync(dest, { mode: 0o700 });
    const journal = await openJournal(await createSet(dest, DOMAIN));
    const r = await thinChangedChunks({ lvm, journal, base, current, diskSize: size });
    const ids = await lvm.thinVolumes([base, current]);
    expect(r).toMatchObject({ vg, pool, baseThinId: ids[0]!.thinId, currentThinId: ids[1]!.thinId });
    expect(r.changed).toEqual(WRITES.map(([c]) => c));
    expect(journal.document.entries.map((e) => e.step)).toEqual(['metadata-reserved', 'metadata-released']);
    const status = await poolStatus(tpool);
    expect(status.held, status.line).toBe('-');
    expect((await lvm.thinPoolStatus(vg, pool)).heldMetadataRoot).toBeNull();
    console.log(`[measure] thin_delta: pool block ${r.poolBlockBytes} bytes, changed chunks ${r.changed.join(',')}`);

    // The base stored whole, then the new snapshot from its changed chunks only.
    await using store = await ChunkStore.forDestination(dest);
    const first = await writeDiskToStore(base.path, store);
    const delta = await writeDiskDelta(current.path, store, { previous: first.list, changed: r.changed, size });
    expect(delta).toMatchObject({ chunksRead: 3, chunksFromPrevious: 13, bytesRead: 3 * CHUNK, rawSha256: undefined });
    const expected = await chunkHashes(current.path, size);
    expect(Array.from({ length: 16 }, (_, i) => chunkIdAt(delta.list, i))).toEqual(expected);
    await journal.remove();
  });

  it('kill -9 while the metadata snapshot is held (journaled), then kvmbak recover releases it', async () => {
    const dest = join(work, 'killed');
    mkdirSync(dest, { mode: 0o700 });
    // A kvmbak process doing the thin_delta step for real (journal, reserve), whose thin_delta
    // never returns: it is killed while the pool's metadata snapshot is held.
    const child = join(work, 'hold.mjs');
    writeFileSync(
      child,
      `import { LocalCommandRunner, Lvm, createSet, openJournal, thinChangedChunks } from ${JSON.stringify(join(process.cwd(), 'dist', 'index.js'))};
const [dest, vg, base, current, size] = process.argv.slice(2);
const local = new LocalCommandRunner();
const runner = {
  run(file, args, options) {
    if (file !== 'thin_delta') return local.run(file, args, options);
    process.stdout.write('holding\\n');
    setInterval(() => undefined, 1000);
    return new Promise(() => undefined);
  },
};
const journal = await openJournal(await createSet(dest, ${JSON.stringify(DOMAIN)}));
await thinChangedChunks({ lvm: new Lvm(runner), journal, base: { vg, lv: base }, current: { vg, lv: current }, diskSize: Number(size) });
`,
    );
    const proc = spawn(process.execPath, [child, dest, vg, `${PREFIX}base`, `${PREFIX}new`, String(size)], { stdio: ['ignore', 'pipe', 'pipe'] });
    let err = '';
    proc.stderr.setEncoding('utf8').on('data', (d: string) => (err += d));
    const exited = new Promise<NodeJS.Signals | null>((resolve) => proc.on('close', (_code, signal) => resolve(signal)));
    await new Promise<void>((resolve, reject) => {
      proc.stdout.setEncoding('utf8').on('data', (d: string) => d.includes('holding') && resolve());
      void exited.then(() => reject(new Error(`the child ended before holding the metadata snapshot: ${err}`)));
    });
    const held = await poolStatus(tpool);
    expect(held.held, held.line).toMatch(/^\d+$/);
    proc.kill('SIGKILL');
    expect(await exited).toBe('SIGKILL');
    expect((await poolStatus(tpool)).held).toBe(held.held);

    const rec = await sh(process.execPath, [CLI, 'recover', '--dest', dest, '-c', fx.uri, '--json'], { check: false });
    expect(rec.code, rec.stdout + rec.stderr).toBe(0);
    const doc = JSON.parse(rec.stdout) as { ok: boolean; runs: { domain: string; actions: string[] }[] };
    expect(doc.ok).toBe(true);
    expect(doc.runs.map((x) => x.domain)).toEqual([DOMAIN]);
    expect(doc.runs[0]!.actions[0]).toBe(`released the metadata snapshot of thin pool ${vg}/${pool} (held root ${held.held})`);
    const after = await poolStatus(tpool);
    expect(after.held, after.line).toBe('-');
    // The partial set and the journal are gone.
    expect(existsSync(join(dest, DOMAIN)) ? readdirSync(join(dest, DOMAIN)) : []).toEqual([]);
  });
});
