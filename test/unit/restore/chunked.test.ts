/**
 * restore() and verifySets() on chunked sets (kvmbak/2): real sets whose disks and save image
 * went through storeChunked into DEST/.chunks, the libvirt test driver, FakeLvm at the lvm
 * boundary. The zero-skip tests give the LVs loop devices (root only, as CI runs) pre-filled
 * with 0xff, so that what restore did not write is visible on the device.
 */
import { createHash } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { open, readdir, readFile, rm, truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Lvm } from '../../../src/lvm/index.js';
import { readChunkList, chunkIdAt } from '../../../src/chunks/index.js';
import { chunkStorePath } from '../../../src/store/index.js';
import { type RestoreOptions, restore, verifySet, verifySets } from '../../../src/restore/index.js';
import { readManifest, writeManifest } from '../../../src/manifest/index.js';
import { type BuiltSet, type TestEnv, buildSet, dropWeb01, readLv, resign, testEnv } from './helpers.js';
import { attachLoop, canUseLoopDevices, detachLoop } from '../archive/helpers.js';
import { rejection } from '../../support/rejection.js';

const MiB = 1024 * 1024;
const CHUNK = 4 * MiB;

let env: TestEnv;
let lvm: Lvm;
const loops: string[] = [];
beforeEach(async () => {
  env = await testEnv();
  lvm = new Lvm(env.lvm);
});
afterEach(async () => {
  for (const l of loops.splice(0)) await detachLoop(l);
  await env.cleanup();
});

const run = (o: RestoreOptions) => restore({ threads: 2, ...o }, { hypervisor: env.hv, lvm });

/** 4 MiB chunks: text, all zeros, random, all zeros, and a shorter text tail. */
function zeroyDisk(seed: string): Buffer {
  const b = Buffer.alloc(4 * CHUNK + 12345);
  b.fill(`${seed} chunked restore\n`, 0, CHUNK);
  for (let i = 2 * CHUNK; i < 3 * CHUNK; i += 4096) b.writeUInt32LE((i * 2654435761) >>> 0, i);
  b.fill(`${seed} tail\n`, 4 * CHUNK);
  return b;
}

const raws = (): Record<'vda' | 'vdb', Buffer> => ({ vda: zeroyDisk('vda'), vdb: Buffer.from('vdb kvmbak '.repeat(40000)) });

async function chunkIds(built: BuiltSet, file: string): Promise<string[]> {
  const list = await readChunkList(join(built.set.path, file));
  return Array.from({ length: list.ids.byteLength / 32 }, (_, i) => chunkIdAt(list, i));
}

const chunkFile = (id: string): string => join(chunkStorePath(env.dest), id.slice(0, 4), id);

async function flipByte(path: string, at: number): Promise<void> {
  const fh = await open(path, 'r+');
  const b = Buffer.alloc(1);
  await fh.read(b, 0, 1, at);
  b[0] ^= 0xff;
  await fh.write(b, 0, 1, at);
  await fh.close();
}

async function domainState(name: string): Promise<string | null> {
  const d = await env.hv.lookupDomain(name).catch(() => null);
  if (d === null) return null;
  try {
    return (await d.info()).state;
  } finally {
    d.free();
  }
}

