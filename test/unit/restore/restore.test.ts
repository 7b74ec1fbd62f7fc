/**
 * restore() end to end on the host: real sets (packImage images, the test
 * driver's own XML and save image), the libvirt test driver (a private
 * node.xml copy per test) and FakeLvm (captured lvm2 rows, LVs as files).
 */
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { open, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Lvm } from '../../../src/lvm/index.js';
import { parseDomainDisks } from '../../../src/libvirt/index.js';
import { readManifest, writeManifest } from '../../../src/manifest/index.js';
import { acquireLock } from '../../../src/store/index.js';
import { type RestoreOptions, type RestoreProgress, isRestoreError, restore } from '../../../src/restore/index.js';
import { type BuiltSet, type TestEnv, buildSet, dropWeb01, readLv, resign, testEnv } from './helpers.js';
import { rejection } from '../../support/rejection.js';

let env: TestEnv;
let lvm: Lvm;
beforeEach(async () => {
  env = await testEnv();
  lvm = new Lvm(env.lvm);
});
afterEach(async () => {
  await env.cleanup();
});

const run = (o: Omit<RestoreOptions, 'set'> & { set: string }) =>
  restore({ threads: 2, ...o }, { hypervisor: env.hv, lvm, newMac: macs(), newUuid: () => '11111111-2222-4333-8444-555555555555' });

