/**
 * Unattended runs as the timer runs them: the built CLI on a private copy of
 * the libvirt test-driver node, fake lvm2 executables (test/fixtures/bin)
 * over a simulated world, a configuration file, a real hook script, the
 * metrics file and `kvmbak status`.
 */
import { chmod, copyFile, mkdir, mkdtemp, readFile, readdir, rm, stat, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { chunkCount, chunkIdAt, chunkStorePath, readChunkList, readManifest } from '../../src/index.js';
import { buildSet } from '../unit/store/helpers.js';
import { createWorld, loadTemplates, saveState } from '../unit/backup/fake-lvm-world.js';
import { defaultWorld } from '../unit/backup/helpers.js';
import { type CliRun, ensureBuilt, kvmbak as run, root, writeFakeWorldModule } from './helpers.js';

const bin = join(root, 'test', 'fixtures', 'bin');
let shared: string;
let worldModule: string;
beforeAll(async () => {
  ensureBuilt();
  shared = await mkdtemp(join(tmpdir(), 'kvmbak-cli-jobs-'));
  worldModule = await writeFakeWorldModule(shared);
}, 120_000);
afterAll(async () => {
  if (shared) await rm(shared, { recursive: true, force: true });
});

let dirs: string[] = [];
afterEach(async () => {
  for (const d of dirs) await rm(d, { recursive: true, force: true });
  dirs = [];
});

interface Case {
  dir: string;
  uri: string;
  dest: string;
  config: string;
  hookLog: string;
  hook: string;
  /** Runs the CLI on this case; `env` adds variables (e.g. the hook's FAIL_PHASE). */
  kvmbak(args: string[], env?: Record<string, string>): Promise<CliRun>;
}

/** A hook that logs each call (phase and KVMBAK_* facts) and fails in the phase named by FAIL_PHASE. */
const HOOK = `#!/bin/sh
echo "$1 domain=\${KVMBAK_DOMAIN:-} mode=\${KVMBAK_MODE:-} set=\${KVMBAK_SET:+yes} status=\${KVMBAK_STATUS:-} error=\${KVMBAK_ERROR:+yes}" >> "$HOOK_LOG"
echo "hook says $1"
if [ "$1" = "\${FAIL_PHASE:-}" ]; then echo "refusing $1" >&2; exit 3; fi
`;

async function makeCase(configText: (c: { dest: string; hook: string; metrics: string }) => string): Promise<Case> {
  const dir = await mkdtemp(join(tmpdir(), 'kvmbak-cli-jobs-'));
  dirs.push(dir);
  const xml = join(dir, 'node.xml');
  await copyFile(join(root, 'test', 'fixtures', 'libvirt', 'backup-node.xml'), xml);
  const dest = join(dir, 'dest');
  await mkdir(dest, { mode: 0o700 });
  await mkdir(join(dir, 'lv'));
  const statePath = join(dir, 'lvm-world.json');
  saveState(statePath, createWorld(join(dir, 'lv'), loadTemplates(join(root, 'test', 'fixtures', 'lvm')), defaultWorld()));
  const hook = join(dir, 'hook.sh');
  await writeFile(hook, HOOK);
  await chmod(hook, 0o755);
  const hookLog = join(dir, 'hook.log');
  const config = join(dir, 'kvmbak.toml');
  await writeFile(config, configText({ dest, hook, metrics: join(dir, 'kvmbak.prom') }));
  const uri = `test://${xml}`;
  return {
    dir,
    uri,
    dest,
    config,
    hookLog,
    hook,
    kvmbak: (args, env = {}) => {
      const e: NodeJS.ProcessEnv = {
        ...process.env,
        PATH: `${bin}:${process.env.PATH ?? ''}`,
        KVMBAK_FAKE_LVM_STATE: statePath,
        KVMBAK_FAKE_LVM_WORLD: worldModule,
        HOOK_LOG: hookLog,
        ...env,
      };
      delete e.LIBVIRT_DEFAULT_URI;
      return run([...args, '--uri', uri], { env: e });
    },
  };
}

const sets = async (dest: string, domain: string): Promise<string[]> =>
  (await readdir(join(dest, domain)).catch(() => [] as string[])).filter((n) => /^\d{8}T\d{6}Z/.test(n)).sort();

/** name{labels} value → { 'name{domain}': value } keyed by name and domain. */
function parseMetrics(text: string): Record<string, number> {
  const out: Record<string, number> = {};
  for (const line of text.split('\n')) {
    const m = /^(\w+)\{domain="([^"]+)",dest="[^"]*"\} (\S+)$/.exec(line);
    if (m) out[`${m[1]}{${m[2]}}`] = Number(m[3]);
  }
  return out;
}

