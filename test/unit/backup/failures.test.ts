/**
 * A failure injected at every step of a backup: every lvm2 call (the fake
 * lvm2 fails the nth call of each command, once or from then on) and every
 * libvirt call (a Proxy in front of the real test-driver objects fails the
 * nth call of each method, before or after it acted). Whatever fails, the VM
 * comes back, the snapshots go, no manifest is written, the partial set goes,
 * the lock is released; what cannot be undone is kept in the journal and
 * `recover` finishes it.
 */
import { existsSync, mkdirSync, rmSync } from 'node:fs';
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { type BackupMode, type BackupOptions, type BackupResult, VmNotResumedError, backup, readManifest, recover } from '../../../src/index.js';
import { type Env, type Fault, type FaultyMethod, defaultWorld, domainDirEntries, expectNothingLeft, faulty, setup, stateOf } from './helpers.js';

let env: Env | undefined;
afterEach(async () => {
  await env?.cleanup();
  env = undefined;
});

/** No periodic polling: the lvm2 calls of a run are the same every time. */
const STEADY: Partial<BackupOptions> = { watchIntervalMs: 60_000 };

type Outcome = { ok: true; result: BackupResult } | { ok: false; error: Error };

async function rejectionOf(p: Promise<unknown>): Promise<Error> {
  const out = await attempt(p as Promise<BackupResult>);
  if (out.ok) throw new Error('expected the backup to fail, but it succeeded');
  return out.error;
}

async function attempt(p: Promise<BackupResult>): Promise<Outcome> {
  return p.then(
    (result) => ({ ok: true as const, result }),
    (error: unknown) => ({ ok: false as const, error: error as Error }),
  );
}

/**
 * The invariant after any injected failure. A success is a complete set with
 * nothing left. A failure leaves nothing, except what the journal keeps for
 * recover (a held VM with its memory state, snapshots lvm2 would not remove):
 * then `recover` (with the faults cleared) leaves nothing.
 */
async function expectInvariant(e: Env, domain: string, state: string, out: Outcome, clear: () => void): Promise<void> {
  const entries = await domainDirEntries(e.dest, domain);
  expect(entries).not.toContain('.lock');
  if (out.ok) {
    await readManifest(out.result.setPath);
    await expectThawed(e, domain);
    expect(out.result.stateAfter).toBe(state);
    expect(await stateOf(e.hv, domain)).toBe(state);
    expect(e.fake.snapshots()).toEqual([]);
    expect(entries).toEqual([out.result.setPath.split('/').pop()]);
    return;
  }
  // Never a manifest after a failure.
  for (const n of entries.filter((x) => !x.startsWith('.'))) expect(existsSync(join(e.dest, domain, n, 'manifest.json'))).toBe(false);
  const journals = entries.filter((x) => x.startsWith('.journal-'));
  if (out.error instanceof VmNotResumedError) {
    // Shut off or paused (save, pause); still running but frozen (quiesce).
    if (!out.error.message.includes('frozen filesystems')) expect(await stateOf(e.hv, domain)).not.toBe(state);
    expect(journals).toHaveLength(1);
    expect(e.fake.snapshots()).toEqual([]);
  } else {
    expect(await stateOf(e.hv, domain)).toBe(state);
    if (journals.length === 0) {
      expect(e.fake.snapshots()).toEqual([]);
      expect(entries).toEqual([]);
      return;
    }
    // Snapshots lvm2 would not remove (or list, so kvmbak cannot tell they are gone): the
    // journal names them for recover; the partial set is gone already.
    expect(entries).toEqual(journals);
  }
  clear();
  const r = await recover({ dest: e.dest }, { hypervisor: e.hv, lvm: e.fake.lvm });
  expect(r.errors).toEqual([]);
  await expectNothingLeft(e, domain, state);
  await expectThawed(e, domain);
}

/** No filesystem of the domain is frozen: a freeze now freezes both of the test driver's. */
async function expectThawed(e: Env, domain: string): Promise<void> {
  if ((await stateOf(e.hv, domain)) !== 'running') return;
  const d = await e.hv.lookupDomain(domain);
  try {
    expect(await d.fsFreeze()).toBe(2);
    expect(await d.fsThaw()).toBe(2);
  } finally {
    d.free();
  }
}

