/**
 * restore never destroys before it has checked (issue 9, defect 1), and
 * writes beside existing LVs, swapping names only once the new data is
 * checked. Real sets, the libvirt test driver and FakeLvm (see helpers.ts).
 */
import { existsSync } from 'node:fs';
import { mkdir, open, readFile, rename, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Lvm } from '../../../src/lvm/index.js';
import { readManifest, writeManifest } from '../../../src/manifest/index.js';
import { type RestoreOptions, type RestoreProgress, isRestoreError, restore } from '../../../src/restore/index.js';
import { type BuiltSet, type TestEnv, buildSet, readLv, testEnv } from './helpers.js';
import { rejection } from '../../support/rejection.js';

let env: TestEnv;
let lvm: Lvm;
beforeEach(async () => {
  n = 0;
  env = await testEnv();
  lvm = new Lvm(env.lvm);
});
afterEach(async () => {
  await env.cleanup();
});

let n = 0;
const run = (o: RestoreOptions) => restore({ threads: 2, ...o }, { hypervisor: env.hv, lvm, lvSuffix: () => `s${++n}` });

async function domainState(name: string): Promise<string | null> {
  const d = await env.hv.lookupDomain(name).catch(() => null);
  if (d === null) return null;
  try {
    return (await d.info()).state;
  } finally {
    d.free();
  }
}

/** web-01 running on its two LVs, which hold data of their own (not the set's). */
async function runningOriginal(built: BuiltSet, size = 8 << 20): Promise<{ vda: Buffer; vdb: Buffer }> {
  const dom = await env.hv.lookupDomain('web-01');
  if ((await dom.info()).state !== 'running') await dom.start();
  dom.free();
  const isRunning = async () => (await domainState('web-01')) === 'running';
  const vda = Buffer.alloc(size, 'old vda data ');
  const vdb = Buffer.alloc(size, 'old vdb data ');
  await env.lvm.addLv({ vg: 'vg0', lv: 'web-root', size, content: vda, open: isRunning });
  await env.lvm.addLv({ vg: 'vg0', lv: 'web-data-01', size, content: vdb, open: isRunning });
  expect(built.set.path).toBeTruthy();
  return { vda, vdb };
}

/** Flips one byte in the middle of a file of the set (same size). */
async function flipByte(path: string): Promise<void> {
  const fh = await open(path, 'r+');
  try {
    const { size } = await fh.stat();
    const b = Buffer.alloc(1);
    await fh.read(b, 0, 1, Math.floor(size / 2));
    b[0] ^= 0xff;
    await fh.write(b, 0, 1, Math.floor(size / 2));
  } finally {
    await fh.close();
  }
}

describe('restore proves the set good before it stops a domain or writes an LV', () => {
  it('force with one flipped byte in an image: refused, the running domain runs on, its LVs byte-identical; the dry run says the same', async () => {
    // before: the domain was destroyed and vg0/web-root overwritten, then the write failed
    const built = await buildSet(env);
    const old = await runningOriginal(built);
    await flipByte(join(built.set.path, 'disks/vda.img.gz'));
    for (const dryRun of [true, false]) {
      const e = await rejection(run({ set: built.set.path, force: true, dryRun }));
      expect(isRestoreError(e, 'KVMBAK_RESTORE_REFUSED')).toBe(true);
      expect(e.message).toBe(
        `backup set ${built.set.path} is damaged: disks/vda.img.gz: sha256 differs from the manifest (the file is damaged); nothing was changed. ` +
          `Run kvmbak verify ${built.set.path}, or restore another set`,
      );
    }
    // in place too: the check comes first
    await expect(run({ set: built.set.path, force: true, inPlace: true })).rejects.toMatchObject({ code: 'KVMBAK_RESTORE_REFUSED' });
    expect(await domainState('web-01')).toBe('running');
    expect((await readLv(env.lvm, 'vg0', 'web-root')).equals(old.vda)).toBe(true);
    expect((await readLv(env.lvm, 'vg0', 'web-data-01')).equals(old.vdb)).toBe(true);
    expect(env.lvm.changes()).toEqual([]);
    expect(existsSync(join(env.dest, 'web-01', '.lock'))).toBe(false);
  });

  it('an image that is a link to a good copy outside the set is refused, not followed', async () => {
    const built = await buildSet(env);
    await runningOriginal(built);
    const outside = join(env.dir, 'outside.img.gz');
    await rename(join(built.set.path, 'disks/vda.img.gz'), outside);
    await symlink(outside, join(built.set.path, 'disks/vda.img.gz'));
    const e = await rejection(run({ set: built.set.path, force: true }));
    expect(e.message).toMatch(/is damaged: disks\/vda\.img\.gz is a symbolic link, not a regular file; /);
    expect(await domainState('web-01')).toBe('running');
    expect(env.lvm.changes()).toEqual([]);
  });

  it('DEST, DEST/DOMAIN and a folder not named like a set: "not a backup set folder", never "incomplete backup … delete it"', async () => {
    // before: "incomplete backup: no manifest.json in DEST (the backup did not finish); delete it or run kvmbak prune"
    await buildSet(env);
    await mkdir(join(env.dir, 'somewhere'));
    for (const p of [env.dest, join(env.dest, 'web-01'), join(env.dir, 'somewhere')]) {
      const e = await rejection(run({ set: p, dryRun: true }));
      expect(e).toMatchObject({ code: 'KVMBAK_NOT_A_SET' });
      expect(e.message).toBe(
        `${p} is not a backup set folder (DEST/DOMAIN/<set id>, e.g. /backup/web01/20261126T031500Z); kvmbak list DEST shows the sets`,
      );
    }
  });
});