describe('kvmbak backup with a configuration file', () => {
  it('backs up the configured domains with their own settings (format: the chunk store by default, image where set), calls the hook at every phase, prunes, writes metrics', async () => {
    const c = await makeCase(
      ({ dest, hook, metrics }) => `dest = "${dest}"
domains = ["db-01", "web-01"]
hook = "${hook}"
metrics-file = "${metrics}"
threads = 2

[domain.web-01]
mode = "pause"
format = "image"
keep-last = 1
`,
    );
    const first = await c.kvmbak(['backup', '--config', c.config]);
    expect(first.code, first.stderr).toBe(0);
    const second = await c.kvmbak(['backup', '--config', c.config, '--json']);
    expect(second.code, second.stderr).toBe(0);
    const doc = JSON.parse(second.stdout) as {
      ok: boolean;
      results: { domain: string; ok: boolean; result: { mode: string }; retention?: { kept: number; removed: string[] } }[];
    };
    expect(doc.ok).toBe(true);
    expect(doc.results.map((r) => [r.domain, r.result.mode])).toEqual([
      ['db-01', 'offline'],
      ['web-01', 'pause'],
    ]);
    // Retention only where configured: web-01 keeps 1 set, db-01 both.
    expect(doc.results[1]!.retention).toMatchObject({ kept: 1, removed: [expect.stringContaining(join(c.dest, 'web-01'))] });
    expect(doc.results[0]!.retention).toBeUndefined();
    expect(await sets(c.dest, 'web-01')).toHaveLength(1);
    expect(await sets(c.dest, 'db-01')).toHaveLength(2);
    await readManifest(join(c.dest, 'web-01', (await sets(c.dest, 'web-01'))[0]!));
    expect(await readdir(join(c.dest, 'web-01', (await sets(c.dest, 'web-01'))[0]!, 'disks'))).toEqual(['vda.img.gz', 'vdb.img.gz']);
    expect(await readdir(join(c.dest, 'db-01', (await sets(c.dest, 'db-01'))[1]!, 'disks'))).toEqual(['vda.chunks']);

    // Every phase, in order, with its facts; the hook's output is in kvmbak's log.
    const calls = (await readFile(c.hookLog, 'utf8')).trim().split('\n');
    const oneRun = [
      'job-start domain= mode= set= status= error=',
      'backup-start domain=db-01 mode= set= status= error=',
      'pre-hold domain=db-01 mode=offline set=yes status= error=',
      'post-resume domain=db-01 mode=offline set=yes status= error=',
      'backup-end domain=db-01 mode=offline set=yes status=ok error=',
      'backup-start domain=web-01 mode=pause set= status= error=',
      'pre-hold domain=web-01 mode=pause set=yes status= error=',
      'post-resume domain=web-01 mode=pause set=yes status= error=',
      'backup-end domain=web-01 mode=pause set=yes status=ok error=',
      'job-end domain= mode= set= status=ok error=',
    ];
    expect(calls).toEqual([...oneRun, ...oneRun]);
    expect(first.stderr).toContain('kvmbak: hook pre-hold (web-01): hook says pre-hold');

    const metrics = parseMetrics(await readFile(join(c.dir, 'kvmbak.prom'), 'utf8'));
    for (const d of ['db-01', 'web-01']) {
      expect(metrics[`kvmbak_last_run_success{${d}}`]).toBe(1);
      expect(metrics[`kvmbak_last_success_timestamp_seconds{${d}}`]).toBeGreaterThan(Date.now() / 1000 - 600);
      expect(metrics[`kvmbak_last_run_read_bytes{${d}}`]).toBeGreaterThan(0);
      expect(metrics[`kvmbak_last_run_duration_seconds{${d}}`]).toBeGreaterThan(0);
    }
    expect(metrics['kvmbak_last_run_downtime_seconds{web-01}']).toBeGreaterThanOrEqual(0);
    // The second run wrote web-01's images again; db-01's disk, unchanged, was all in the chunk store already.
    expect(metrics['kvmbak_last_run_written_bytes{web-01}']).toBeGreaterThan(0);
    expect(metrics['kvmbak_last_run_written_bytes{db-01}']).toBe(0);

    const status = await c.kvmbak(['status', c.dest, '--max-age', '1h']);
    expect(status.code, status.stdout).toBe(0);
    expect(status.stdout).toMatch(/^DOMAIN +NEWEST SET +AGE +LAST RUN +STATUS\ndb-01 +\d{8}T\d{6}Z +(\d+m )?\d+s +ok \S+ +ok\nweb-01 /);
  }, 300_000);

  it('retention after the backup collects the chunk store: the chunks only the pruned sets used are gone', async () => {
    const c = await makeCase(
      ({ dest }) => `dest = "${dest}"
domains = ["web-01"]

[domain.web-01]
mode = "pause"
keep-last = 1
`,
    );
    // an older set of web-01 in the chunk store, its chunks dated an hour back (a collection keeps what was used in its own second)
    const old = await buildSet(c.dest, 'web-01', new Date(Date.now() - 2 * 24 * 3600_000), { format: 'chunks', mode: 'pause' });
    const list = await readChunkList(join(old.set.path, 'disks', 'vda.chunks'));
    const ids = Array.from({ length: chunkCount(list) }, (_, i) => chunkIdAt(list, i));
    const chunkPath = (id: string): string => join(chunkStorePath(c.dest), id.slice(0, 4), id);
    const hourAgo = new Date(Date.now() - 3600_000);
    for (const id of ids) await utimes(chunkPath(id), hourAgo, hourAgo);
    const r = await c.kvmbak(['backup', '--config', c.config, '--json']);
    expect(r.code, r.stderr).toBe(0);
    const doc = JSON.parse(r.stdout) as { results: { retention?: { removed: string[]; gc: { status: string; chunksRemoved: number } } }[] };
    const retention = doc.results[0]!.retention!;
    expect(retention.removed).toEqual([old.set.path]);
    // its own chunk (the 4th) is gone; others may be shared with the new set if it is in the store too
    expect(retention.gc).toMatchObject({ status: 'collected' });
    expect(retention.gc.chunksRemoved).toBeGreaterThanOrEqual(1);
    await expect(stat(chunkPath(ids[3]!))).rejects.toMatchObject({ code: 'ENOENT' });
  });

  it('a failing pre-hold hook: the domain is not held, no set is left, the run fails; status says so until a run succeeds', async () => {
    const c = await makeCase(({ dest, hook }) => `dest = "${dest}"\nhook = "${hook}"\n`);
    expect((await c.kvmbak(['backup', 'db-01', '--config', c.config])).code).toBe(0);
    const r = await c.kvmbak(['backup', 'db-01', '--config', c.config], { FAIL_PHASE: 'pre-hold' });
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/kvmbak: hook \/\S+hook.sh pre-hold exited with status 3\n$/);
    expect(r.stderr).toContain('kvmbak: hook pre-hold (db-01): refusing pre-hold');
    expect(await sets(c.dest, 'db-01')).toHaveLength(1);
    const calls = (await readFile(c.hookLog, 'utf8')).trim().split('\n').slice(6);
    expect(calls).toEqual([
      'job-start domain= mode= set= status= error=',
      'backup-start domain=db-01 mode= set= status= error=',
      'pre-hold domain=db-01 mode=offline set=yes status= error=',
      'backup-abort domain=db-01 mode=offline set=yes status=failed error=yes',
      'job-end domain= mode= set= status=failed error=yes',
    ]);
    const bad = await c.kvmbak(['status', c.dest, '--max-age', '1h']);
    expect(bad.code).toBe(1);
    expect(bad.stdout).toMatch(/db-01 .* FAILED .*last run failed at \S+: hook \S+ pre-hold exited with status 3/);
    expect((await c.kvmbak(['backup', 'db-01', '--config', c.config])).code).toBe(0);
    expect((await c.kvmbak(['status', c.dest, '--max-age', '1h'])).code).toBe(0);
  }, 180_000);

  it('--all skips a domain with a file disk with one warning line and backs up the rest; --exclude-domain leaves one out', async () => {
    const c = await makeCase(({ dest }) => `dest = "${dest}"\nthreads = 2\n`);
    const r = await c.kvmbak(['backup', '--all', '--config', c.config, '--exclude-domain', 'app-01', '--exclude-domain', 'vol-01']);
    expect(r.code, r.stderr).toBe(0);
    const warnings = r.stderr.split('\n').filter((l) => l.includes('warning') && !l.includes('bypassing the page cache'));
    expect(warnings).toEqual([
      'kvmbak: warning: skipping files-01: disk vdb of domain files-01 is a file qcow2 disk (/var/lib/libvirt/images/files-01-data.qcow2), not an LVM logical volume; kvmbak backs up LVM disks only — leave it out with --exclude vdb',
    ]);
    expect(r.stderr).toMatch(/kvmbak: 2 backed up, 1 skipped\n$/);
    expect(await sets(c.dest, 'web-01')).toHaveLength(1);
    expect(await sets(c.dest, 'db-01')).toHaveLength(1);
    expect(await sets(c.dest, 'app-01')).toHaveLength(0);
    expect(await sets(c.dest, 'files-01')).toHaveLength(0);
  }, 180_000);
});

