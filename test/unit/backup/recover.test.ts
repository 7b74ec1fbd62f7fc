/**
 * Recovery of interrupted runs: journals left by a process that died (kill -9,
 * power loss) are finished by the next backup of the domain or by
 * `kvmbak recover`; orphaned snapshots are swept; live runs are left alone.
 */
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import {
  type BackupProgress,
  type JournalStep,
  acquireLock,
  backup,
  currentBootId,
  ownerTag,
  processOwner,
  readManifest,
  recover,
  runTagFor,
  snapshotNameFor,
} from '../../../src/index.js';
import { MiB } from './fake-lvm.js';
import { type Env, domainDirEntries, setup, stateOf } from './helpers.js';

let env: Env | undefined;
afterEach(async () => {
  await env?.cleanup();
  env = undefined;
});

const WEB_UUID = '6695eb01-f6a4-8304-79aa-97f2502e193f';
const OLD = '20260101T000000Z';

/** A pid that ran and is gone. */
function deadPid(): number {
  const r = spawnSync(process.execPath, ['-e', '']);
  return r.pid!;
}

interface Crash {
  /** Journal steps after `planned` (times are added). */
  steps: JournalStep[];
  /** Snapshots the crashed run made (origin LV names in vg0). */
  snapshots?: string[];
  owner?: { pid: number; pidStart: number | null };
}

/**
 * What a kvmbak killed mid-run leaves of a backup of web-01: its set folder
 * (partial), its journal (owner: a dead process), its snapshots (tagged as
 * kvmbak tags them). Returns the set path.
 */
async function crashedRun(e: Env, c: Crash): Promise<{ setPath: string; journal: string; memoryFile: string }> {
  const setPath = join(e.dest, 'web-01', OLD);
  await mkdir(join(setPath, 'disks'), { recursive: true, mode: 0o700 });
  await writeFile(join(setPath, 'domain.xml'), '<domain/>', { mode: 0o600 });
  await writeFile(join(setPath, 'disks', 'vda.img.gz.partial'), 'partial', { mode: 0o600 });
  const owner = c.owner ?? { pid: deadPid(), pidStart: 1 };
  const runTag = runTagFor(WEB_UUID, OLD);
  const oTag = ownerTag({ ...owner, bootId: currentBootId() });
  for (const lv of c.snapshots ?? []) {
    await e.fake.lvm.createSnapshot({ vg: 'vg0', lv }, { name: snapshotNameFor(lv, OLD), size: MiB, tags: [runTag, oTag] });
  }
  const at = new Date('2026-01-01T00:00:01Z').toISOString();
  const planned: JournalStep = {
    step: 'planned',
    domain: 'web-01',
    uuid: WEB_UUID,
    uri: e.uri,
    mode: 'save',
    stateBefore: 'running',
    setPath,
    snapshots: ['web-root', 'web-data'].map((lv) => ({ vg: 'vg0', lv, name: snapshotNameFor(lv, OLD) })),
    runTag,
  };
  const journal = join(e.dest, 'web-01', `.journal-${OLD}.json`);
  const doc = {
    format: 'kvmbak-journal/1',
    operation: 'backup',
    domain: 'web-01',
    setId: OLD,
    setPath,
    owner: { pid: owner.pid, host: hostname(), bootId: currentBootId(), pidStart: owner.pidStart, startedAt: at },
    entries: [planned, ...c.steps].map((s) => ({ ...s, at })),
  };
  await writeFile(journal, `${JSON.stringify(doc, null, 2)}\n`, { mode: 0o600 });
  return { setPath, journal, memoryFile: join(setPath, 'memory.state') };
}

