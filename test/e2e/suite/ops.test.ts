// Unattended backups in the lab, the way a host runs them: a configuration file naming two
// running domains with different modes and retention, the units of `kvmbak systemd install`
// started with systemctl, a hook script logging every phase, the metrics file, a failing pre-hold
// hook and `kvmbak status --max-age`, --bwlimit, --all with a qcow2 domain, and kill -9 while a VM
// is saved followed by the boot-time recover unit. After every test no LV tagged `kvmbak` is left;
// after the suite the units are gone, lab-one and lab-two run, and the temporary folder is removed.
// Lab time: 5-7 minutes on 2 shared cores (64-96 MiB per backup, six backups and one killed in its
// save window).
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, unlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { memorySetFile, readManifest } from '../../../src/index.js';
import { CLI, domState, kvmbakLvs, lab, lvmSettled, runCli, sh, virsh, type LabFixture } from './lab.js';

const MiB = 1024 * 1024;
const cli = (args: string[]) => sh(process.execPath, [CLI, ...args], { check: false });
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Committed set folders of a domain in a destination, oldest first. */
const setsOf = (dest: string, domain: string): string[] =>
  existsSync(join(dest, domain))
    ? readdirSync(join(dest, domain))
        .filter((n) => /^\d{8}T\d{6}Z/.test(n))
        .sort()
    : [];

/** What a run that did not complete would leave in DEST/DOMAIN: a journal, a partial set. */
const leftovers = (dest: string, domain: string): string[] =>
  readdirSync(join(dest, domain)).filter((n) => n.startsWith('.journal') || n.endsWith('.partial'));

async function ensureRunning(d: string): Promise<void> {
  const st = await domState(d);
  if (st === 'paused') await virsh('resume', d);
  else if (st !== 'running') await virsh('start', d);
}

/** The journal of a unit's last run (since `since`), once it holds `until` (journald may lag a little). */
async function journalOf(unit: string, since: string, until: RegExp): Promise<string> {
  let text = '';
  for (let i = 0; i < 20; i++) {
    text = (await sh('journalctl', ['-u', unit, '--since', since, '--no-pager', '-o', 'cat'], { check: false })).stdout;
    if (until.test(text)) break;
    await sleep(250);
  }
  return text;
}

/** `YYYY-MM-DD HH:MM:SS` as journalctl --since reads it (local time = UTC in the lab). */
const journalNow = (): string => {
  const d = new Date(Date.now() - 1000);
  const p = (n: number) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
};

interface JobJson {
  ok: boolean;
  results: {
    domain: string;
    ok: boolean;
    bwlimit?: number;
    readBytesPerSecond: number | null;
    result: { mode: string; disks: { rawBytes: number }[] };
  }[];
}

