// Unattended backups in the lab, the way a host runs them: a configuration file naming two
// running domains with different modes and retention, the units of `kvmbak systemd install`
// started with systemctl, a hook script logging every phase, the metrics file, a failing pre-hold
// hook, --bwlimit, --all with a qcow2 domain, and kill -9 while a VM is saved followed by the
// boot-time recover unit. After every test no LV tagged `kvmbak` is left.
import { spawn } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, unlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { readManifest } from '../../../src/index.js';
import { domState, lab, sh, virsh, type LabFixture } from './lab.js';

const MiB = 1024 * 1024;
const CLI = join(process.cwd(), 'dist', 'cli.js');
const cli = (args: string[]) => sh(process.execPath, [CLI, ...args], { check: false });

const setsOf = (dest: string, domain: string): string[] =>
  existsSync(join(dest, domain)) ? readdirSync(join(dest, domain)).filter((n) => /^\d{8}T\d{6}Z/.test(n)).sort() : [];

async function kvmbakLvs(): Promise<string[]> {
  const { stdout } = await sh('lvs', ['--noheadings', '-o', 'lv_full_name', '@kvmbak']);
  return stdout.split('\n').map((l) => l.trim()).filter(Boolean);
}

async function ensureRunning(d: string): Promise<void> {
  const st = await domState(d);
  if (st === 'paused') await virsh('resume', d);
  else if (st !== 'running') await virsh('start', d);
}