/** How often each lvm2 command and libvirt method runs in a clean backup with these options. */
async function census(domain: string, mode: BackupMode): Promise<{ lvm: Record<string, number>; libvirt: Record<string, number> }> {
  const e = await setup();
  try {
    const f = faulty(e.hv, {
      save: { calls: [] },
      restoreDomain: { calls: [] },
      suspend: { calls: [] },
      resume: { calls: [] },
      fsFreeze: { calls: [] },
      fsThaw: { calls: [] },
      info: { calls: [] },
    });
    await backup(e.opts(domain, { ...STEADY, mode }), { ...e.ctx, hypervisor: f.hv });
    const lvm: Record<string, number> = {};
    for (const c of e.fake.calls()) lvm[c[0]] = (lvm[c[0]] ?? 0) + 1;
    return { lvm, libvirt: f.counts };
  } finally {
    await e.cleanup();
  }
}

const CASES: [string, BackupMode, string][] = [
  ['web-01', 'save', 'running'],
  ['web-01', 'pause', 'running'],
  ['web-01', 'quiesce', 'running'],
  ['app-01', 'save', 'paused'],
  ['db-01', 'offline', 'shutoff'],
];

// The lvm2 calls do not depend on how the VM is held (the libvirt matrix covers that): two disks live, one disk offline.
describe.each([CASES[0], CASES[4]])('%s in mode %s: an lvm2 failure at every call', (domain, mode, state) => {
  // Dozens of whole backups in one test: the default 30 s is too short on a loaded machine.
  it('fails once, or from then on: the invariant holds', { timeout: 300_000 }, async () => {
    const { lvm } = await census(domain, mode);
    expect(lvm.lvcreate).toBeGreaterThan(0);
    for (const [command, n] of Object.entries(lvm)) {
      for (let i = 0; i < n; i++) {
        for (const count of [1, 1000]) {
          env = await setup();
          env.fake.fail(command, { skip: i, count });
          const out = await attempt(backup(env.opts(domain, { ...STEADY, mode }), env.ctx));
          const e = env;
          await expectInvariant(env, domain, state, out, () => (e.fake.state.failures = [])).catch((x: unknown) => {
            throw new Error(`${command} call ${i + 1} failing ${count === 1 ? 'once' : 'from then on'}: ${(x as Error).message}`, { cause: x });
          });
          await env.cleanup();
          env = undefined;
        }
      }
    }
  });
});

describe.each(CASES)('%s in mode %s: a libvirt failure at every call', (domain, mode, state) => {
  it('fails before or after acting, once or from then on: the invariant holds', { timeout: 300_000 }, async () => {
    const { libvirt } = await census(domain, mode);
    for (const [method, n] of Object.entries(libvirt)) {
      for (let i = 1; i <= n; i++) {
        for (const variant of [{ calls: [i] }, { calls: [i], after: true }, { calls: Array.from({ length: 20 }, (_, k) => i + k) }] as Fault[]) {
          env = await setup();
          const plan: Partial<Record<FaultyMethod, Fault>> = { [method]: variant };
          const f = faulty(env.hv, plan);
          const out = await attempt(backup(env.opts(domain, { ...STEADY, mode }), { ...env.ctx, hypervisor: f.hv }));
          await expectInvariant(env, domain, state, out, () => delete plan[method as FaultyMethod]).catch((x: unknown) => {
            throw new Error(`${method} call ${i} failing ${JSON.stringify(variant)}: ${(x as Error).message}`, { cause: x });
          });
          await env.cleanup();
          env = undefined;
        }
      }
    }
  });
});