describe('the next backup recovers an interrupted run first', () => {
  it('killed while archiving: its snapshots go, its partial set goes, then the backup runs', async () => {
    env = await setup();
    const memoryFile = join(env.dest, 'web-01', OLD, 'memory.state');
    const crash = await crashedRun(env, {
      snapshots: ['web-root', 'web-data'],
      steps: [
        { step: 'window-start', action: 'save', memoryFile },
        { step: 'saved', memoryFile },
        { step: 'snapshot-created', vg: 'vg0', lv: 'web-root', name: snapshotNameFor('web-root', OLD) },
        { step: 'snapshot-created', vg: 'vg0', lv: 'web-data', name: snapshotNameFor('web-data', OLD) },
        { step: 'resumed' },
      ],
    });
    expect(env.fake.snapshots()).toHaveLength(2);
    const warnings: string[] = [];
    const onProgress = (p: BackupProgress): void => void (p.type === 'warning' && warnings.push(p.message));
    const r = await backup(env.opts('web-01', { onProgress }), env.ctx);
    expect(warnings).toEqual([
      `recovered an interrupted backup (${OLD}): removed snapshot vg0/${snapshotNameFor('web-root', OLD)}`,
      `recovered an interrupted backup (${OLD}): removed snapshot vg0/${snapshotNameFor('web-data', OLD)}`,
      `recovered an interrupted backup (${OLD}): deleted the partial set ${crash.setPath}`,
    ]);
    expect(existsSync(crash.setPath)).toBe(false);
    expect(existsSync(crash.journal)).toBe(false);
    await readManifest(r.setPath);
    expect(env.fake.snapshots()).toEqual([]);
    expect(await domainDirEntries(env.dest, 'web-01')).toEqual([r.setPath.split('/').pop()]);
  });

  it('killed between save and restore: the VM is restored from the partial set, then backed up live (not offline)', async () => {
    env = await setup();
    const memoryFile = join(env.dest, 'web-01', OLD, 'memory.state');
    const crash = await crashedRun(env, {
      snapshots: ['web-root'],
      steps: [
        { step: 'window-start', action: 'save', memoryFile },
        { step: 'saved', memoryFile },
        { step: 'snapshot-created', vg: 'vg0', lv: 'web-root', name: snapshotNameFor('web-root', OLD) },
      ],
    });
    const d = await env.hv.lookupDomain('web-01');
    await d.save(memoryFile);
    d.free();
    expect(await stateOf(env.hv, 'web-01')).toBe('shutoff');
    const warnings: string[] = [];
    const r = await backup(env.opts('web-01', { onProgress: (p) => void (p.type === 'warning' && warnings.push(p.message)) }), env.ctx);
    expect(warnings[0]).toBe(`recovered an interrupted backup (${OLD}): restored web-01 from its saved memory ${memoryFile}`);
    expect(r).toMatchObject({ mode: 'save', stateBefore: 'running', stateAfter: 'running' });
    expect(existsSync(crash.setPath)).toBe(false);
    expect(env.fake.snapshots()).toEqual([]);
  });

  it('killed after the save finished but before the journal said so: the state file is still used', async () => {
    env = await setup();
    const memoryFile = join(env.dest, 'web-01', OLD, 'memory.state');
    await crashedRun(env, { steps: [{ step: 'window-start', action: 'save', memoryFile }] });
    const d = await env.hv.lookupDomain('web-01');
    await d.save(memoryFile);
    d.free();
    const r = await recover({ dest: env.dest }, { hypervisor: env.hv, lvm: env.fake.lvm });
    expect(r.errors).toEqual([]);
    expect(r.runs[0].actions[0]).toBe(`restored web-01 from its saved memory ${memoryFile}`);
    expect(await stateOf(env.hv, 'web-01')).toBe('running');
    expect(await domainDirEntries(env.dest, 'web-01')).toEqual([]);
  });

  it('killed while paused: recover resumes the VM', async () => {
    env = await setup();
    await crashedRun(env, { steps: [{ step: 'window-start', action: 'suspend', memoryFile: null }] });
    const d = await env.hv.lookupDomain('web-01');
    await d.suspend();
    d.free();
    const r = await recover({ dest: env.dest }, { hypervisor: env.hv, lvm: env.fake.lvm });
    expect(r).toMatchObject({ errors: [], orphanSnapshots: [] });
    expect(r.runs[0].actions).toEqual(['resumed web-01', `deleted the partial set ${join(env.dest, 'web-01', OLD)}`]);
    expect(await stateOf(env.hv, 'web-01')).toBe('running');
  });

  it('a run whose process may still be alive is left alone', async () => {
    env = await setup();
    const me = processOwner();
    const crash = await crashedRun(env, { owner: { pid: me.pid, pidStart: me.pidStart }, snapshots: ['web-root'], steps: [] });
    const r = await recover({ dest: env.dest }, { hypervisor: env.hv, lvm: env.fake.lvm });
    expect(r.runs).toEqual([
      { domain: 'web-01', setId: OLD, journal: crash.journal, actions: [], skipped: `kvmbak pid ${me.pid} on ${hostname()} may still be running it` },
    ]);
    expect(r.orphanSnapshots).toEqual([]);
    expect(env.fake.snapshots()).toHaveLength(1);
    expect(existsSync(crash.setPath)).toBe(true);
  });

  it('a damaged journal stops the next backup with what to do', async () => {
    env = await setup();
    await mkdir(join(env.dest, 'web-01'), { mode: 0o700 });
    const path = join(env.dest, 'web-01', `.journal-${OLD}.json`);
    await writeFile(path, '{"format":');
    await expect(backup(env.opts('web-01'), env.ctx)).rejects.toMatchObject({
      code: 'KVMBAK_RECOVER_FAILED',
      message: expect.stringMatching(
        new RegExp(
          `^an interrupted backup of web-01 could not be undone \\(${OLD}: journal is unreadable .*then delete ${path}\\); fix that and run kvmbak recover \\(\`dest\` ${env.dest}\\) before backing web-01 up again$`,
        ),
      ),
    });
    expect(env.fake.calls('lvcreate')).toEqual([]);
    expect(await stateOf(env.hv, 'web-01')).toBe('running');
  });
});