function macs(): () => string {
  let n = 0;
  return () => `52:54:00:aa:bb:${(++n).toString(16).padStart(2, '0')}`;
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

async function domainXml(name: string): Promise<string> {
  const d = await env.hv.lookupDomain(name);
  try {
    return await d.xml({ inactive: true });
  } finally {
    d.free();
  }
}

/** Nothing was changed: no LV command but reports, no lock left behind. */
function expectUntouched(built: BuiltSet): void {
  expect(env.lvm.changes()).toEqual([]);
  expect(existsSync(join(env.dest, 'web-01', '.lock'))).toBe(false);
  expect(existsSync(built.set.path)).toBe(true);
}

describe('restore: a VM the host lost', () => {
  it('creates the LVs, writes and verifies every image, defines the domain and resumes it from its memory state', async () => {
    const built = await buildSet(env);
    await dropWeb01(env.hv);
    const events: RestoreProgress[] = [];
    const r = await run({ set: built.set.path, onProgress: (e) => events.push(e) });

    expect(env.lvm.changes()).toEqual(['lvcreate vg0/web-root', 'lvcreate vg0/web-data-01']);
    // created at the recorded LV size (lvm2 rounds it up to whole 4 MiB extents)
    expect(env.lvm.calls.find((c) => c[0] === 'lvcreate')).toEqual([
      'lvcreate',
      '-L',
      `${built.manifest.disks[0].lvSize}b`,
      '-n',
      'web-root',
      '-y',
      '-Wy',
      '-Zy',
      '--',
      'vg0',
    ]);
    expect((await readLv(env.lvm, 'vg0', 'web-root')).equals(built.raw.vda!)).toBe(true);
    expect((await readLv(env.lvm, 'vg0', 'web-data-01')).equals(built.raw.vdb!)).toBe(true);
    expect(r).toMatchObject({
      domain: 'web-01',
      uuid: built.manifest.domain.uuid,
      dryRun: false,
      memoryRestored: true,
      started: false,
      stateAfter: 'running',
    });
    expect(r.disks.map((d) => [d.target, d.lv, d.created, d.sha256, d.mode])).toEqual([
      ['vda', 'vg0/web-root', true, built.manifest.disks[0].image!.rawSha256, 'parallel'],
      ['vdb', 'vg0/web-data-01', true, built.manifest.disks[1].image!.rawSha256, 'parallel'],
    ]);
    expect(await domainState('web-01')).toBe('running');
    // disks stayed where they were: domain.xml's sources unchanged
    expect(
      parseDomainDisks(await domainXml('web-01'))
        .slice(0, 2)
        .map((d) => d.source),
    ).toEqual(['/dev/vg0/web-root', '/dev/vg0/web-data-01']);
    // progress: phases in order, byte counts per disk, lock released
    const phases = events.filter((e) => e.type === 'phase').map((e) => (e as { phase: string }).phase);
    expect(phases).toEqual(['plan', 'check', 'create', 'create', 'write', 'write', 'define', 'resume', 'done']);
    const lastWrite = events.filter((e) => e.type === 'write' && e.target === 'vdb').at(-1);
    expect(lastWrite).toMatchObject({ bytesDone: built.raw.vdb!.length, bytesTotal: built.raw.vdb!.length });
    expect(existsSync(join(env.dest, 'web-01', '.lock'))).toBe(false);
  });

  it('a set without a memory state (mode pause) is started; --no-start leaves it shut off', async () => {
    const built = await buildSet(env, { mode: 'pause' });
    await dropWeb01(env.hv);
    const r = await run({ set: built.set.path, noStart: true });
    expect(r).toMatchObject({ memoryRestored: false, started: false, stateAfter: 'shutoff' });
    expect(r.plan.run).toBe('none');

    // again over the same LVs and domain: --force replaces both, and this time starts it
    const again = await run({ set: built.set.path, force: true });
    expect(again).toMatchObject({ started: true, stateAfter: 'running' });
    expect(again.replaced).toEqual([{ name: 'web-01', uuid: built.manifest.domain.uuid, state: 'shutoff', destroy: false, conflict: 'name+uuid' }]);
    expect(again.disks.map((d) => d.created)).toEqual([false, false]);
  });

  it('--dry-run plans everything and touches nothing', async () => {
    const built = await buildSet(env);
    await dropWeb01(env.hv);
    const r = await run({ set: built.set.path, dryRun: true });
    expect(r.dryRun).toBe(true);
    expect(r.plan.disks.map((d) => [d.target, d.action, `${d.vg}/${d.lv}`, d.create])).toEqual([
      ['vda', 'create', 'vg0/web-root', { kind: 'linear' }],
      ['vdb', 'create', 'vg0/web-data-01', { kind: 'linear' }],
    ]);
    expect(r.plan.run).toBe('resume');
    expect(r.plan.steps).toHaveLength(4);
    expect(r.plan.steps[0]).toMatch(/^vda: create vg0\/web-root \(.+, linear\) and write .+ from disks\/vda.img.gz, checking its sha256$/);
    expect(r.plan.steps[3]).toBe(`resume web-01 from memory.state (where it was at ${built.manifest.createdAt})`);
    expectUntouched(built);
    expect(await domainState('web-01')).toBeNull();
  });
});

describe('restore: refusals (nothing touched)', () => {
  it('an existing domain of the same name, unless --force or --name', async () => {
    const built = await buildSet(env);
    const e = await rejection(run({ set: built.set.path }));
    expect(isRestoreError(e, 'KVMBAK_RESTORE_REFUSED')).toBe(true);
    expect(e.message).toBe(
      'a domain named web-01 exists for web-01 (shutoff); restore does not replace a domain unless told: use `force` to replace it, or use `name` to restore a copy beside it',
    );
    expectUntouched(built);
  });

  it('an existing domain with the UUID under another name, and a running one is said to be stopped', async () => {
    const built = await buildSet(env);
    const dom = await env.hv.lookupDomain('web-01');
    const xml = (await dom.xml({ inactive: true })).replace('<name>web-01</name>', '<name>web-renamed</name>');
    await dom.undefine();
    dom.free();
    const renamed = await env.hv.defineDomain(xml);
    await renamed.start();
    renamed.free();
    const e = await rejection(run({ set: built.set.path }));
    expect(e.message).toBe(
      `domain web-renamed has the UUID ${built.manifest.domain.uuid} of web-01 (running); restore does not replace a domain unless told: ` +
        'use `force` to replace it (it is stopped, unsaved state is lost), or use `name` to restore a copy beside it',
    );
    expectUntouched(built);
  });

  it('an existing LV without force; in place, one too small and an inactive one; a busy one', async () => {
    const built = await buildSet(env);
    await dropWeb01(env.hv);
    await env.lvm.addLv({ vg: 'vg0', lv: 'web-root', size: 8 << 20 });
    let e = await rejection(run({ set: built.set.path }));
    expect(e.message).toBe(
      'disk vda → vg0/web-root: the LV exists and restore does not replace data unless told: use `force` to replace it, or restore into a new LV with `vg` or `map`',
    );
    await env.lvm.addLv({ vg: 'vg0', lv: 'web-data-01', size: 4096 });
    // a swap makes a new LV of the recorded size: the small one is only renamed
    expect((await run({ set: built.set.path, force: true, dryRun: true })).plan.disks.map((d) => d.action)).toEqual(['swap', 'swap']);
    e = await rejection(run({ set: built.set.path, force: true, inPlace: true }));
    const need = built.manifest.disks[1].lvSize;
    expect(e.message).toBe(
      `disk vdb → vg0/web-data-01: cannot restore into it: it holds 4096 bytes (4.0 KiB) but the disk needs ${need} (192 KiB); ` +
        `grow it (lvextend -L ${need}b vg0/web-data-01), or restore elsewhere with \`vg\` or \`map\``,
    );
    await env.lvm.addLv({ vg: 'vg0', lv: 'busy', size: 8 << 20, open: true });
    e = await rejection(run({ set: built.set.path, force: true, map: { vdb: '/dev/vg0/busy' } }));
    expect(e.message).toBe(
      'disk vdb → vg0/busy: the LV is in use (open by some process); stop what uses it, or restore elsewhere with `vg` or `map`',
    );
    await env.lvm.addLv({ vg: 'vg0', lv: 'inactive', size: 8 << 20, active: false });
    e = await rejection(run({ set: built.set.path, force: true, inPlace: true, map: { vdb: 'vg0/inactive' } }));
    expect(e.message).toMatch(/^disk vdb → vg0\/inactive: cannot restore into it: it is not active; activate it \(lvchange -ay vg0\/inactive\)/);
    expectUntouched(built);
  });

  it("a missing VG, a full VG, an LV that is another domain's disk", async () => {
    const built = await buildSet(env);
    await dropWeb01(env.hv);
    let e = await rejection(run({ set: built.set.path, vg: 'nope' }));
    expect(e.message).toBe('disk vda → nope/web-root: Volume group nope does not exist on this host: check the name (vgs lists the volume groups)');
    env.lvm.addVg('small', 4 << 20);
    e = await rejection(run({ set: built.set.path, vg: 'small' }));
    expect(e.message).toBe(
      'volume group small has 4.0 MiB free but the new LVs for vda, vdb need 8.0 MiB; free space there, or restore into another VG with `vg` or `map`',
    );
    // db-01 (node.xml) has /dev/vm-ssd/db-01-root as its vda
    env.lvm.addVg('vm-ssd');
    e = await rejection(run({ set: built.set.path, map: { vdb: '/dev/vm-ssd/db-01-root' } }));
    expect(e.message).toBe('disk vdb → vm-ssd/db-01-root: that LV is disk vda of domain db-01; restore into another LV with `vg` or `map`');
    expectUntouched(built);
  });

  it('name (a copy) of a set with a memory state boots the copy from its disks, saying why in one line', async () => {
    // before: refused unless noMemory was added
    const built = await buildSet(env);
    env.lvm.addVg('vg1');
    const r = await run({ set: built.set.path, name: 'web-copy', vg: 'vg1' });
    expect(r).toMatchObject({ domain: 'web-copy', memoryRestored: false, started: true, stateAfter: 'running' });
    expect(r.plan.run).toBe('start');
    expect(r.plan.warnings).toContain(
      "a copy cannot resume the memory state of web-01 (libvirt ties it to the domain's UUID and MAC addresses, which a copy changes): web-copy boots from its disks",
    );
    expect(await domainState('web-01')).toBe('shutoff');
  });

  it('a damaged set: a truncated image, a changed memory state, a missing manifest', async () => {
    const built = await buildSet(env);
    await dropWeb01(env.hv);
    const img = join(built.set.path, 'disks/vdb.img.gz');
    const good = await readFile(img);
    await writeFile(img, good.subarray(0, good.length - 10));
    let e = await rejection(run({ set: built.set.path }));
    expect(e.message).toBe(
      `backup set ${built.set.path} is damaged: disks/vdb.img.gz has ${good.length - 10} bytes, the manifest says ${good.length} (truncated or changed); ` +
        `run kvmbak verify ${built.set.path}, or restore another set`,
    );
    await writeFile(img, good);
    // same size, one byte changed: found by the hash before anything is written
    const fh = await open(join(built.set.path, 'memory.state'), 'r+');
    await fh.write(Buffer.from('X'), 0, 1, 200);
    await fh.close();
    e = await rejection(run({ set: built.set.path }));
    expect(e).toMatchObject({ code: 'KVMBAK_RESTORE_REFUSED' });
    expect(e.message).toBe(
      `backup set ${built.set.path} is damaged: memory.state: sha256 differs from the manifest (the file is damaged); nothing was changed. Restore another set, or this one from its disks with \`noMemory\``,
    );
    expectUntouched(built);
    // --no-memory does not read it: restores from the disks
    const r = await run({ set: built.set.path, noMemory: true });
    expect(r).toMatchObject({ memoryRestored: false, started: true, stateAfter: 'running' });
    await rm(join(built.set.path, 'manifest.json'));
    e = await rejection(run({ set: built.set.path }));
    expect(e).toMatchObject({ name: 'ManifestError', code: 'KVMBAK_MANIFEST_MISSING' });
    expect(e.message).toMatch(/^incomplete backup: no manifest.json in /);
  });

  it('another kvmbak holding the domain lock', async () => {
    const built = await buildSet(env);
    await dropWeb01(env.hv);
    const lock = await acquireLock(env.dest, 'web-01', 'backup');
    try {
      const e = await rejection(run({ set: built.set.path }));
      expect(e).toMatchObject({ name: 'LockError', code: 'KVMBAK_LOCKED' });
      expect(env.lvm.changes()).toEqual([]);
    } finally {
      await lock.release();
    }
  });
});

describe('restore: failures part-way leave nothing half-done', () => {
  it('a raw sha256 mismatch: the created LVs are removed, the domain is not defined', async () => {
    const built = await buildSet(env);
    await dropWeb01(env.hv);
    const m = await readManifest(built.set.path);
    m.disks[1].image!.rawSha256 = 'f'.repeat(64);
    await writeManifest(built.set.path, m);
    const e = await rejection(run({ set: built.set.path }));
    expect(isRestoreError(e, 'KVMBAK_RESTORE_FAILED')).toBe(true);
    expect(e.cause).toMatchObject({ name: 'ArchiveError', code: 'KVMBAK_ARCHIVE_CHECKSUM' });
    expect(e.message).toMatch(/^raw sha256 of image .*disks\/vdb.img.gz is [0-9a-f]{64}, expected f{64}: /);
    expect(e.message).toMatch(/; restore of web-01 stopped before defining it: removed the LVs it had created \(vg0\/web-data-01, vg0\/web-root\)$/);
    expect(e).toMatchObject({ removedLvs: ['vg0/web-data-01', 'vg0/web-root'], createdLvs: [], overwrittenLvs: [], defined: false });
    expect(env.lvm.changes()).toEqual(['lvcreate vg0/web-root', 'lvcreate vg0/web-data-01', 'lvremove vg0/web-data-01', 'lvremove vg0/web-root']);
    expect(await domainState('web-01')).toBeNull();
    expect(existsSync(join(env.dest, 'web-01', '.lock'))).toBe(false);
  });

  it('in place (force + inPlace) over existing LVs and a running domain: says which LVs were overwritten, puts the old definition back', async () => {
    const built = await buildSet(env);
    const dom = await env.hv.lookupDomain('web-01');
    await dom.start();
    dom.free();
    await env.lvm.addLv({ vg: 'vg0', lv: 'web-root', size: 8 << 20, open: async () => (await domainState('web-01')) === 'running' });
    await env.lvm.addLv({ vg: 'vg0', lv: 'web-data-01', size: 8 << 20 });
    const m = await readManifest(built.set.path);
    m.disks[0].image!.rawSha256 = '0'.repeat(64);
    await writeManifest(built.set.path, m);
    const e = await rejection(run({ set: built.set.path, force: true, inPlace: true }));
    expect(e.message).toMatch(
      /; restore of web-01 stopped before defining it: vg0\/web-root was \(partly\) overwritten in place: the old data there is gone; domain web-01 is defined as before \(shut off\)$/,
    );
    expect(e).toMatchObject({ overwrittenLvs: ['vg0/web-root'], removedLvs: [] });
    expect(env.lvm.changes()).toEqual([]);
    expect(await domainState('web-01')).toBe('shutoff');
  });

  it('cancelled while writing: AbortError, created LVs removed', async () => {
    const built = await buildSet(env);
    await dropWeb01(env.hv);
    const ac = new AbortController();
    const e = await rejection(run({ set: built.set.path, signal: ac.signal, onProgress: (ev) => ev.type === 'write' && ac.abort() }));
    expect(e).toMatchObject({ code: 'ABORT_ERR' });
    // both LVs are made before the first image is written; both go
    expect(env.lvm.changes()).toEqual(['lvcreate vg0/web-root', 'lvcreate vg0/web-data-01', 'lvremove vg0/web-data-01', 'lvremove vg0/web-root']);
    expect(await domainState('web-01')).toBeNull();
  });
});

describe('restore: elsewhere', () => {
  it('force + inPlace replaces the running domain: it is stopped first, its LVs overwritten, the memory state resumed', async () => {
    const built = await buildSet(env);
    const dom = await env.hv.lookupDomain('web-01');
    await dom.start();
    dom.free();
    await env.lvm.addLv({ vg: 'vg0', lv: 'web-root', size: 8 << 20, open: async () => (await domainState('web-01')) === 'running' });
    await env.lvm.addLv({ vg: 'vg0', lv: 'web-data-01', size: 8 << 20 });
    const dry = await run({ set: built.set.path, force: true, inPlace: true, dryRun: true });
    expect(dry.plan.steps[0]).toBe('stop domain web-01 (running) at once (virsh destroy), to replace it');
    expect(dry.plan.warnings).toContain('vg0/web-root is larger than the disk was (8.0 MiB > 321 KiB); the bytes past 321 KiB are left as they are');
    const r = await run({ set: built.set.path, force: true, inPlace: true });
    expect(r).toMatchObject({ memoryRestored: true, stateAfter: 'running' });
    expect(r.replaced.map((x) => [x.name, x.state, x.destroy])).toEqual([['web-01', 'running', true]]);
    expect(env.lvm.changes()).toEqual([]);
    expect((await readLv(env.lvm, 'vg0', 'web-root')).equals(built.raw.vda!)).toBe(true);
  });

  it('--name copy with --no-memory into another VG: new UUID, disks rewritten, excluded disk left out, original untouched', async () => {
    const built = await buildSet(env);
    env.lvm.addVg('vg1');
    const r = await run({ set: built.set.path, name: 'web-copy', vg: 'vg1', noMemory: true, map: { vdb: '/dev/vg1/copy-data' } });
    expect(r).toMatchObject({ domain: 'web-copy', uuid: '11111111-2222-4333-8444-555555555555', started: true, stateAfter: 'running' });
    expect(r.plan.droppedDisks).toEqual(['vdc']);
    expect(env.lvm.changes()).toEqual(['lvcreate vg1/web-root', 'lvcreate vg1/copy-data']);
    const disks = parseDomainDisks(await domainXml('web-copy'));
    expect(disks.map((d) => `${d.target}:${d.type}:${d.source ?? ''}`)).toEqual([
      `vda:block:${env.lvm.pathOf('vg1', 'web-root')}`,
      `vdb:block:${env.lvm.pathOf('vg1', 'copy-data')}`,
      'sda:file:',
    ]);
    expect((await readLv(env.lvm, 'vg1', 'copy-data')).equals(built.raw.vdb!)).toBe(true);
    expect(await domainState('web-01')).toBe('shutoff');
    expect(parseDomainDisks(await domainXml('web-01')).map((d) => d.target)).toEqual(['vda', 'vdb', 'vdc', 'sda']);
  });

  it('moved disks with a memory state: resumed with the rewritten XML; the test driver refuses that, which is reported clearly', async () => {
    const built = await buildSet(env);
    await dropWeb01(env.hv);
    env.lvm.addVg('vg1');
    const dry = await run({ set: built.set.path, vg: 'vg1', dryRun: true });
    expect(dry.plan.memoryXml).toBe(true);
    const e = await rejection(run({ set: built.set.path, vg: 'vg1' }));
    expect(isRestoreError(e, 'KVMBAK_RESTORE_NOT_STARTED')).toBe(true);
    expect(e.cause).toMatchObject({ name: 'LibvirtError', code: 'VIR_ERR_ARGUMENT_UNSUPPORTED' });
    expect(e.message).toBe(
      'argument unsupported: xml modification unsupported; the disks of web-01 are restored and the domain is defined, but restore could not resume it ' +
        'from its memory state: libvirt may refuse the saved state with the disks rewritten: start it from its disks with virsh start web-01 (a cold boot)',
    );
    expect(e.defined).toBe(true);
    // defined, pointing at the new LVs, which stay
    expect(await domainState('web-01')).toBe('shutoff');
    expect(
      parseDomainDisks(await domainXml('web-01'))
        .slice(0, 2)
        .map((d) => d.source),
    ).toEqual([env.lvm.pathOf('vg1', 'web-root'), env.lvm.pathOf('vg1', 'web-data-01')]);
    expect(env.lvm.changes()).toEqual(['lvcreate vg1/web-root', 'lvcreate vg1/web-data-01']);
  });

  it('a volume disk (pool/volume) becomes a block disk on its LV, even in place', async () => {
    const built = await buildSet(env);
    await dropWeb01(env.hv);
    const xmlPath = join(built.set.path, 'domain.xml');
    const xml = (await readFile(xmlPath, 'utf8')).replace(
      /<disk type='block' device='disk'>(\s*<driver[^>]*>)\s*<source dev='\/dev\/vg0\/web-root'\/>/,
      "<disk type='volume' device='disk'>$1<source pool='vg0' volume='web-root'/>",
    );
    expect(xml).toContain("<source pool='vg0' volume='web-root'/>");
    await writeFile(xmlPath, xml);
    const m = await readManifest(built.set.path);
    m.domainXml.sha256 = createHash('sha256').update(xml).digest('hex');
    await writeManifest(built.set.path, m);
    await resign(built.set.path);
    const dry = await run({ set: built.set.path, dryRun: true });
    expect(dry.plan.disks.map((d) => [d.target, d.moved, d.toBlock])).toEqual([
      ['vda', false, true],
      ['vdb', false, false],
    ]);
    expect(dry.plan.memoryXml).toBe(true);
    expect(dry.plan.steps[2]).toBe('define domain web-01 with disks vda → vg0/web-root (as a block disk)');
    await run({ set: built.set.path, noMemory: true });
    expect(
      parseDomainDisks(await domainXml('web-01'))
        .slice(0, 2)
        .map((d) => `${d.type}:${d.source}`),
    ).toEqual([`block:${env.lvm.pathOf('vg0', 'web-root')}`, 'block:/dev/vg0/web-data-01']);
  });

  it('thin disks: thin volumes in their recorded pool when it is there, or with --thin-pool; linear (with a note) without; refused for a pool that is not one', async () => {
    const built = await buildSet(env);
    await dropWeb01(env.hv);
    const m = await readManifest(built.set.path);
    m.disks[0] = { ...m.disks[0], thin: true, thinPool: 'pool0', snapshot: { ...m.disks[0].snapshot, size: null, peakPercent: null } };
    await writeManifest(built.set.path, m);
    // The recorded pool is gone: a linear LV, saying so.
    const linear = await run({ set: built.set.path, dryRun: true });
    expect(linear.plan.disks[0].create).toEqual({ kind: 'linear' });
    expect(linear.plan.warnings).toContain(
      'disk vda was a thin volume (pool pool0, which is gone); vg0/web-root is created as a fully allocated LV (use `thinPool` to make it thin)',
    );
    await env.lvm.addLv({ vg: 'vg0', lv: 'pool0', size: 64 << 20, kind: 'pool' });
    await env.lvm.addLv({ vg: 'vg0', lv: 'plain', size: 64 << 20 });
    // The recorded pool is there: the disk comes back as a thin volume in it, no note.
    const back = await run({ set: built.set.path, dryRun: true });
    expect(back.plan.disks[0].create).toEqual({ kind: 'thin', pool: 'pool0' });
    expect(back.plan.warnings.filter((w) => w.includes('thin'))).toEqual([]);
    const e = await rejection(run({ set: built.set.path, thinPool: 'plain' }));
    expect(e.message).toBe('`thinPool` plain: vg0/plain is not a thin pool; name an existing thin pool of vg0 (lvs vg0)');
    const r = await run({ set: built.set.path, thinPool: 'pool0', noMemory: true, noStart: true });
    expect(r.plan.disks.map((d) => d.create)).toEqual([{ kind: 'thin', pool: 'pool0' }, { kind: 'linear' }]);
    expect(env.lvm.calls.find((c) => c[0] === 'lvcreate' && c.includes('web-root'))).toEqual([
      'lvcreate',
      '-V',
      `${m.disks[0].lvSize}b`,
      '--thinpool',
      'pool0',
      '-n',
      'web-root',
      '-y',
      '-Wy',
      '--',
      'vg0',
    ]);
    expect((await readLv(env.lvm, 'vg0', 'web-root')).equals(built.raw.vda!)).toBe(true);
    expect((await stat(env.lvm.pathOf('vg0', 'web-root'))).size).toBe(built.raw.vda!.length);
  });
});