describe('restore of a chunked set', () => {
  it('writes every disk from the chunk store and resumes from the memory state rebuilt into a private file, removed after', async () => {
    const built = await buildSet(env, { format: 'chunks', raw: raws() });
    expect(built.manifest.format).toBe('kvmbak/2');
    expect(existsSync(join(built.set.path, 'memory.state'))).toBe(false);
    await dropWeb01(env.hv);
    const phases: string[] = [];
    const r = await run({ set: built.set.path, onProgress: (e) => e.type === 'phase' && phases.push(e.message) });
    expect(r).toMatchObject({ memoryRestored: true, stateAfter: 'running' });
    expect(await domainState('web-01')).toBe('running');
    expect((await readLv(env.lvm, 'vg0', 'web-root')).equals(built.raw.vda!)).toBe(true);
    expect((await readLv(env.lvm, 'vg0', 'web-data-01')).equals(built.raw.vdb!)).toBe(true);
    // a disk's identity is its chunk list: no whole-disk sha256 in the list, the manifest or the result
    for (const d of built.manifest.disks) {
      expect(d.chunks!.rawSha256).toBeUndefined();
      expect(await readFile(join(built.set.path, d.chunks!.file), 'latin1')).not.toContain('# raw-sha256');
    }
    expect(r.disks.map((d) => [d.target, d.mode, d.sha256, d.listSha256, d.skipZeros])).toEqual([
      ['vda', 'chunks', null, built.manifest.disks[0].chunks!.listSha256, false],
      ['vdb', 'chunks', null, built.manifest.disks[1].chunks!.listSha256, false],
    ]);
    // the memory state keeps its whole sha256 (virsh restore takes it as one file)
    expect(await readFile(join(built.set.path, 'memory.chunks'), 'latin1')).toContain(`# raw-sha256 ${built.manifest.memory!.sha256}\n`);
    const rebuilt = phases.find((p) => p.startsWith('rebuilding the memory state'))!;
    expect(rebuilt).toMatch(new RegExp(`into ${join(env.dest, 'web-01')}/\\.kvmbak-restore-memory-\\w+/memory\\.state$`));
    // nothing left behind in the domain folder: only the set
    expect(await readdir(join(env.dest, 'web-01'))).toEqual([built.set.id]);
    // every chunk list and chunk proven first: 'check' comes before any 'create'
    expect(phases.findIndex((p) => p.startsWith('checking every chunk'))).toBeLessThan(phases.findIndex((p) => p.startsWith('creating')));
  });

  it('kvmbak/1 image sets restore as before (and verify)', async () => {
    const built = await buildSet(env);
    expect(built.manifest.format).toBe('kvmbak/1');
    await dropWeb01(env.hv);
    const r = await run({ set: built.set.path });
    expect(r).toMatchObject({ memoryRestored: true, stateAfter: 'running' });
    expect(r.disks.map((d) => d.mode)).toEqual(['parallel', 'parallel']);
    expect((await readLv(env.lvm, 'vg0', 'web-root')).equals(built.raw.vda!)).toBe(true);
    const v = await verifySet(built.set.path, { threads: 2 });
    expect(v).toMatchObject({ ok: true, chunkLists: [], chunkProblems: [] });
  });

  it('refuses a set with a missing or a damaged chunk before stopping the domain or touching an LV', async () => {
    const built = await buildSet(env, { format: 'chunks', mode: 'pause', raw: raws() });
    // web-01 runs, its LVs exist with other data: force would replace both
    await env.lvm.addLv({ vg: 'vg0', lv: 'web-root', size: 32 * MiB, content: Buffer.alloc(32 * MiB, 7) });
    await env.lvm.addLv({ vg: 'vg0', lv: 'web-data-01', size: 4 * MiB, content: Buffer.alloc(4 * MiB, 9) });
    expect(await domainState('web-01')).toBe('running');
    const random = (await chunkIds(built, 'disks/vda.chunks'))[2]!;

    await flipByte(chunkFile(random), 30);
    let e = await rejection(run({ set: built.set.path, force: true }));
    expect(e.code).toBe('KVMBAK_RESTORE_REFUSED');
    expect(e.message).toBe(
      `backup set ${built.set.path} is damaged: chunk ${random} is damaged (${chunkFile(random)}: its data does not decompress to its sha256); ` +
        `the set using it cannot be restored in full: ${built.set.path}; nothing was changed. Run kvmbak verify ${built.set.path}, or restore another set`,
    );
    expect(env.lvm.changes()).toEqual([]);
    expect(await domainState('web-01')).toBe('running');
    expect((await readLv(env.lvm, 'vg0', 'web-root')).every((b) => b === 7)).toBe(true);

    await rm(chunkFile(random));
    e = await rejection(run({ set: built.set.path, force: true }));
    expect(e.message).toContain(`chunk ${random} is missing (${chunkFile(random)})`);
    expect(env.lvm.changes()).toEqual([]);
    expect(await domainState('web-01')).toBe('running');
    // the dry run says the same
    e = await rejection(run({ set: built.set.path, force: true, dryRun: true }));
    expect(e.message).toContain(`chunk ${random} is missing`);
  });

  it('a damaged chunk of the memory state only: refused, pointing at noMemory, which then restores from the disks', async () => {
    const built = await buildSet(env, { format: 'chunks', raw: raws() });
    await dropWeb01(env.hv);
    const memIds = await chunkIds(built, 'memory.chunks');
    const diskIds = new Set([...(await chunkIds(built, 'disks/vda.chunks')), ...(await chunkIds(built, 'disks/vdb.chunks'))]);
    const only = memIds.find((id) => !diskIds.has(id))!;
    await flipByte(chunkFile(only), 12);
    const e = await rejection(run({ set: built.set.path }));
    expect(e.message).toMatch(/; nothing was changed\. Restore another set, or this one from its disks with `noMemory`$/);
    expect(env.lvm.changes()).toEqual([]);
    const r = await run({ set: built.set.path, noMemory: true });
    expect(r).toMatchObject({ memoryRestored: false, started: true, stateAfter: 'running' });
  });

  it('a chunk list that does not match the manifest is refused (re-signed by a forger)', async () => {
    const built = await buildSet(env, { format: 'chunks', mode: 'pause', raw: raws() });
    await dropWeb01(env.hv);
    const other = await readFile(join(built.set.path, 'disks/vdb.chunks'));
    await writeFile(join(built.set.path, 'disks/vda.chunks'), other);
    const e = await rejection(run({ set: built.set.path }));
    expect(e.message).toContain('disks/vda.chunks');
    expect(env.lvm.changes()).toEqual([]);
  });
});