describe('bringing the VM back', () => {
  it('a restore failing once is retried: the backup succeeds', async () => {
    env = await setup();
    const f = faulty(env.hv, { restoreDomain: { calls: [1] } });
    const r = await backup(env.opts('web-01'), { ...env.ctx, hypervisor: f.hv });
    expect(f.counts.restoreDomain).toBe(2);
    expect(r.stateAfter).toBe('running');
    await readManifest(r.setPath);
  });

  it('a restore that worked but reported an error is not repeated', async () => {
    env = await setup();
    const f = faulty(env.hv, { restoreDomain: { calls: [1], after: true } });
    const r = await backup(env.opts('web-01'), { ...env.ctx, hypervisor: f.hv });
    expect(f.counts.restoreDomain).toBe(1);
    expect(r.stateAfter).toBe('running');
  });

  it('a restore failing twice: VmNotResumedError, memory state and journal kept, snapshots gone; recover restores the VM', async () => {
    env = await setup();
    const f = faulty(env.hv, { restoreDomain: { calls: [1, 2] } });
    const err = await rejectionOf(backup(env.opts('web-01'), { ...env.ctx, hypervisor: f.hv }));
    expect(err).toBeInstanceOf(VmNotResumedError);
    expect(err).toMatchObject({ code: 'KVMBAK_VM_NOT_RESUMED', domain: 'web-01' });
    expect(err.message).toMatch(
      /^domain web-01 is shut off and could not be restored from .*\/memory\.state \(internal error: qemu unexpectedly closed the monitor\); run kvmbak recover, or virsh restore .*\/memory\.state$/,
    );
    expect(await stateOf(env.hv, 'web-01')).toBe('shutoff');
    expect(env.fake.snapshots()).toEqual([]);
    const entries = await domainDirEntries(env.dest, 'web-01');
    expect(entries).toEqual([expect.stringMatching(/^\.journal-\d{8}T\d{6}Z\.json$/), expect.stringMatching(/^\d{8}T\d{6}Z$/)]);
    const set = join(env.dest, 'web-01', entries[1]);
    expect((await readdir(set)).sort()).toEqual(['disks', 'domain.xml', 'memory.state']);

    const r = await recover({ dest: env.dest }, { hypervisor: env.hv, lvm: env.fake.lvm });
    expect(r.errors).toEqual([]);
    expect(r.runs).toEqual([
      {
        domain: 'web-01',
        setId: entries[1],
        journal: join(env.dest, 'web-01', entries[0]),
        actions: [`restored web-01 from its saved memory ${set}/memory.state`, `deleted the partial set ${set}`],
      },
    ]);
    await expectNothingLeft(env, 'web-01', 'running');
  });

  it('a resume failing twice (pause): VmNotResumedError; recover resumes', async () => {
    env = await setup();
    const f = faulty(env.hv, { resume: { calls: [1, 2] } });
    const err = await rejectionOf(backup(env.opts('web-01', { mode: 'pause' }), { ...env.ctx, hypervisor: f.hv }));
    expect(err).toBeInstanceOf(VmNotResumedError);
    expect(err.message).toMatch(/^domain web-01 is paused and could not be resumed \(.*\); run kvmbak recover, or virsh resume web-01$/);
    expect(await stateOf(env.hv, 'web-01')).toBe('paused');
    const r = await recover({ dest: env.dest }, { hypervisor: env.hv, lvm: env.fake.lvm });
    expect(r.runs[0].actions[0]).toBe('resumed web-01');
    await expectNothingLeft(env, 'web-01', 'running');
  });

  it('a freeze failing: QuiesceError, or with --quiesce-fallback pause a paused backup', async () => {
    env = await setup();
    const f = faulty(env.hv, { fsFreeze: { calls: [1, 2] } });
    const ctx = { ...env.ctx, hypervisor: f.hv };
    await expect(backup(env.opts('web-01', { mode: 'quiesce' }), ctx)).rejects.toMatchObject({
      code: 'KVMBAK_QUIESCE',
      message:
        'the guest agent of web-01 did not freeze its filesystems (Guest agent is not responding: QEMU guest agent is not ' +
        'connected); install and start qemu-guest-agent in the guest, or use `mode` pause (or `quiesceFallback` pause)',
    });
    await expectNothingLeft(env, 'web-01', 'running');
    const warnings: string[] = [];
    const r = await backup(
      env.opts('web-01', { mode: 'quiesce', quiesceFallback: 'pause', onProgress: (e) => e.type === 'warning' && warnings.push(e.message) }),
      ctx,
    );
    expect(r.mode).toBe('pause');
    expect((await readManifest(r.setPath)).mode).toBe('pause');
    expect(warnings).toContainEqual(expect.stringMatching(/^guest agent of web-01 did not answer .*; falling back to `mode` pause$/));
  });
});