describe('recover', () => {
  it('sweeps snapshots tagged kvmbak whose process is gone; leaves live ones and other LVs', async () => {
    env = await setup();
    const dead = ownerTag({ pid: deadPid(), pidStart: 1, bootId: currentBootId() });
    const live = ownerTag(processOwner());
    await env.fake.lvm.createSnapshot({ vg: 'vg0', lv: 'web-root' }, { name: 'web-root-orphan', size: MiB, tags: [dead] });
    await env.fake.lvm.createSnapshot({ vg: 'vg0', lv: 'app-root' }, { name: 'app-root-running', size: MiB, tags: [live] });
    env.fake.lv('vg0', 'files-root').tags.push('kvmbak', dead); // not a snapshot: never removed
    const r = await recover({}, { hypervisor: env.hv, lvm: env.fake.lvm });
    expect(r).toEqual({ runs: [], orphanSnapshots: ['vg0/web-root-orphan'], errors: [] });
    expect(env.fake.snapshots().map((s) => s.lv)).toEqual(['app-root-running']);
  });

  it('nothing to do: an empty answer', async () => {
    env = await setup();
    expect(await recover({ dest: env.dest }, { hypervisor: env.hv, lvm: env.fake.lvm })).toEqual({ runs: [], orphanSnapshots: [], errors: [] });
    await expect(recover({ domain: 'web-01' })).rejects.toMatchObject({ code: 'KVMBAK_INVALID_ARGUMENT' });
  });
});

describe('the lock', () => {
  it('a backup running for the domain makes another wait: a clear error, nothing touched', async () => {
    env = await setup();
    const lock = await acquireLock(env.dest, 'web-01', 'backup');
    try {
      await expect(backup(env.opts('web-01'), env.ctx)).rejects.toMatchObject({
        code: 'KVMBAK_LOCKED',
        message: expect.stringMatching(new RegExp(`^domain web-01 is being backed up by kvmbak pid ${process.pid} since .*; wait for it`)),
      });
    } finally {
      await lock.release();
    }
    expect(env.fake.calls('lvcreate')).toEqual([]);
    expect(await domainDirEntries(env.dest, 'web-01')).toEqual([]);
  });
});