describe('restore of a chunked set: what is written is proven chunk by chunk, with no whole-disk sha256', () => {
  /** Runs `act` once, when restore announces writing `file` (after the proof, before the LV is written). */
  const onWriting = (file: string, act: () => void) => {
    let done = false;
    return (e: { type: string; message?: string }): void => {
      if (done || e.type !== 'phase' || !e.message?.startsWith(`writing ${file} `)) return;
      done = true;
      act();
    };
  };

  it('a chunk damaged after the proof: the write stops at it, the LVs it created are removed', async () => {
    const built = await buildSet(env, { format: 'chunks', mode: 'pause', raw: raws() });
    await dropWeb01(env.hv);
    const random = (await chunkIds(built, 'disks/vda.chunks'))[2]!;
    const e = await rejection(
      run({
        set: built.set.path,
        onProgress: onWriting('disks/vda.chunks', () => {
          const b = readFileSync(chunkFile(random));
          b[30] ^= 0xff;
          writeFileSync(chunkFile(random), b);
        }),
      }),
    );
    expect(e.code).toBe('KVMBAK_RESTORE_FAILED');
    expect(e.message).toContain(random);
    expect(e).toMatchObject({ removedLvs: ['vg0/web-data-01', 'vg0/web-root'], defined: false });
    expect(await domainState('web-01')).toBeNull();
  });

  it('a chunk list swapped after the proof: refused before the LV is written', async () => {
    const built = await buildSet(env, { format: 'chunks', mode: 'pause', raw: raws() });
    await dropWeb01(env.hv);
    const vdb = readFileSync(join(built.set.path, 'disks/vdb.chunks'));
    const e = await rejection(
      run({ set: built.set.path, onProgress: onWriting('disks/vda.chunks', () => writeFileSync(join(built.set.path, 'disks/vda.chunks'), vdb)) }),
    );
    expect(e.code).toBe('KVMBAK_RESTORE_FAILED');
    expect(e.message).toMatch(
      /^disks\/vda\.chunks changed since the set was checked \(sha256 [0-9a-f]{64}, the manifest says [0-9a-f]{64}\); nothing was written to vg0\/web-root/,
    );
    expect(e).toMatchObject({ removedLvs: ['vg0/web-data-01', 'vg0/web-root'], defined: false });
  });
});