describe('lvm2 failures', () => {
  it('a failing lvcreate: the VM is back first, the snapshots made are removed', async () => {
    env = await setup();
    env.fake.fail('lvcreate', { skip: 1, stderr: '  Volume group "vg0" has insufficient free space (0 extents): 1 required.\n' });
    const order: string[] = [];
    const e = env;
    env.fake.at('lvremove', 1, async () => void order.push(await stateOf(e.hv, 'web-01')));
    await expect(backup(env.opts('web-01'), env.ctx)).rejects.toMatchObject({
      code: 'KVMBAK_LVM_COMMAND',
      message: 'lvcreate failed (exit code 5): Volume group "vg0" has insufficient free space (0 extents): 1 required.',
    });
    expect(order).toEqual(['running']);
    expect(env.fake.calls('lvremove')).toHaveLength(1);
    await expectNothingLeft(env, 'web-01', 'running');
  });

  it('a snapshot lvm2 will not remove stays in the journal; recover removes it once lvm2 does', async () => {
    env = await setup();
    env.fake.fail('lvremove', { count: 1000 });
    await expect(backup(env.opts('web-01'), env.ctx)).rejects.toMatchObject({
      code: 'KVMBAK_SNAPSHOT_REMOVE',
      message: expect.stringMatching(
        /^could not remove snapshots: lvremove failed \(exit code 5\): Logical volume vg0\/snap in use\..*; run kvmbak recover$/,
      ),
    });
    expect(await stateOf(env.hv, 'web-01')).toBe('running');
    expect(env.fake.snapshots()).toHaveLength(2);
    expect(await domainDirEntries(env.dest, 'web-01')).toEqual([expect.stringMatching(/^\.journal-/)]);
    // lvremove works again.
    env.fake.state.failures = [];
    const r = await recover({ dest: env.dest }, { hypervisor: env.hv, lvm: env.fake.lvm });
    expect(r.errors).toEqual([]);
    expect(r.runs[0].actions).toEqual([
      expect.stringMatching(/^removed snapshot vg0\/web-root-kvmbak-/),
      expect.stringMatching(/^removed snapshot vg0\/web-data-kvmbak-/),
    ]);
    await expectNothingLeft(env, 'web-01', 'running');
  });

  it('a failing lvremove is tried once more', async () => {
    env = await setup();
    env.fake.fail('lvremove', { count: 1 });
    const r = await backup(env.opts('web-01'), env.ctx);
    await readManifest(r.setPath);
    expect(env.fake.calls('lvremove')).toHaveLength(3);
    expect(env.fake.snapshots()).toEqual([]);
  });
});