describe('configuration errors', () => {
  it('one line naming file, line and key; exit 2', async () => {
    const cases: [string, RegExp][] = [
      ['dest = "/b"\nlevle = 3\n', /:2: levle: unknown key; known keys: /],
      ['dest = "/b"\nlevel = "high"\n', /:2: level: must be a whole number from 1 to 9, got "high"$/],
      ['bwlimit = "fast"\n', /:1: bwlimit: "fast" is not a size; write e.g. "200M" or "1G"$/],
      [
        'dest = "/b"\n\n[domain.web-1]\nmode = "pause"\n',
        /:3: domain.web-1: no domain named web-1 is defined \(defined: app-01, db-01, files-01, vol-01, web-01\); fix the name or remove the section$/,
      ],
    ];
    for (const [text, re] of cases) {
      const c = await makeCase(() => text);
      for (const args of [
        ['backup', 'web-01', '--config', c.config],
        ['config', '--config', c.config],
      ]) {
        const r = await c.kvmbak(args);
        expect(r.code, `${args[0]}: ${r.stderr}`).toBe(2);
        expect(r.stdout).toBe('');
        const lines = r.stderr.trim().split('\n');
        expect(lines, r.stderr).toHaveLength(1);
        expect(lines[0]!.startsWith(`kvmbak: ${c.config}:`)).toBe(true);
        expect(lines[0]).toMatch(re);
      }
    }
  });

  it('kvmbak config DOMAIN prints the effective settings and where each comes from', async () => {
    const c = await makeCase(({ dest }) => `dest = "${dest}"\nkeep-daily = 7\nbwlimit = "200M"\n\n[domain.web-01]\nmode = "pause"\nkeep-last = 2\n`);
    const r = await c.kvmbak(['config', 'web-01', '--config', c.config]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toBe(
      [
        `# ${c.config}: settings for web-01`,
        `dest = "${c.dest}"    # top of the file`,
        'mode = "pause"    # [domain.web-01]',
        'keep-last = 2    # [domain.web-01]',
        'keep-daily = 7    # top of the file',
        'bwlimit = "200 MiB/s"    # top of the file',
        '',
      ].join('\n'),
    );
  });
});
