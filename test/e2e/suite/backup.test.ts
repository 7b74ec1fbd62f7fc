// kvmbak backup against real lvm2, libvirtd and running QEMU domains in the lab: every mode on
// the running 2-disk domain lab-two, a paused domain, a shut-off one, a non-LVM disk, the guest
// agent that never answers, an overflowing and an auto-extended snapshot, and kill -9 in the
// middle of a backup followed by `kvmbak recover`. After every test: the domain is in the state it
// had, no LV tagged `kvmbak` is left, and every committed set checks with `sha256sum -c`.
// Every backup here is in format image (checkSet reads each disk's image with zcat); the chunk
// store's own suite is chunks.test.ts.
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { backup, memorySetFile, readManifest, type BackupProgress, type BackupResult } from '../../../src/index.js';
import { rejection, domState, lab, pipeline, sh, sha256Of, virsh, writePattern, type LabFixture } from './lab.js';

const MiB = 1024 * 1024;
const CLI = join(process.cwd(), 'dist', 'cli.js');

/** sha256sum -c SHA256SUMS in a set folder (the set is checkable without kvmbak). */
function sha256sumCheck(setPath: string): Promise<{ code: number | null; out: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn('sha256sum', ['-c', '--strict', 'SHA256SUMS'], { cwd: setPath, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (out += d));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, out }));
  });
}

/** LVs carrying the `kvmbak` tag (leftover snapshots), as VG/LV. */
async function kvmbakLvs(): Promise<string[]> {
  const { stdout } = await sh('lvs', ['--noheadings', '-o', 'lv_full_name', '@kvmbak']);
  return stdout
    .split('\n')
    .map((l) => l.trim())
    .filter(Boolean);
}

/** sha256 of the raw data in a gzip image, through the real zcat (every stage's status checked). */
async function zcatSha256(image: string, work: string): Promise<string> {
  const out = join(work, `zcat-${Date.now()}.raw`);
  const st = await pipeline([['zcat', [image]]], { stdout: out });
  expect(st.map((s) => s.code)).toEqual([0]);
  const sum = await sha256Of(out);
  rmSync(out);
  return sum;
}

/** Asserts a committed set is complete and consistent with the standard tools. */
async function checkSet(r: BackupResult, work: string): Promise<void> {
  const m = await readManifest(r.setPath);
  expect(m.format).toBe('kvmbak/1');
  const sums = await sha256sumCheck(r.setPath);
  expect(sums.code, sums.out).toBe(0);
  expect(statSync(r.setPath).mode & 0o777).toBe(0o700);
  for (const f of ['manifest.json', 'domain.xml', 'SHA256SUMS', ...m.disks.map((d) => d.image!.file)]) {
    expect(statSync(join(r.setPath, f)).mode & 0o777, f).toBe(0o600);
  }
  for (const d of m.disks) {
    expect(await zcatSha256(join(r.setPath, d.image!.file), work), d.target).toBe(d.image!.rawSha256);
  }
}

/** The events a CLI run prints under --json on stderr, as they come. */
function spawnCli(args: string[], onEvent: (e: Record<string, unknown>, kill: (sig?: NodeJS.Signals) => void) => void) {
  const child = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  let stdout = '';
  let buf = '';
  const kill = (sig: NodeJS.Signals = 'SIGKILL'): void => {
    child.kill(sig);
  };
  child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
  child.stderr.setEncoding('utf8').on('data', (d: string) => {
    stderr += d;
    buf += d;
    let i;
    while ((i = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, i);
      buf = buf.slice(i + 1);
      try {
        onEvent(JSON.parse(line) as Record<string, unknown>, kill);
      } catch {
        // not an event line
      }
    }
  });
  return new Promise<{ code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string }>((resolve) =>
    child.on('close', (code, signal) => resolve({ code, signal, stdout, stderr })),
  );
}