describe('unattended backups in the lab', () => {
  let fx: LabFixture;
  let work: string;
  let dest: string;
  let config: string;
  let hook: string;
  let hookLog: string;
  let failFlag: string;
  let metricsFile: string;
  /** lab-one's read rate without a limit (first test), to show that --bwlimit below it slows the read. */
  let unlimitedRate = 0;

  beforeAll(async () => {
    fx = lab();
    work = mkdtempSync('/var/tmp/kvmbak-e2e-ops-');
    dest = join(work, 'dest');
    mkdirSync(dest, { mode: 0o700 });
    hookLog = join(work, 'hook.log');
    failFlag = join(work, 'fail-pre-hold');
    metricsFile = join(work, 'kvmbak.prom');
    hook = join(work, 'hook.sh');
    writeFileSync(
      hook,
      `#!/bin/sh
echo "$1 \${KVMBAK_DOMAIN:-} \${KVMBAK_MODE:-} \${KVMBAK_STATUS:-}" >> ${hookLog}
echo "hook says $1"
if [ "$1" = pre-hold ] && [ -e ${failFlag} ]; then echo "refusing pre-hold" >&2; exit 3; fi
`,
    );
    chmodSync(hook, 0o755);
    config = join(work, 'kvmbak.toml');
    writeFileSync(
      config,
      `uri = "${fx.uri}"
dest = "${dest}"
format = "image"
domains = ["lab-one", "lab-two"]
hook = "${hook}"
metrics-file = "${metricsFile}"
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
    // A calendar date that never comes while the suite runs: only systemctl start runs the service.
    const inst = await cli(['systemd', 'install', '--config', config, '--on-calendar', '2099-01-01 03:00:00']);
    expect(inst.code, inst.stderr).toBe(0);
    expect(inst.stdout).toContain('wrote /etc/systemd/system/kvmbak-recover.service');
  });
  afterEach(async () => {
    expect(await kvmbakLvs()).toEqual([]);
  });
  afterAll(async () => {
    await sh('systemctl', ['stop', 'kvmbak-recover.service', 'kvmbak.service'], { check: false });
    const un = await cli(['systemd', 'uninstall']);
    await sh('systemctl', ['reset-failed'], { check: false });
    for (const d of ['lab-one', 'lab-two']) await ensureRunning(d).catch(() => undefined);
    if (work) rmSync(work, { recursive: true, force: true });
    expect(un.code, un.stderr).toBe(0);
    for (const u of ['kvmbak.service', 'kvmbak.timer', 'kvmbak-recover.service']) expect(existsSync(join('/etc/systemd/system', u))).toBe(false);
  });

  it('systemctl start kvmbak.service backs up both domains with their modes, applies their retention, writes metrics, calls the hook in order', async () => {
    // An earlier set of lab-one, so that its keep-last = 1 has one to remove.
    const first = await cli(['backup', 'lab-one', '--config', config, '--json']);
    expect(first.code, first.stderr).toBe(0);
    unlimitedRate = (JSON.parse(first.stdout) as JobJson).results[0]!.readBytesPerSecond!;
    const earlier = setsOf(dest, 'lab-one');
    expect(earlier).toHaveLength(1);
    writeFileSync(hookLog, '');

    expect((await sh('systemctl', ['is-enabled', 'kvmbak.timer'])).stdout.trim()).toBe('enabled');
    expect((await sh('systemctl', ['is-enabled', 'kvmbak-recover.service'])).stdout.trim()).toBe('enabled');
    const since = journalNow();
    const started = await sh('systemctl', ['start', 'kvmbak.service'], { check: false });
    const journal = await journalOf('kvmbak.service', since, /hook job-end: hook says job-end/);
    expect(started.code, journal.slice(-3000)).toBe(0);

    // Retention per domain: lab-one keeps its newest set only, lab-two (keep-daily 7) its one set.
    const one = setsOf(dest, 'lab-one');
    const two = setsOf(dest, 'lab-two');
    expect(one).toHaveLength(1);
    expect(one[0]! > earlier[0]!).toBe(true);
    expect(two).toHaveLength(1);
    expect(journal).toContain('kvmbak: lab-one: retention kept 1 set, removed 1');
    expect(journal).toContain('kvmbak: lab-two: retention kept 1 set, removed 0');
    expect((await readManifest(join(dest, 'lab-one', one[0]!))).mode).toBe('pause');
    const m2 = await readManifest(join(dest, 'lab-two', two[0]!));
    expect(m2.mode).toBe('save');
    expect(m2.memory && memorySetFile(m2.memory)).toBe('memory.state');
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
    // The hook's output is in kvmbak's log (here the service's journal).
    expect(journal).toContain('kvmbak: hook pre-hold (lab-two): hook says pre-hold');

    const text = readFileSync(metricsFile, 'utf8');
    expect(text).toContain('# TYPE kvmbak_last_run_success gauge');
    const metrics: Record<string, number> = {};
    for (const line of text.split('\n')) {
      const m = /^(\w+)\{domain="([^"]+)",dest="([^"]*)"\} (\S+)$/.exec(line);
      if (m) {
        expect(m[3]).toBe(dest);
        metrics[`${m[1]} ${m[2]}`] = Number(m[4]);
      }
    }
    const now = Date.now() / 1000;
    for (const d of ['lab-one', 'lab-two']) {
      const lvBytes = Object.values(fx.domains[d]!.disks).reduce((n, lv) => n + fx.lvs[lv]!.bytes, 0);
      expect(metrics[`kvmbak_last_run_success ${d}`], d).toBe(1);
      expect(metrics[`kvmbak_last_success_timestamp_seconds ${d}`]).toBeGreaterThan(now - 600);
      expect(metrics[`kvmbak_last_success_timestamp_seconds ${d}`]).toBeLessThanOrEqual(now);
      expect(metrics[`kvmbak_last_run_timestamp_seconds ${d}`]).toBe(metrics[`kvmbak_last_success_timestamp_seconds ${d}`]);
      expect(metrics[`kvmbak_last_run_duration_seconds ${d}`]).toBeGreaterThan(0);
      expect(metrics[`kvmbak_last_run_read_bytes ${d}`]).toBe(lvBytes);
      expect(metrics[`kvmbak_last_run_written_bytes ${d}`]).toBeGreaterThan(0);
      expect(metrics[`kvmbak_last_run_written_bytes ${d}`]).toBeLessThan(lvBytes + 256 * MiB);
      expect(metrics[`kvmbak_last_run_downtime_seconds ${d}`]).toBeGreaterThan(0);
    }
    expect(Object.keys(metrics)).toHaveLength(14);

    const status = await cli(['status', dest, '--max-age', '1h']);
    expect(status.code, status.stdout).toBe(0);
    expect(status.stdout).toMatch(/\nlab-one +\d{8}T\d{6}Z\S* .* ok \S+ +ok\nlab-two /);
  });

  it('a failing pre-hold hook leaves the VM running and no set; status --max-age exits 1 until the next run of it succeeds (with --bwlimit under its unlimited rate: the measured rate stays under the limit)', async () => {
    const before = setsOf(dest, 'lab-one');
    writeFileSync(hookLog, '');
    writeFileSync(failFlag, '');
    try {
      const r = await cli(['backup', 'lab-one', '--config', config]);
      expect(r.code).toBe(1);
      expect(r.stderr).toContain('kvmbak: hook pre-hold (lab-one): refusing pre-hold');
      expect(r.stderr).toMatch(/kvmbak: hook \S+hook\.sh pre-hold exited with status 3\n$/);
    } finally {
      unlinkSync(failFlag);
    }
    expect(await domState('lab-one')).toBe('running');
    expect(setsOf(dest, 'lab-one')).toEqual(before);
    expect(leftovers(dest, 'lab-one')).toEqual([]);
    expect(readFileSync(hookLog, 'utf8').trim().split('\n')).toEqual([
      'job-start   ',
      'backup-start lab-one pause ',
      'pre-hold lab-one pause ',
      'backup-abort lab-one pause failed',
      'job-end   failed',
    ]);

    const bad = await cli(['status', dest, '--max-age', '1h']);
    expect(bad.code, bad.stdout).toBe(1);
    expect(bad.stdout).toMatch(/\nlab-one .* FAILED .*last run failed at \S+: hook \S+ pre-hold exited with status 3\n/);
    expect(bad.stdout).toMatch(/\nlab-two .* ok \S+ +ok\n/);

    // The next run of lab-one, capped at half the rate it reached without a cap (the lab's speed
    // varies with the host's load: a fixed cap might not bind), in KiB/s as an admin writes it.
    const limitKiB = Math.floor(unlimitedRate / 2 / 1024);
    const limit = limitKiB * 1024;
    expect(limitKiB).toBeGreaterThan(0);
    const ok = await cli(['backup', 'lab-one', '--config', config, '--bwlimit', `${limitKiB}K`, '--json']);
    expect(ok.code, ok.stderr).toBe(0);
    const o = (JSON.parse(ok.stdout) as JobJson).results[0]!;
    expect(o.bwlimit).toBe(limit);
    expect(o.result.disks[0]!.rawBytes).toBe(fx.lvs['lab-one-disk0']!.bytes);
    expect(o.readBytesPerSecond).toBeGreaterThan(0);
    expect(o.readBytesPerSecond).toBeLessThanOrEqual(limit);
    console.log(
      `[measure] lab-one read rate: ${(unlimitedRate / MiB).toFixed(1)} MiB/s unlimited, ${(o.readBytesPerSecond! / MiB).toFixed(2)} MiB/s with --bwlimit ${limitKiB}K`,
    );

    const good = await cli(['status', dest, '--max-age', '1h']);
    expect(good.code, good.stdout).toBe(0);
  });

  it('--all skips the domain with a qcow2 disk with one warning line and backs up the rest', async () => {
    const d = mkdtempSync(join(work, 'all-'));
    // lab-one and lab-two are covered above (and lab-linux, when it runs, has a qcow2 disk too;
    // lab-thin belongs to the thin suite): the rest is lab-agent (running, paused for its snapshot)
    // and lab-cdrom (shut off). Every other defined domain is excluded.
    const defined = (await virsh('list', '--all', '--name')).stdout
      .split('\n')
      .map((s) => s.trim())
      .filter(Boolean);
    const rest = ['lab-agent', 'lab-cdrom'];
    const excluded = defined.filter((n) => ![...rest, 'lab-qcow'].includes(n));
    const allConfig = join(work, 'all.toml');
    writeFileSync(allConfig, `uri = "${fx.uri}"\ndest = "${d}"\nformat = "image"\n\n[domain.lab-agent]\nmode = "pause"\n`);
    const r = await cli(['backup', '--all', '--config', allConfig, ...excluded.flatMap((n) => ['--exclude-domain', n])]);
    expect(r.code, r.stderr).toBe(0);
    const warnings = r.stderr.split('\n').filter((l) => /warning/.test(l) && !l.includes('bypassing the page cache'));
    expect(warnings).toEqual([
      `kvmbak: warning: skipping lab-qcow: disk vdb of domain lab-qcow is a file qcow2 disk (${fx.files.qcow2}), not an LVM logical volume; kvmbak backs up LVM disks only — leave it out with --exclude vdb`,
    ]);
    expect(r.stderr).toMatch(/kvmbak: 2 backed up, 1 skipped\n$/);
    expect(setsOf(d, 'lab-agent')).toHaveLength(1);
    expect(setsOf(d, 'lab-cdrom')).toHaveLength(1);
    expect(setsOf(d, 'lab-qcow')).toEqual([]);
    expect((await readManifest(join(d, 'lab-agent', setsOf(d, 'lab-agent')[0]!))).mode).toBe('pause');
    expect((await readManifest(join(d, 'lab-cdrom', setsOf(d, 'lab-cdrom')[0]!))).mode).toBe('offline');
    expect(await domState('lab-agent')).toBe('running');
    expect(await domState('lab-qcow')).toBe('shut off');
  });

  it('kill -9 while the VM is saved, then the boot-time recover unit brings it back running', async () => {
    const before = setsOf(dest, 'lab-two');
    let killed = false;
    const run = await runCli(['backup', 'lab-two', '--config', config, '--json'], {
      onEvent: (e, kill) => {
        if (!killed && e.type === 'phase' && e.phase === 'snapshot') {
          killed = true;
          kill();
        }
      },
    });
    expect(run.signal, run.stderr.slice(-2000)).toBe('SIGKILL');
    await lvmSettled();
    expect(await domState('lab-two')).toBe('shut off');

    const since = journalNow();
    const rec = await sh('systemctl', ['start', 'kvmbak-recover.service'], { check: false });
    const journal = await journalOf('kvmbak-recover.service', since, /restored lab-two from its saved memory/);
    expect(rec.code, journal).toBe(0);
    expect(journal).toMatch(/lab-two \S+: restored lab-two from its saved memory/);
    expect(await domState('lab-two')).toBe('running');
    expect(setsOf(dest, 'lab-two')).toEqual(before);
    expect(leftovers(dest, 'lab-two')).toEqual([]);
  });
});