describe('chunked sets of older kvmbak: the whole disk sha256 in the list and the manifest, still checked', () => {
  const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

  it('verify and restore as before; restore reports the whole sha256 it checked', async () => {
    const raw = raws();
    const built = await buildSet(env, { format: 'chunks', raw, wholeDiskSha256: true });
    expect(built.manifest.disks.map((d) => d.chunks!.rawSha256)).toEqual([sha(raw.vda), sha(raw.vdb)]);
    expect(await readFile(join(built.set.path, 'disks/vda.chunks'), 'latin1')).toContain(`# raw-sha256 ${sha(raw.vda)}\n`);
    expect(await verifySet(built.set.path)).toMatchObject({ ok: true, problems: [] });
    await dropWeb01(env.hv);
    const r = await run({ set: built.set.path });
    expect(r).toMatchObject({ memoryRestored: true, stateAfter: 'running' });
    expect(r.disks.map((d) => [d.target, d.sha256])).toEqual([
      ['vda', sha(raw.vda)],
      ['vdb', sha(raw.vdb)],
    ]);
    expect((await readLv(env.lvm, 'vg0', 'web-root')).equals(raw.vda)).toBe(true);
  });

  it("a manifest rawSha256 that is not the list's: verify names the list, restore refuses before touching anything", async () => {
    const built = await buildSet(env, { format: 'chunks', mode: 'pause', raw: raws(), wholeDiskSha256: true });
    const m = await readManifest(built.set.path);
    m.disks[0]!.chunks!.rawSha256 = '0'.repeat(64);
    await writeManifest(built.set.path, m);
    const line = 'disks/vda.chunks: the chunk list does not match the manifest: its raw sha256 differs from the manifest';
    const v = await verifySet(built.set.path);
    expect(v.ok).toBe(false);
    expect(v.problems).toEqual([line]);
    await dropWeb01(env.hv);
    const e = await rejection(run({ set: built.set.path }));
    expect(e.code).toBe('KVMBAK_RESTORE_REFUSED');
    expect(e.message).toContain(line);
    expect(env.lvm.changes()).toEqual([]);
  });

  it('list and manifest agreeing on a wrong whole sha256 (re-signed): the rebuilt disk is caught, the LVs removed', async () => {
    const built = await buildSet(env, { format: 'chunks', mode: 'pause', raw: raws(), wholeDiskSha256: true });
    const path = join(built.set.path, 'disks/vdb.chunks');
    const wrong = 'f'.repeat(64);
    await writeFile(path, (await readFile(path, 'latin1')).replace(/# raw-sha256 [0-9a-f]{64}/, `# raw-sha256 ${wrong}`));
    const m = await readManifest(built.set.path);
    const listed = createHash('sha256')
      .update(await readFile(path))
      .digest('hex');
    Object.assign(m.disks[1]!.chunks!, { rawSha256: wrong, listSha256: listed });
    await writeManifest(built.set.path, m);
    await resign(built.set.path);
    await dropWeb01(env.hv);
    const e = await rejection(run({ set: built.set.path }));
    expect(e.code).toBe('KVMBAK_RESTORE_FAILED');
    expect(e.message).toMatch(new RegExp(`the rebuilt disk hashes to [0-9a-f]{64}, its chunk list says ${wrong}`));
    expect(e).toMatchObject({ removedLvs: ['vg0/web-data-01', 'vg0/web-root'], defined: false });
  });
});

const loopOk = await canUseLoopDevices();

describe.runIf(loopOk)('all-zero chunks into a new thin LV are not written (loop devices full of 0xff stand for the LVs)', () => {
  beforeEach(() => {
    env.lvm.deviceOnCreate = async (vg, lv, size) => {
      const file = join(env.dir, `${vg}-${lv}.dev`);
      await writeFile(file, Buffer.alloc(size, 0xff));
      const dev = await attachLoop(file);
      loops.push(dev);
      return dev;
    };
  });

  const zeroRuns = (b: Buffer, data: Buffer): { written: boolean[] } => ({
    written: Array.from({ length: Math.ceil(data.length / CHUNK) }, (_, i) =>
      b.subarray(i * CHUNK, Math.min(data.length, (i + 1) * CHUNK)).equals(data.subarray(i * CHUNK, (i + 1) * CHUNK)),
    ),
  });

  for (const format of ['chunks', 'image'] as const) {
    it(`${format}: a thin LV created now gets only its non-zero chunks; a linear one gets every byte`, async () => {
      const built = await buildSet(env, { format, mode: 'pause', raw: raws(), thin: true });
      await dropWeb01(env.hv);
      await env.lvm.addLv({ vg: 'vg0', lv: 'pool0', size: 256 * MiB, kind: 'pool' });
      const r = await run({ set: built.set.path, thinPool: 'pool0', noStart: true });
      expect(r.plan.disks.map((d) => [d.target, d.create, d.skipZeros])).toEqual([
        ['vda', { kind: 'thin', pool: 'pool0' }, true],
        ['vdb', { kind: 'linear' }, false],
      ]);
      const vda = built.raw.vda!;
      const dev = await readFile(env.lvm.row('vg0', 'web-root')!.lv_path);
      // chunks 1 and 3 are all zeros: never written, the device still holds 0xff there
      expect(zeroRuns(dev, vda).written).toEqual([true, false, true, false, true]);
      expect(dev.subarray(CHUNK, 2 * CHUNK).every((b) => b === 0xff)).toBe(true);
      expect(r.disks[0]).toMatchObject({ skipZeros: true, bytesWritten: vda.length - 2 * CHUNK, rawBytes: vda.length });
      // the linear LV got every byte, zeros too
      const vdb = built.raw.vdb!;
      const lin = await readFile(env.lvm.row('vg0', 'web-data-01')!.lv_path);
      expect(lin.subarray(0, vdb.length).equals(vdb)).toBe(true);
      expect(r.disks[1]).toMatchObject({ skipZeros: false, bytesWritten: vdb.length });
    });
  }

  it('a linear LV gets the zero chunks written', async () => {
    const built = await buildSet(env, { format: 'chunks', mode: 'pause', raw: raws() });
    await dropWeb01(env.hv);
    const r = await run({ set: built.set.path, noStart: true });
    const dev = await readFile(env.lvm.row('vg0', 'web-root')!.lv_path);
    expect(dev.subarray(0, built.raw.vda!.length).equals(built.raw.vda!)).toBe(true);
    expect(r.disks[0]).toMatchObject({ skipZeros: false, bytesWritten: built.raw.vda!.length });
  });
});

describe('verify of chunked sets', () => {
  it('a good set: lists and chunks checked; two sets sharing chunks check each chunk once', async () => {
    const a = await buildSet(env, { format: 'chunks', mode: 'pause', raw: raws() });
    const b = await buildSet(env, { format: 'chunks', mode: 'pause', raw: raws() });
    const one = await verifySet(a.set.path);
    expect(one).toMatchObject({ ok: true, problems: [] });
    expect(one.chunkLists.map((l) => [l.file, l.status])).toEqual([
      ['disks/vda.chunks', 'ok'],
      ['disks/vdb.chunks', 'ok'],
    ]);
    const distinct = new Set([...(await chunkIds(a, 'disks/vda.chunks')), ...(await chunkIds(a, 'disks/vdb.chunks'))]);
    const both = await verifySets([a.set.path, b.set.path]);
    expect(both.ok).toBe(true);
    // same data in both sets: the second adds no chunk to check
    expect(both.stores).toEqual([{ store: chunkStorePath(env.dest), chunksChecked: distinct.size, bytesChecked: expect.any(Number) }]);
    expect(both.stores[0]!.bytesChecked).toBe(a.raw.vda!.length - CHUNK + a.raw.vdb!.length); // the all-zero chunk once
  });

  it('a flipped byte in one chunk: both sets fail, one line naming the chunk and every set that uses it', async () => {
    const a = await buildSet(env, { format: 'chunks', mode: 'pause', raw: raws() });
    const b = await buildSet(env, { format: 'chunks', mode: 'pause', raw: raws() });
    const bad = (await chunkIds(a, 'disks/vda.chunks'))[0]!;
    await flipByte(chunkFile(bad), 20);
    const line =
      `chunk ${bad} is damaged (${chunkFile(bad)}: its data does not decompress to its sha256); ` +
      `the 2 sets using it cannot be restored in full: ${[a.set.path, b.set.path].sort().join(', ')}`;
    // verifying one set still names the other set of the destination that uses the chunk
    const one = await verifySet(a.set.path);
    expect(one.ok).toBe(false);
    expect(one.problems).toEqual([line]);
    expect(one.chunkLists.map((l) => [l.file, l.status])).toEqual([
      ['disks/vda.chunks', 'damaged'],
      ['disks/vdb.chunks', 'ok'],
    ]);
    expect(one.chunkProblems).toMatchObject([{ id: bad, kind: 'damaged', sets: [a.set.path, b.set.path].sort() }]);
    const both = await verifySets([a.set.path, b.set.path]);
    expect(both.ok).toBe(false);
    expect(both.chunkProblems.map((p) => p.message)).toEqual([line]);
    expect(both.sets.map((s) => s.problems)).toEqual([[line], [line]]);
    // quick: the file is there and not empty, so quick does not see a flipped byte
    expect((await verifySets([a.set.path, b.set.path], { quick: true })).ok).toBe(true);
  });

  it('quick: a missing chunk and an empty one are found without decompressing anything', async () => {
    const a = await buildSet(env, { format: 'chunks', mode: 'pause', raw: raws() });
    const [first, , random] = await chunkIds(a, 'disks/vda.chunks');
    await rm(chunkFile(first!));
    await truncate(chunkFile(random!), 0);
    const r = await verifySet(a.set.path, { quick: true });
    expect(r.ok).toBe(false);
    expect(r.chunkProblems.map((p) => [p.id, p.kind]).sort()).toEqual(
      [
        [first, 'missing'],
        [random, 'empty'],
      ].sort(),
    );
    expect(r.problems).toContain(`chunk ${first} is missing (${chunkFile(first!)}); the set using it cannot be restored in full: ${a.set.path}`);
  });

  it('a truncated chunk list and a missing chunk store are reported on the list', async () => {
    const a = await buildSet(env, { format: 'chunks', mode: 'pause', raw: raws() });
    const list = join(a.set.path, 'disks/vdb.chunks');
    await rm(chunkStorePath(env.dest), { recursive: true });
    const r = await verifySet(a.set.path, { quick: true });
    expect(r.ok).toBe(false);
    expect(r.chunkLists.map((l) => l.status)).toEqual(['unreadable', 'unreadable']);
    expect(r.problems[0]).toBe(
      `disks/vda.chunks: its chunks live in the chunk store ${chunkStorePath(env.dest)}, which is missing or not a folder; restore another set, or copy the store back`,
    );
    const text = await readFile(list, 'latin1');
    await writeFile(list, text.slice(0, text.length - 30));
    const t = await verifySet(a.set.path);
    // the file check catches the size first: the chunk check leaves that list alone
    expect(t.problems.some((p) => p.startsWith('disks/vdb.chunks has'))).toBe(true);
    expect(t.chunkLists[1]).toMatchObject({ status: 'not-checked' });
  });
});

describe('verify of chunked sets: progress and cancel', () => {
  it('reports chunk progress, and an aborted signal stops the check with an AbortError', async () => {
    const a = await buildSet(env, { format: 'chunks', mode: 'pause', raw: raws() });
    const events: { phase: string; chunksDone?: number }[] = [];
    await verifySet(a.set.path, { onProgress: (e) => events.push(e) });
    const chunks = events.filter((e) => e.phase === 'chunks');
    expect(chunks.at(-1)).toMatchObject({
      phase: 'chunks',
      chunksDone: new Set([...(await chunkIds(a, 'disks/vda.chunks')), ...(await chunkIds(a, 'disks/vdb.chunks'))]).size,
    });
    const ac = new AbortController();
    const p = verifySets([a.set.path], {
      signal: ac.signal,
      onProgress: (e) => {
        if (e.phase === 'chunks') ac.abort();
      },
    });
    const e = await rejection(p);
    expect(e.name).toBe('AbortError');
  });
});
