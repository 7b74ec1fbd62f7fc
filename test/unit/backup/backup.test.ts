/**
 * Whole backups on libvirt's test driver (real addon, private node copy) with
 * the fake lvm2 world: each mode produces a complete set that real tools
 * check (sha256sum -c, zcat), the VM ends as it began, nothing is left.
 * The sets are in format image (the chunk store's: chunks.test.ts).
 */
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { lstat, readFile, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { type BackupOptions, type BackupProgress, type BackupResult, backup, readManifest } from '../../../src/index.js';
import { type Env, domainDirEntries, setup, sha256, stateOf } from './helpers.js';

let env: Env;
beforeEach(async () => {
  env = await setup();
});
afterEach(async () => {
  await env.cleanup();
});

/** An image set, in small members (64 KiB) so that each disk has several. */
const opts = (domain: string, more: Partial<BackupOptions> = {}): BackupOptions =>
  env.opts(domain, { format: 'image', chunkSize: 64 * 1024, ...more });

/** Every file and folder of a set with its permission bits. */
async function modes(root: string, rel = ''): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  for (const name of (await readdir(join(root, rel))).sort()) {
    const r = rel ? `${rel}/${name}` : name;
    const st = await lstat(join(root, r));
    out[r] = st.mode & 0o777;
    if (st.isDirectory()) Object.assign(out, await modes(root, r));
  }
  return out;
}

/** Checks a finished set with real tools and returns its manifest. */
async function expectCompleteSet(r: BackupResult, origins: Record<string, Buffer>) {
  const m = await readManifest(r.setPath);
  // sha256sum, as an administrator would check the set without kvmbak.
  const check = execFileSync('sha256sum', ['-c', 'SHA256SUMS'], { cwd: r.setPath, encoding: 'utf8' });
  expect(
    check
      .trim()
      .split('\n')
      .every((l) => l.endsWith(': OK')),
  ).toBe(true);
  for (const [target, content] of Object.entries(origins)) {
    const raw = execFileSync('zcat', [join(r.setPath, 'disks', `${target}.img.gz`)], { maxBuffer: 64 << 20 });
    expect(raw.length).toBe(content.length);
    expect(sha256(raw)).toBe(sha256(content));
    const d = m.disks.find((x) => x.target === target)!;
    expect(d.image!.rawSha256).toBe(sha256(content));
  }
  expect(m.disks.map((d) => d.target)).toEqual(Object.keys(origins));
  const all = await modes(r.setPath);
  for (const [rel, mode] of Object.entries(all)) expect([rel, mode]).toEqual([rel, rel === 'disks' ? 0o700 : 0o600]);
  expect((await lstat(r.setPath)).mode & 0o777).toBe(0o700);
  // Nothing but the set stays under DEST/DOMAIN: no journal, no lock.
  expect(await domainDirEntries(env.dest, m.domain.name)).toEqual([r.setPath.split('/').pop()]);
  expect(env.fake.snapshots()).toEqual([]);
  return m;
}