describe('unattended backups in the lab', () => {
  let fx: LabFixture;
  let work: string;
  let dest: string;
  let config: string;
  let hookLog: string;
  let failFlag: string;

  beforeAll(async () => {
    fx = lab();
    work = mkdtempSync('/var/tmp/kvmbak-e2e-ops-');
    dest = join(work, 'dest');
    mkdirSync(dest, { mode: 0o700 });
    hookLog = join(work, 'hook.log');
    failFlag = join(work, 'fail-pre-hold');
    const hook = join(work, 'hook.sh');
    writeFileSync(
      hook,
      `#!/bin/sh
echo "$1 \${KVMBAK_DOMAIN:-} \${KVMBAK_MODE:-} \${KVMBAK_STATUS:-}" >> ${hookLog}
echo "hook says $1"
if [ "$1" = pre-hold ] && [ -e ${failFlag} ]; then exit 3; fi
`,
    );
    chmodSync(hook, 0o755);
    config = join(work, 'kvmbak.toml');
    writeFileSync(
      config,
      `uri = "${fx.uri}"
dest = "${dest}"
domains = ["lab-one", "lab-two"]
hook = "${hook}"
metrics-file = "${join(work, 'kvmbak.prom')}"
threads = 2

[domain.lab-one]
mode = "pause"
keep-last = 1

[domain.lab-two]
mode = "save"
keep-daily = 7
`,
    );
    for (const d of ['lab-one', 'lab-two']) await ensureRunning(d);
    const inst = await cli(['systemd', 'install', '--config', config, '--on-calendar', '*-*-* 03:00:00']);
    expect(inst.code, inst.stderr).toBe(0);
  });
  afterEach(async () => {
    expect(await kvmbakLvs()).toEqual([]);
  });
  afterAll(async () => {
    await cli(['systemd', 'uninstall']);
    for (const d of ['lab-one', 'lab-two']) await ensureRunning(d).catch(() => undefined);
    if (work) rmSync(work, { recursive: true, force: true });
  });

  it('systemctl start kvmbak.service backs up both domains with their modes, prunes, writes metrics, calls the hook in order', async () => {
    // An earlier set of lab-one, so that its keep-last = 1 has something to remove.
    const first = await cli(['backup', 'lab-one', '--config', config]);
    expect(first.code, first.stderr).toBe(0);
    writeFileSync(hookLog, '');
    const timer = await sh('systemctl', ['is-enabled', 'kvmbak.timer']);
    expect(timer.stdout.trim()).toBe('enabled');
    const started = await sh('systemctl', ['start', 'kvmbak.service'], { check: false });
    const journal = await sh('journalctl', ['-u', 'kvmbak.service', '--no-pager', '-o', 'cat'], { check: false });
    expect(started.code, journal.stdout.slice(-3000)).toBe(0);

    expect(setsOf(dest, 'lab-one')).toHaveLength(1);
    expect(setsOf(dest, 'lab-two')).toHaveLength(1);
    expect((await readManifest(join(dest, 'lab-one', setsOf(dest, 'lab-one')[0]!))).mode).toBe('pause');
    expect((await readManifest(join(dest, 'lab-two', setsOf(dest, 'lab-two')[0]!))).mode).toBe('save');
    expect(await domState('lab-one')).toBe('running');
    expect(await domState('lab-two')).toBe('running');

    expect(readFileSync(hookLog, 'utf8').trim().split('\n')).toEqual([
      'job-start   ',
      'backup-start lab-one pause ',
      'pre-hold lab-one pause ',
      'post-resume lab-one pause ',
      'backup-end lab-one pause ok',
      'backup-start lab-two save ',
      'pre-hold lab-two save ',
      'post-resume lab-two save ',
      'backup-end lab-two save ok',
      'job-end   ok',
    ]);
    expect(journal.stdout).toContain('hook pre-hold (lab-two): hook says pre-hold');

    const metrics: Record<string, number> = {};
    for (const line of readFileSync(join(work, 'kvmbak.prom'), 'utf8').split('\n')) {
      const m = /^(\w+)\{domain="([^"]+)",dest="[^"]*"\} (\S+)$/.exec(line);
      if (m) metrics[`${m[1]} ${m[2]}`] = Number(m[3]);
    }
    for (const d of ['lab-one', 'lab-two']) {
      expect(metrics[`kvmbak_last_run_success ${d}`]).toBe(1);
      expect(metrics[`kvmbak_last_success_timestamp_seconds ${d}`]).toBeGreaterThan(Date.now() / 1000 - 3600);
      expect(metrics[`kvmbak_last_run_read_bytes ${d}`]).toBe(Object.values(fx.domains[d]!.disks).reduce((n, lv) => n + fx.lvs[lv]!.bytes, 0));
      expect(metrics[`kvmbak_last_run_written_bytes ${d}`]).toBeGreaterThan(0);
      expect(metrics[`kvmbak_last_run_downtime_seconds ${d}`]).toBeGreaterThan(0);
    }
    const status = await cli(['status', dest, '--max-age', '1h']);
    expect(status.code, status.stdout).toBe(0);
  });

  it('a failing pre-hold hook leaves the VM running and no set; status exits 1', async () => {
    writeFileSync(failFlag, '');
    try {
      const before = setsOf(dest, 'lab-one');
      const r = await cli(['backup', 'lab-one', '--config', config]);
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(/pre-hold exited with status 3\n$/);
      expect(await domState('lab-one')).toBe('running');
      expect(setsOf(dest, 'lab-one')).toEqual(before);
      const status = await cli(['status', dest, '--max-age', '1h']);
      expect(status.code).toBe(1);
      expect(status.stdout).toMatch(/lab-one .*last run failed/);
    } finally {
      unlinkSync(failFlag);
    }
  });

  it('--bwlimit keeps the measured read rate under the limit', async () => {
    const d = mkdtempSync(join(work, 'bw-'));
    const r = await cli(['backup', 'lab-one', '--dest', d, '-c', fx.uri, '--mode', 'pause', '--bwlimit', '8M', '--json']);
    expect(r.code, r.stderr).toBe(0);
    const doc = JSON.parse(r.stdout) as { results: { bwlimit: number; readBytesPerSecond: number; result: { disks: { rawBytes: number }[] } }[] };
    const o = doc.results[0]!;
    expect(o.bwlimit).toBe(8 * MiB);
    expect(o.result.disks[0]!.rawBytes).toBe(64 * MiB);
    expect(o.readBytesPerSecond).toBeGreaterThan(0);
    expect(o.readBytesPerSecond).toBeLessThanOrEqual(8 * MiB);
  });

  it('--all skips the domain with a qcow2 disk with one warning line and backs up the rest', async () => {
    const d = mkdtempSync(join(work, 'all-'));
    const r = await cli(['backup', '--all', '--dest', d, '-c', fx.uri, '--exclude-domain', 'lab-one', '--exclude-domain', 'lab-two', '--exclude-domain', 'lab-agent']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr.split('\n').filter((l) => l.includes('warning: skipping'))).toEqual([
      expect.stringMatching(/^kvmbak: warning: skipping lab-qcow: disk vdb of domain lab-qcow is a file qcow2 disk .*--exclude vdb$/),
    ]);
    expect(setsOf(d, 'lab-cdrom')).toHaveLength(1);
    expect(setsOf(d, 'lab-qcow')).toEqual([]);
  });

  it('kill -9 while the VM is saved, then the boot-time recover unit brings it back', async () => {
    const before = setsOf(dest, 'lab-two');
    const child = spawn(process.execPath, [CLI, 'backup', 'lab-two', '--dest', dest, '-c', fx.uri, '--mode', 'save', '--json'], {
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let buf = '';
    child.stderr.setEncoding('utf8').on('data', (s: string) => {
      buf += s;
      if (/"phase":"snapshot"/.test(buf)) child.kill('SIGKILL');
    });
    const signal = await new Promise((res) => child.on('close', (_c, sig) => res(sig)));
    expect(signal).toBe('SIGKILL');
    for (let i = 0; i < 60 && (await sh('pgrep', ['-x', 'lvcreate|lvremove|lvs|vgs'], { check: false })).code === 0; i++) {
      await new Promise((res) => setTimeout(res, 500));
    }
    expect(await domState('lab-two')).toBe('shut off');
    const rec = await sh('systemctl', ['start', 'kvmbak-recover.service'], { check: false });
    const journal = await sh('journalctl', ['-u', 'kvmbak-recover.service', '--no-pager', '-o', 'cat'], { check: false });
    expect(rec.code, journal.stdout).toBe(0);
    expect(journal.stdout).toMatch(/restored lab-two from its saved memory/);
    expect(await domState('lab-two')).toBe('running');
    expect(setsOf(dest, 'lab-two')).toEqual(before);
  });
});