/** Waits until no lvm2 command started by a killed kvmbak is still running. */
async function lvmSettled(): Promise<void> {
  for (let i = 0; i < 60; i++) {
    const r = await sh('pgrep', ['-x', 'lvcreate|lvremove|lvextend|lvs|vgs'], { check: false });
    if (r.code !== 0) return;
    await new Promise((res) => setTimeout(res, 500));
  }
}

describe('kvmbak backup in the lab', () => {
  let fx: LabFixture;
  let work: string;
  let dest: string;
  const measured: Record<string, number | null> = {};

  beforeAll(async () => {
    fx = lab();
    work = mkdtempSync('/var/tmp/kvmbak-e2e-backup-');
    for (const d of ['lab-one', 'lab-two', 'lab-agent']) {
      const st = await domState(d);
      if (st === 'paused') await virsh('resume', d);
      else if (st !== 'running') await virsh('start', d);
    }
  });
  afterEach(async () => {
    expect(await kvmbakLvs()).toEqual([]);
  });
  afterAll(async () => {
    // Other suites expect lab-two's LVs to hold the fixture's pattern: write it back.
    const specs = Object.values(fx.domains['lab-two']!.disks).map((lv) => `${lv}=${fx.lvs[lv]!.path}:${fx.lvs[lv]!.bytes}`);
    const refill = JSON.parse((await sh(process.execPath, [join(process.cwd(), 'test/e2e/guest/fill-pattern.mjs'), ...specs])).stdout) as Record<
      string,
      { sha256: string }
    >;
    for (const lv of Object.values(fx.domains['lab-two']!.disks)) expect(refill[lv]!.sha256).toBe(fx.lvs[lv]!.sha256);
    rmSync(work, { recursive: true, force: true });
    console.log(`[measure] backup downtime (ms): ${JSON.stringify(measured)}`);
  });

  function freshDest(): string {
    dest = mkdtempSync(join(work, 'dest-'));
    return dest;
  }

  it('mode save: lab-two (2 LVs) is saved, snapshotted, restored running; the set holds the data at snapshot time', async () => {
    const two = fx.domains['lab-two']!;
    const lv0 = fx.lvs[two.disks.vda!]!;
    const lv1 = fx.lvs[two.disks.vdb!]!;
    // Known data on both LVs, then more writes after the snapshots (while archiving).
    const want0 = writePattern(lv0.path, 'save-vda', lv0.bytes);
    const want1 = writePattern(lv1.path, 'save-vdb', lv1.bytes);
    let wroteAfter = false;
    let saveEvents = 0;
    const r = await backup({
      domain: 'lab-two',
      dest: freshDest(),
      uri: fx.uri,
      format: 'image',
      onProgress: (e: BackupProgress) => {
        if (e.type === 'save') saveEvents++;
        if (e.type === 'phase' && e.phase === 'archive' && !wroteAfter) {
          wroteAfter = true;
          writePattern(lv0.path, 'save-vda-after', 4 * MiB);
          writePattern(lv1.path, 'save-vdb-after', 4 * MiB);
        }
      },
    });
    measured.save = r.downtimeMs;
    measured.saveProgressEvents = saveEvents;
    expect(wroteAfter).toBe(true);
    expect(r.mode).toBe('save');
    expect(r.stateBefore).toBe('running');
    expect(r.stateAfter).toBe('running');
    expect(await domState('lab-two')).toBe('running');
    expect(r.downtimeMs).toBeGreaterThan(0);
    expect(r.disks.map((d) => [d.target, d.rawSha256])).toEqual([
      ['vda', want0],
      ['vdb', want1],
    ]);
    // The LVs moved on; the set kept the snapshot-time content.
    expect(await sha256Of(lv0.path)).not.toBe(want0);
    expect(r.memoryBytes).toBeGreaterThan(0);
    const m = await readManifest(r.setPath);
    expect(m.memory && memorySetFile(m.memory)).toBe('memory.state');
    expect(m.domain).toMatchObject({ name: 'lab-two', stateBefore: 'running' });
    expect(m.disks.map((d) => ({ target: d.target, vg: d.vg, lv: d.lv, pool: d.pool, lvSize: d.lvSize }))).toEqual([
      { target: 'vda', vg: fx.vg, lv: two.disks.vda, pool: fx.pool, lvSize: lv0.bytes },
      { target: 'vdb', vg: fx.vg, lv: two.disks.vdb, pool: fx.pool, lvSize: lv1.bytes },
    ]);
    expect(m.disks[0]!.capacity).toBe(lv0.bytes);
    await checkSet(r, work);
    expect((await sha256sumCheck(r.setPath)).out).toContain('memory.state: OK');
  });

  it('mode pause: lab-two is suspended only while the snapshots are taken', async () => {
    const r = await backup({ domain: 'lab-two', dest: freshDest(), uri: fx.uri, format: 'image', mode: 'pause' });
    measured.pause = r.downtimeMs;
    expect(r).toMatchObject({ mode: 'pause', stateBefore: 'running', stateAfter: 'running', memoryBytes: null });
    expect(await domState('lab-two')).toBe('running');
    await checkSet(r, work);
  });

  it('a paused domain stays paused (modes pause and save)', async () => {
    await virsh('suspend', 'lab-one');
    try {
      const p = await backup({ domain: 'lab-one', dest: freshDest(), uri: fx.uri, format: 'image', mode: 'pause' });
      expect(p).toMatchObject({ stateBefore: 'paused', stateAfter: 'paused', downtimeMs: null });
      expect(await domState('lab-one')).toBe('paused');
      const s = await backup({ domain: 'lab-one', dest: freshDest(), uri: fx.uri, format: 'image', mode: 'save' });
      expect(s).toMatchObject({ mode: 'save', stateBefore: 'paused', stateAfter: 'paused' });
      expect(await domState('lab-one')).toBe('paused');
      await checkSet(s, work);
    } finally {
      await virsh('resume', 'lab-one');
    }
  });

  it('mode quiesce without a guest agent fails clearly and touches nothing; with --quiesce-fallback pause it backs up', async () => {
    const d = freshDest();
    const e = await rejection(backup({ domain: 'lab-agent', dest: d, uri: fx.uri, format: 'image', mode: 'quiesce', agentTimeoutSeconds: 3 }));
    expect(e).toMatchObject({ code: 'KVMBAK_QUIESCE' });
    expect((e as Error).message).toMatch(/guest agent of lab-agent did not freeze .*qemu-guest-agent/);
    expect(await domState('lab-agent')).toBe('running');
    // A run that made nothing leaves no DEST/DOMAIN folder either.
    expect(existsSync(join(d, 'lab-agent')) ? readdirSync(join(d, 'lab-agent')) : []).toEqual([]);
    const r = await backup({
      domain: 'lab-agent',
      dest: d,
      uri: fx.uri,
      format: 'image',
      mode: 'quiesce',
      quiesceFallback: 'pause',
      agentTimeoutSeconds: 3,
    });
    expect(r).toMatchObject({ mode: 'pause', stateAfter: 'running' });
    await checkSet(r, work);
  });

  it('mode offline: a shut-off domain is backed up by default, its cdrom skipped', async () => {
    const r = await backup({ domain: 'lab-cdrom', dest: freshDest(), uri: fx.uri, format: 'image' });
    expect(r).toMatchObject({ mode: 'offline', stateBefore: 'shutoff', stateAfter: 'shutoff', downtimeMs: null });
    expect(r.skipped).toEqual([{ target: 'hdc', device: 'cdrom', reason: 'cdrom: removable media are not backed up' }]);
    expect(r.disks[0]!.rawSha256).toBe(await sha256Of(fx.lvs['lab-cdrom-disk0']!.path));
    await checkSet(r, work);
  });

  it('a non-LVM disk is a clear error naming it and --exclude, and nothing is touched; excluded, the backup works', async () => {
    const d = freshDest();
    const e = await rejection(backup({ domain: 'lab-qcow', dest: d, uri: fx.uri, format: 'image' }));
    expect(e).toMatchObject({ code: 'KVMBAK_BACKUP_DISK' });
    expect((e as Error).message).toMatch(/disk vdb of domain lab-qcow .*not an LVM logical volume.*`exclude` vdb/);
    expect(readdirSync(d)).toEqual([]);
    const cli = await sh(process.execPath, [CLI, 'backup', 'lab-qcow', '--dest', d, '-c', fx.uri, '--format', 'image', '--quiet'], { check: false });
    expect(cli.code).toBe(1);
    expect(cli.stderr.trim().split('\n')).toEqual([expect.stringMatching(/^kvmbak: disk vdb of domain lab-qcow .*--exclude vdb$/)]);
    const r = await backup({ domain: 'lab-qcow', dest: d, uri: fx.uri, format: 'image', exclude: ['vdb'] });
    expect(r.skipped).toEqual([{ target: 'vdb', device: 'disk', reason: 'excluded with --exclude' }]);
    await checkSet(r, work);
  });

  it('an overflowing snapshot fails the backup cleanly: no manifest, no snapshot, the VM runs', async () => {
    const lv0 = fx.lvs[fx.domains['lab-two']!.disks.vda!]!;
    const d = freshDest();
    let burst = false;
    const e = await rejection(
      backup({
        domain: 'lab-two',
        dest: d,
        uri: fx.uri,
        format: 'image',
        mode: 'pause',
        snapshotSize: '8M',
        watchIntervalMs: 5000,
        onProgress: (ev) => {
          if (ev.type === 'phase' && ev.phase === 'archive' && !burst) {
            burst = true;
            writePattern(lv0.path, 'overflow', 16 * MiB); // twice the COW area, before the watcher can act
          }
        },
      }),
    );
    expect(burst).toBe(true);
    expect(e).toMatchObject({ code: 'KVMBAK_SNAPSHOT_INVALID' });
    expect((e as Error).message).toMatch(/overflowed .*larger `snapshotSize`/);
    expect(await domState('lab-two')).toBe('running');
    // Nothing left: no set and no journal (the domain folder itself goes when a run leaves nothing in it).
    const left = existsSync(join(d, 'lab-two')) ? readdirSync(join(d, 'lab-two')) : [];
    expect(left.filter((n) => !n.startsWith('.') || n.startsWith('.journal'))).toEqual([]);
  });

  it('a filling snapshot is extended while archiving and the backup completes', async () => {
    const lv0 = fx.lvs[fx.domains['lab-two']!.disks.vda!]!;
    const before = await sha256Of(lv0.path);
    let wrote = false;
    const r = await backup({
      domain: 'lab-two',
      dest: freshDest(),
      uri: fx.uri,
      format: 'image',
      mode: 'pause',
      snapshotSize: '8M',
      watchIntervalMs: 200,
      exclude: ['vdb'],
      onProgress: (ev) => {
        if (ev.type === 'phase' && ev.phase === 'archive' && !wrote) {
          wrote = true;
          writePattern(lv0.path, 'fill', 7 * MiB); // ~88% of the COW area
        }
      },
    });
    expect(wrote).toBe(true);
    const vda = r.disks[0]!;
    expect(vda.snapshotExtendedTo).toBeGreaterThanOrEqual(12 * MiB);
    expect(vda.snapshotPeakPercent).toBeGreaterThan(80);
    expect(vda.rawSha256).toBe(before);
    await checkSet(r, work);
  });

  it('kill -9 right after the save, then kvmbak recover: the VM runs again, no snapshot, no partial set', async () => {
    const d = freshDest();
    let killed = false;
    const run = await spawnCli(['backup', 'lab-two', '--dest', d, '-c', fx.uri, '--format', 'image', '--json'], (e, kill) => {
      if (!killed && e.type === 'phase' && e.phase === 'snapshot') {
        killed = true;
        kill();
      }
    });
    expect(run.signal).toBe('SIGKILL');
    await lvmSettled();
    expect(await domState('lab-two')).toBe('shut off');
    const rec = await sh(process.execPath, [CLI, 'recover', '--dest', d, '-c', fx.uri], { check: false });
    expect(rec.code, rec.stdout + rec.stderr).toBe(0);
    expect(rec.stdout).toMatch(/restored lab-two from its saved memory/);
    expect(await domState('lab-two')).toBe('running');
    expect(readdirSync(join(d, 'lab-two'))).toEqual([]);
  });

  it('SIGHUP while the VM is saved (a dropped SSH session): the window finishes, the VM runs again, no snapshot, no set, exit 129', async () => {
    const d = freshDest();
    let sent = false;
    const run = await spawnCli(['backup', 'lab-two', '--dest', d, '-c', fx.uri, '--format', 'image', '--json'], (e, kill) => {
      if (!sent && e.type === 'phase' && e.phase === 'snapshot') {
        sent = true;
        kill('SIGHUP');
      }
    });
    expect(sent).toBe(true);
    expect({ code: run.code, signal: run.signal }, run.stderr).toEqual({ code: 129, signal: null });
    expect(run.stderr).toMatch(/"phase":"resume"/);
    expect(await domState('lab-two')).toBe('running');
    expect(await kvmbakLvs()).toEqual([]);
    expect(existsSync(join(d, 'lab-two')) ? readdirSync(join(d, 'lab-two')) : []).toEqual([]);
  });

  it('kill -9 in the save window, then kvmbak backup --mode pause (no recover): the VM is restored first, then backed up paused', async () => {
    const d = freshDest();
    let killed = false;
    const run = await spawnCli(['backup', 'lab-two', '--dest', d, '-c', fx.uri, '--format', 'image', '--json'], (e, kill) => {
      if (!killed && e.type === 'phase' && e.phase === 'snapshot') {
        killed = true;
        kill();
      }
    });
    expect(run.signal).toBe('SIGKILL');
    await lvmSettled();
    expect(await domState('lab-two')).toBe('shut off');
    const next = await sh(process.execPath, [CLI, 'backup', 'lab-two', '--dest', d, '-c', fx.uri, '--format', 'image', '--mode', 'pause', '--json'], {
      check: false,
    });
    expect(next.code, next.stderr).toBe(0);
    expect(next.stderr).toMatch(/recovered an interrupted backup \(\S+\): restored lab-two from its saved memory/);
    const doc = JSON.parse(next.stdout) as { ok: boolean; results: { result: BackupResult }[] };
    const r = doc.results[0]!.result;
    expect(r).toMatchObject({ mode: 'pause', stateBefore: 'running', stateAfter: 'running' });
    expect(await domState('lab-two')).toBe('running');
    expect(readdirSync(join(d, 'lab-two'))).toEqual([r.setPath.split('/').pop()]);
    expect((await readManifest(r.setPath)).mode).toBe('pause');
    await checkSet(r, work);
  });

  it('kill -9 while the VM is paused for its snapshots: the next backup of it resumes the VM first, then backs up', async () => {
    const d = freshDest();
    let killed = false;
    const run = await spawnCli(['backup', 'lab-two', '--dest', d, '-c', fx.uri, '--format', 'image', '--json', '--mode', 'pause'], (e, kill) => {
      if (!killed && e.type === 'phase' && e.phase === 'snapshot') {
        killed = true;
        kill();
      }
    });
    expect(run.signal).toBe('SIGKILL');
    await lvmSettled();
    expect(await domState('lab-two')).toBe('paused');
    const warnings: string[] = [];
    const r = await backup({
      domain: 'lab-two',
      dest: d,
      uri: fx.uri,
      format: 'image',
      mode: 'pause',
      onProgress: (e) => {
        if (e.type === 'warning') warnings.push(e.message);
      },
    });
    expect(warnings.join('\n')).toMatch(/resumed lab-two/);
    expect(r).toMatchObject({ stateBefore: 'running', stateAfter: 'running' });
    expect(await domState('lab-two')).toBe('running');
    expect(readdirSync(join(d, 'lab-two')).filter((n) => n.startsWith('.journal'))).toEqual([]);
    expect(readdirSync(join(d, 'lab-two')).filter((n) => !n.startsWith('.'))).toEqual([r.setPath.split('/').pop()]);
    await checkSet(r, work);
  });

  it('kill -9 mid-archive, then kvmbak recover: snapshots removed, partial set deleted, the VM kept running', async () => {
    const d = freshDest();
    let killed = false;
    const run = await spawnCli(['backup', 'lab-two', '--dest', d, '-c', fx.uri, '--format', 'image', '--json', '--mode', 'pause'], (e, kill) => {
      if (!killed && e.type === 'archive') {
        killed = true;
        kill();
      }
    });
    expect(run.signal).toBe('SIGKILL');
    await lvmSettled();
    expect(await domState('lab-two')).toBe('running');
    expect((await kvmbakLvs()).length).toBeGreaterThan(0);
    const rec = await sh(process.execPath, [CLI, 'recover', '--dest', d, '-c', fx.uri, '--json'], { check: false });
    expect(rec.code, rec.stdout + rec.stderr).toBe(0);
    const doc = JSON.parse(rec.stdout) as { ok: boolean; runs: { actions: string[] }[] };
    expect(doc.ok).toBe(true);
    expect(doc.runs[0]!.actions.join('\n')).toMatch(/removed snapshot .*deleted the partial set/s);
    expect(readdirSync(join(d, 'lab-two'))).toEqual([]);
  });

  it('the CLI backs up two domains in one run and prints one JSON document', async () => {
    const d = freshDest();
    const r = await sh(process.execPath, [
      CLI,
      'backup',
      'lab-one',
      'lab-cdrom',
      '--dest',
      d,
      '-c',
      fx.uri,
      '--format',
      'image',
      '--json',
      '--quiet',
    ]);
    const doc = JSON.parse(r.stdout) as { ok: boolean; results: { domain: string; ok: boolean; result: BackupResult }[] };
    expect(doc.ok).toBe(true);
    expect(doc.results.map((x) => [x.domain, x.ok, x.result.mode])).toEqual([
      ['lab-one', true, 'save'],
      ['lab-cdrom', true, 'offline'],
    ]);
    for (const x of doc.results) expect(existsSync(join(x.result.setPath, 'manifest.json'))).toBe(true);
  });

  it('by hand, for comparison: the same window with virsh and lvcreate', async () => {
    const two = fx.domains['lab-two']!;
    const snaps = Object.values(two.disks).map((lv) => [lv, `${lv}-byhand`] as const);
    const lvcreateAll = async (): Promise<void> => {
      for (const [lv, snap] of snaps) await sh('lvcreate', ['-q', '-s', '-n', snap, '-L', '64M', `${fx.vg}/${lv}`]);
    };
    const lvremoveAll = async (): Promise<void> => {
      for (const [, snap] of snaps) await sh('lvremove', ['-q', '-y', `${fx.vg}/${snap}`]);
    };
    let t = performance.now();
    await virsh('suspend', 'lab-two');
    await lvcreateAll();
    await virsh('resume', 'lab-two');
    measured.pauseByHand = Math.round(performance.now() - t);
    await lvremoveAll();
    const state = join(work, 'byhand.state');
    t = performance.now();
    await virsh('save', 'lab-two', state, '--running');
    await lvcreateAll();
    await virsh('restore', state);
    measured.saveByHand = Math.round(performance.now() - t);
    await lvremoveAll();
    expect(await domState('lab-two')).toBe('running');
  });
});