describe('backup in each mode', () => {
  it('save: memory state + every disk as it was at snapshot time; the VM runs again', async () => {
    const before = {
      vda: await readFile(env.fake.lv('vg0', 'web-root').file),
      vdb: await readFile(env.fake.lv('vg0', 'web-data').file),
    };
    // The guest writes on after its snapshots exist: the images must not see it.
    env.fake.at('lvcreate', 2, () => writeFile(env.fake.lv('vg0', 'web-root').file, Buffer.alloc(before.vda.length, 0x55)), true);
    const events: BackupProgress[] = [];
    const r = await backup(opts('web-01', { onProgress: (e) => events.push(e) }), env.ctx);
    expect(sha256(await readFile(env.fake.lv('vg0', 'web-root').file))).toBe(sha256(Buffer.alloc(before.vda.length, 0x55)));
    const m = await expectCompleteSet(r, before);
    expect(r).toMatchObject({ domain: 'web-01', mode: 'save', stateBefore: 'running', stateAfter: 'running' });
    expect(await stateOf(env.hv, 'web-01')).toBe('running');
    expect(r.downtimeMs).toBeGreaterThanOrEqual(0);
    expect(m.memory).not.toBeNull();
    const state = await readFile(join(r.setPath, 'memory.state'));
    expect(state.subarray(0, 14).toString('latin1')).toBe('TestGuestMagic');
    expect(m.memory!.sha256).toBe(sha256(state));
    expect(m.skipped).toEqual([{ target: 'sda', device: 'cdrom', reason: 'cdrom: removable media are not backed up' }]);
    expect(m.disks.map((d) => [d.target, d.source, d.vg, d.lv, d.pool, d.lvSize, d.snapshot.size])).toEqual([
      ['vda', '/dev/vg0/web-root', 'vg0', 'web-root', 'vg0', 2 << 20, 2 << 20],
      ['vdb', '/dev/vg0/web-data', 'vg0', 'web-data', 'vg0', 1 << 20, 1 << 20],
    ]);
    const xml = await readFile(join(r.setPath, 'domain.xml'), 'utf8');
    expect(xml).toContain('<name>web-01</name>');
    // The phases, in order (archive progress aside; 'recover' only when an earlier run left something).
    const phases = events.flatMap((e) => (e.type === 'phase' ? [e.phase] : []));
    expect(phases).toEqual(['plan', 'prepare', 'save', 'snapshot', 'snapshot', 'resume', 'archive', 'archive', 'cleanup', 'commit', 'done']);
    // Snapshots were tagged kvmbak + the run + this process, made with the planned size.
    const creates = env.fake.calls('lvcreate');
    expect(creates).toHaveLength(2);
    expect(creates[0]).toEqual([
      'lvcreate',
      '-s',
      '-L',
      `${2 << 20}b`,
      '-n',
      expect.stringMatching(/^web-root-kvmbak-\d{8}t\d{6}z$/),
      '--addtag',
      'kvmbak',
      '--addtag',
      expect.stringMatching(/^kvmbak-run-\d{8}t\d{6}z-6695eb01$/),
      '--addtag',
      expect.stringMatching(new RegExp(`^kvmbak-owner-${process.pid}-\\d+-[0-9a-f]{8}$`)),
      '--',
      'vg0/web-root',
    ]);
    expect(env.fake.calls('lvremove')).toHaveLength(2);
    // lvm2 ran in the C locale with fd warnings off.
    expect(env.fake.options.every((o) => o?.env?.LC_ALL === 'C' && o.env.LVM_SUPPRESS_FD_WARNINGS === '1')).toBe(true);
  });

  it('pause: no memory state; the VM is paused only around the snapshots', async () => {
    const before = { vda: await readFile(env.fake.lv('vg0', 'web-root').file), vdb: await readFile(env.fake.lv('vg0', 'web-data').file) };
    const states: string[] = [];
    env.fake.at('lvcreate', 1, async () => void states.push(await stateOf(env.hv, 'web-01')));
    const r = await backup(opts('web-01', { mode: 'pause' }), env.ctx);
    const m = await expectCompleteSet(r, before);
    expect(m.memory).toBeNull();
    expect(m.mode).toBe('pause');
    expect(states).toEqual(['paused']);
    expect(r.stateAfter).toBe('running');
    expect(r.downtimeMs).toBeGreaterThanOrEqual(0);
    expect(existsSync(join(r.setPath, 'memory.state'))).toBe(false);
  });

  it('the window runs lvcreate only: no lvm2 report while the VM is held', async () => {
    const seen: { state: string; reports: number }[] = [];
    const note = async (): Promise<void> =>
      void seen.push({ state: await stateOf(env.hv, 'web-01'), reports: env.fake.calls('lvs').length + env.fake.calls('vgs').length });
    env.fake.at('lvcreate', 1, note);
    env.fake.at('lvcreate', 2, note, true);
    const r = await backup(opts('web-01', { mode: 'pause' }), env.ctx);
    expect(r.stateAfter).toBe('running');
    expect(seen.map((x) => x.state)).toEqual(['paused', 'paused']);
    expect(seen[1]!.reports).toBe(seen[0]!.reports);
  });

  it('quiesce: the guest agent freezes and thaws; no downtime (the test driver has no agent timeout call)', async () => {
    const before = { vda: await readFile(env.fake.lv('vg0', 'web-root').file), vdb: await readFile(env.fake.lv('vg0', 'web-data').file) };
    const warnings: string[] = [];
    const r = await backup(opts('web-01', { mode: 'quiesce', onProgress: (e) => e.type === 'warning' && warnings.push(e.message) }), env.ctx);
    const m = await expectCompleteSet(r, before);
    expect(m).toMatchObject({ mode: 'quiesce', downtimeMs: 0, memory: null });
    expect(warnings).toEqual([expect.stringMatching(/cannot set the guest agent timeout of web-01 .*using libvirt's default/)]);
    // Every filesystem was thawed: freezing now freezes both of the test driver's.
    const d = await env.hv.lookupDomain('web-01');
    try {
      expect(await d.fsFreeze()).toBe(2);
      await d.fsThaw();
    } finally {
      d.free();
    }
  });

  it('offline: a shut-off domain is snapshotted as it is and stays off', async () => {
    const before = { vda: await readFile(env.fake.lv('vg1', 'db-root').file) };
    const r = await backup(opts('db-01'), env.ctx);
    const m = await expectCompleteSet(r, before);
    expect(m).toMatchObject({ mode: 'offline', downtimeMs: null, memory: null, domain: { stateBefore: 'shutoff' } });
    expect(m.disks[0].pool).toBeNull(); // no libvirt pool covers vg1
    expect(r.stateAfter).toBe('shutoff');
  });

  it('pause of a paused domain: left paused, never resumed', async () => {
    const before = { vda: await readFile(env.fake.lv('vg0', 'app-root').file) };
    const r = await backup(opts('app-01', { mode: 'pause' }), env.ctx);
    await expectCompleteSet(r, before);
    expect(r).toMatchObject({ stateBefore: 'paused', stateAfter: 'paused', downtimeMs: null });
  });

  it('save of a paused domain: restored, and paused again (the test driver restores it running)', async () => {
    const before = { vda: await readFile(env.fake.lv('vg0', 'app-root').file) };
    const r = await backup(opts('app-01'), env.ctx);
    const m = await expectCompleteSet(r, before);
    expect(m.mode).toBe('save');
    expect(r).toMatchObject({ stateBefore: 'paused', stateAfter: 'paused' });
    expect(await stateOf(env.hv, 'app-01')).toBe('paused');
  });

  it('a volume disk: resolved through its libvirt pool', async () => {
    const before = { vda: await readFile(env.fake.lv('vg0', 'vol-root').file) };
    const r = await backup(opts('vol-01', { mode: 'pause' }), env.ctx);
    const m = await expectCompleteSet(r, before);
    expect(m.disks[0]).toMatchObject({ source: '/dev/vg0/vol-root', vg: 'vg0', lv: 'vol-root', pool: 'vg0' });
  });

  it('the bypass-cache flag is dropped with a warning where the driver rejects it', async () => {
    const warnings: string[] = [];
    const r = await backup(opts('web-01', { onProgress: (e) => e.type === 'warning' && warnings.push(e.message) }), {
      ...env.ctx,
      bypassCache: true,
    });
    expect(r.stateAfter).toBe('running');
    expect(warnings).toEqual([expect.stringContaining('does not support bypassing the page cache')]);
    await readManifest(r.setPath);
  });

  it('a dry run plans and touches nothing', async () => {
    const r = await backup(opts('web-01', { dryRun: true }), env.ctx);
    expect(r).toMatchObject({ dryRun: true, setPath: '', mode: 'save', plan: { domain: 'web-01' } });
    expect(await readdir(env.dest)).toEqual([]);
    expect(env.fake.calls().map((c) => c[0])).toEqual(['lvs', 'lvs', 'vgs']);
    expect(await stateOf(env.hv, 'web-01')).toBe('running');
  });

  it('two backups in a row make two sets', async () => {
    const a = await backup(opts('web-01', { mode: 'pause' }), env.ctx);
    const b = await backup(opts('web-01', { mode: 'pause' }), env.ctx);
    expect(a.setPath).not.toBe(b.setPath);
    expect((await domainDirEntries(env.dest, 'web-01')).length).toBe(2);
    expect(env.fake.snapshots()).toEqual([]);
  });
});