describe('restore over existing LVs writes beside them and swaps names once checked', () => {
  it('a swap that succeeds: new LVs written while the domain runs, stopped only for the swap, old LVs removed, memory resumed', async () => {
    const built = await buildSet(env);
    await runningOriginal(built);
    const states: (string | null)[] = [];
    const events: RestoreProgress[] = [];
    const r = await run({
      set: built.set.path,
      force: true,
      onProgress: (e) => {
        events.push(e);
        if (e.type === 'phase') void domainState('web-01').then((s) => states.push(`${e.phase}:${s}`));
      },
    });
    expect(r).toMatchObject({ memoryRestored: true, stateAfter: 'running', leftoverLvs: [] });
    expect(r.disks.map((d) => [d.target, d.lv, d.created, d.swapped])).toEqual([
      ['vda', 'vg0/web-root', false, true],
      ['vdb', 'vg0/web-data-01', false, true],
    ]);
    expect(env.lvm.changes()).toEqual([
      'lvcreate vg0/web-root-kvmbak-new-s1',
      'lvcreate vg0/web-data-01-kvmbak-new-s2',
      'lvrename vg0/web-root web-root-kvmbak-old-s1',
      'lvrename vg0/web-root-kvmbak-new-s1 web-root',
      'lvchange vg0/web-root',
      'lvrename vg0/web-data-01 web-data-01-kvmbak-old-s2',
      'lvrename vg0/web-data-01-kvmbak-new-s2 web-data-01',
      'lvchange vg0/web-data-01',
      'lvremove vg0/web-root-kvmbak-old-s1',
      'lvremove vg0/web-data-01-kvmbak-old-s2',
    ]);
    // the new LVs were tagged while they had their temporary names, and are not any more
    expect(env.lvm.calls.find((c) => c[0] === 'lvcreate')).toContain('kvmbak-restore');
    expect(env.lvm.row('vg0', 'web-root')!.lv_tags).toBe('');
    expect((await readLv(env.lvm, 'vg0', 'web-root')).equals(built.raw.vda!)).toBe(true);
    expect((await readLv(env.lvm, 'vg0', 'web-data-01')).equals(built.raw.vdb!)).toBe(true);
    const phases = events.filter((e) => e.type === 'phase').map((e) => (e as { phase: string }).phase);
    expect(phases).toEqual([
      'plan',
      'check',
      'create',
      'create',
      'write',
      'write',
      'stop',
      'swap',
      'swap',
      'define',
      'cleanup',
      'cleanup',
      'resume',
      'done',
    ]);
    await new Promise((res) => setTimeout(res, 200));
    // the domain ran until the images were written and checked
    expect(states).toContain('write:running');
    expect(await domainState('web-01')).toBe('running');
  });

  it('a new image that does not check out: nothing swapped, the new LVs removed, the domain never stopped', async () => {
    const built = await buildSet(env);
    const old = await runningOriginal(built);
    const m = await readManifest(built.set.path);
    m.disks[1].image!.rawSha256 = 'f'.repeat(64);
    await writeManifest(built.set.path, m);
    const e = await rejection(run({ set: built.set.path, force: true }));
    expect(isRestoreError(e, 'KVMBAK_RESTORE_FAILED')).toBe(true);
    expect(e.message).toMatch(
      /; restore of web-01 stopped before defining it: removed the LVs it had created \(vg0\/web-data-01-kvmbak-new-s2, vg0\/web-root-kvmbak-new-s1\); the existing LVs are as they were$/,
    );
    expect(env.lvm.changes()).toEqual([
      'lvcreate vg0/web-root-kvmbak-new-s1',
      'lvcreate vg0/web-data-01-kvmbak-new-s2',
      'lvremove vg0/web-data-01-kvmbak-new-s2',
      'lvremove vg0/web-root-kvmbak-new-s1',
    ]);
    expect(await domainState('web-01')).toBe('running');
    expect((await readLv(env.lvm, 'vg0', 'web-root')).equals(old.vda)).toBe(true);
    expect((await readLv(env.lvm, 'vg0', 'web-data-01')).equals(old.vdb)).toBe(true);
  });

  it('a swap that fails after the stop: names swapped back, new LVs removed, the domain defined and started again', async () => {
    const built = await buildSet(env, { mode: 'pause' });
    const old = await runningOriginal(built);
    env.lvm.failRename = 'vg0/web-data-01';
    const e = await rejection(run({ set: built.set.path, force: true }));
    expect(e.message).toMatch(/^lvrename failed .*; restore of web-01 stopped before defining it: /);
    expect(e.message).toMatch(
      /: removed the LVs it had created \(vg0\/web-data-01-kvmbak-new-s2, vg0\/web-root-kvmbak-new-s1\); the existing LVs are as they were; domain web-01 is defined as before and running again \(a cold boot: its memory was lost when it was stopped\)$/,
    );
    expect(env.lvm.changes().filter((c) => c.startsWith('lvrename'))).toEqual([
      'lvrename vg0/web-root web-root-kvmbak-old-s1',
      'lvrename vg0/web-root-kvmbak-new-s1 web-root',
      'lvrename vg0/web-data-01 web-data-01-kvmbak-old-s2',
      'lvrename vg0/web-root web-root-kvmbak-new-s1',
      'lvrename vg0/web-root-kvmbak-old-s1 web-root',
    ]);
    expect(await domainState('web-01')).toBe('running');
    expect((await readLv(env.lvm, 'vg0', 'web-root')).equals(old.vda)).toBe(true);
    expect((await readLv(env.lvm, 'vg0', 'web-data-01')).equals(old.vdb)).toBe(true);
  });

  it('no room for the new LVs: refused naming inPlace; with inPlace the LVs are written over', async () => {
    const built = await buildSet(env, { mode: 'pause' });
    await runningOriginal(built);
    env.lvm.vgs[0]!.vg_free = String(4 << 20);
    const e = await rejection(run({ set: built.set.path, force: true }));
    expect(e.message).toBe(
      'volume group vg0 has 4.0 MiB free but the new LVs for vda, vdb need 8.0 MiB (restore writes beside the current LVs and swaps them out ' +
        'only once the new ones are written and checked); free space there, restore elsewhere with `vg` or `map`, or use `inPlace` to overwrite ' +
        'the current LVs directly (the domain is then stopped first, and a failure part-way loses their old data)',
    );
    expect(await domainState('web-01')).toBe('running');
    const r = await run({ set: built.set.path, force: true, inPlace: true });
    expect(r.disks.map((d) => d.swapped)).toEqual([false, false]);
    expect(env.lvm.changes()).toEqual([]);
    expect((await readLv(env.lvm, 'vg0', 'web-root')).subarray(0, built.raw.vda!.length).equals(built.raw.vda!)).toBe(true);
    expect(await domainState('web-01')).toBe('running');
  });

  it('a thin LV is replaced by a new thin LV in the same pool', async () => {
    const built = await buildSet(env, { mode: 'pause' });
    await env.lvm.addLv({ vg: 'vg0', lv: 'pool0', size: 64 << 20, kind: 'pool' });
    await env.lvm.addLv({ vg: 'vg0', lv: 'web-root', size: 8 << 20, kind: 'thin', pool: 'pool0' });
    await env.lvm.addLv({ vg: 'vg0', lv: 'web-data-01', size: 8 << 20 });
    const r = await run({ set: built.set.path, force: true, noStart: true });
    expect(r.plan.disks.map((d) => d.create)).toEqual([{ kind: 'thin', pool: 'pool0' }, { kind: 'linear' }]);
    expect(env.lvm.calls.find((c) => c[0] === 'lvcreate' && c.includes('web-root-kvmbak-new-s1'))).toEqual([
      'lvcreate',
      '-V',
      `${built.manifest.disks[0].lvSize}b`,
      '--thinpool',
      'pool0',
      '-n',
      'web-root-kvmbak-new-s1',
      '-y',
      '-Wy',
      '--addtag',
      'kvmbak-restore',
      '--',
      'vg0',
    ]);
    expect(env.lvm.row('vg0', 'web-root')!.pool_lv).toBe('pool0');
    expect((await readLv(env.lvm, 'vg0', 'web-root')).equals(built.raw.vda!)).toBe(true);
    expect(await readFile(env.lvm.pathOf('vg0', 'web-root-kvmbak-old-s1')).catch(() => null)).toBeNull();
    await writeFile(join(env.dir, 'done'), '');
  });
});