describe('while archiving', () => {
  it('a snapshot invalidated mid-archive fails the backup: SnapshotInvalidError, no manifest', async () => {
    env = await setup();
    let done = false;
    const e = env;
    const onProgress: BackupOptions['onProgress'] = (p) => {
      if (p.type === 'archive' && p.target === 'vda' && !done) {
        done = true;
        e.fake.invalidate(e.fake.snapshots()[0].lv);
      }
    };
    await expect(backup(env.opts('web-01', { onProgress }), env.ctx)).rejects.toMatchObject({
      name: 'SnapshotInvalidError',
      code: 'KVMBAK_SNAPSHOT_INVALID',
      target: 'vda',
      message: expect.stringMatching(
        /^snapshot vg0\/web-root-kvmbak-\S+ of disk vda overflowed \(the guest wrote more than its 2 MiB copy-on-write area\) and is invalid: the backup is discarded; run it again with a larger `snapshotSize` or free space in vg0 so kvmbak can extend it$/,
      ),
    });
    await expectNothingLeft(env, 'web-01', 'running');
  });

  it('a snapshot filling up is extended; the peak and the new size are recorded', async () => {
    env = await setup();
    const e = env;
    env.fake.at('lvcreate', 1, () => e.fake.setUsage(e.fake.snapshots()[0].lv, 85), true);
    const extended: unknown[] = [];
    const r = await backup(env.opts('web-01', { onProgress: (p) => p.type === 'snapshot-extended' && extended.push(p) }), env.ctx);
    const ext = env.fake.calls('lvextend');
    expect(ext).toEqual([['lvextend', '-L', `+${1 << 20}b`, '--', expect.stringMatching(/^vg0\/web-root-kvmbak-/)]]);
    expect(extended).toEqual([{ type: 'snapshot-extended', domain: 'web-01', target: 'vda', fromBytes: 2 << 20, toBytes: 3 << 20, percent: 85 }]);
    const m = await readManifest(r.setPath);
    expect(m.disks[0].snapshot).toMatchObject({ size: 2 << 20, peakPercent: 85, extendedTo: 3 << 20 });
    expect(m.disks[1].snapshot).toMatchObject({ peakPercent: 0 });
    expect(r.disks[0]).toMatchObject({ snapshotPeakPercent: 85, snapshotExtendedTo: 3 << 20 });
  });

  it('a snapshot filling up in a full VG: one warning, the backup goes on', async () => {
    const spec = defaultWorld();
    spec.vgs[0].size = 9 << 20; // 6 MiB of LVs + 3 MiB of snapshots
    env = await setup(spec);
    const e = env;
    env.fake.at('lvcreate', 1, () => e.fake.setUsage(e.fake.snapshots()[0].lv, 90), true);
    const warnings: string[] = [];
    const r = await backup(env.opts('web-01', { watchIntervalMs: 1, onProgress: (p) => p.type === 'warning' && warnings.push(p.message) }), env.ctx);
    expect(env.fake.calls('lvextend')).toEqual([]);
    expect(warnings).toEqual([expect.stringMatching(/^snapshot vg0\/web-root-kvmbak-\S+ is 90\.0% full and vg0 has no free space to extend it$/)]);
    expect(r.disks[0].snapshotPeakPercent).toBe(90);
  });

  it.each([
    [
      'image',
      {
        code: 'KVMBAK_SOURCE_UNREADABLE',
        message: expect.stringMatching(/^source \S+web-root-kvmbak-\S+ is a folder; give a file or a block device$/),
      },
    ],
    ['chunks', { code: 'KVMBAK_CHUNK_STORE_IO', message: expect.stringMatching(/^cannot read the disk at byte 0: /) }],
  ] as const)('an archive (format %s) that cannot read its snapshot fails cleanly', async (format, error) => {
    env = await setup();
    const e = env;
    env.fake.at(
      'lvcreate',
      1,
      () => {
        const f = e.fake.snapshots()[0].file;
        rmSync(f);
        mkdirSync(f); // reading it fails with EISDIR
      },
      true,
    );
    await expect(backup(env.opts('web-01', { format }), env.ctx)).rejects.toMatchObject(error);
    await expectNothingLeft(env, 'web-01', 'running');
  });

  it('an abort mid-archive cancels cleanly with an AbortError', async () => {
    env = await setup();
    const ac = new AbortController();
    const onProgress: BackupOptions['onProgress'] = (p) => {
      if (p.type === 'archive') ac.abort();
    };
    await expect(backup(env.opts('web-01', { signal: ac.signal, onProgress }), env.ctx)).rejects.toMatchObject({ code: 'ABORT_ERR' });
    await expectNothingLeft(env, 'web-01', 'running');
  });

  it('an abort during the window lets the window finish, then cancels', async () => {
    env = await setup();
    const ac = new AbortController();
    env.fake.at('lvcreate', 1, () => ac.abort());
    await expect(backup(env.opts('web-01', { signal: ac.signal }), env.ctx)).rejects.toMatchObject({ code: 'ABORT_ERR' });
    expect(env.fake.calls('lvcreate')).toHaveLength(2);
    await expectNothingLeft(env, 'web-01', 'running');
  });
});
