/**
 * `kvmbak backup`, `inspect` and `recover` as a user runs them: the built CLI
 * in a child process, on a private copy of the libvirt test-driver node
 * (--uri test:///…), with PATH starting at test/fixtures/bin where fake lvm2
 * executables answer from a simulated world kept in a JSON file (the same
 * world as the unit tests', transpiled once here).
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { copyFile, mkdir, mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { currentBootId, readManifest } from '../../src/index.js';
import { type WorldState, createWorld, loadState, loadTemplates, saveState } from '../unit/backup/fake-lvm-world.js';
import { defaultWorld } from '../unit/backup/helpers.js';
import { ensureBuilt, kvmbak as run, root, writeFakeWorldModule } from './helpers.js';

const bin = join(root, 'test', 'fixtures', 'bin');

let shared: string;
let worldModule: string;
beforeAll(async () => {
  ensureBuilt();
  shared = await mkdtemp(join(tmpdir(), 'kvmbak-cli-backup-'));
  worldModule = await writeFakeWorldModule(shared);
}, 120_000);
afterAll(async () => {
  if (shared) await rm(shared, { recursive: true, force: true });
});

interface Run {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

interface Case {
  dir: string;
  uri: string;
  dest: string;
  statePath: string;
  world(): WorldState;
  kvmbak(args: string[], onStderr?: (text: string, kill: (sig: NodeJS.Signals) => void) => void): Promise<Run>;
}

/**
 * A backup of web-01 into image files that gets `sig` once it says it is archiving vda: 48 MiB of
 * random data at level 9 on one thread takes a while to archive.
 */
async function signalledWhileArchiving(sig: NodeJS.Signals): Promise<{ c: Case; r: Run }> {
  const spec = defaultWorld();
  spec.vgs[0].size = 256 << 20;
  spec.lvs[0] = { vg: 'vg0', lv: 'web-root', content: randomBytes(48 << 20) };
  const c = await makeCase(spec);
  let sent = false;
  const r = await c.kvmbak(
    ['backup', 'web-01', '--dest', c.dest, '--uri', c.uri, '--format', 'image', '--level', '9', '--threads', '1'],
    (text, kill) => {
      if (!sent && text.includes('archiving vda')) {
        sent = true;
        kill(sig);
      }
    },
  );
  return { c, r };
}

let dirs: string[] = [];
afterEach(async () => {
  for (const d of dirs) await rm(d, { recursive: true, force: true });
  dirs = [];
});

async function makeCase(spec = defaultWorld()): Promise<Case> {
  const dir = await mkdtemp(join(tmpdir(), 'kvmbak-cli-backup-'));
  dirs.push(dir);
  const xml = join(dir, 'node.xml');
  await copyFile(join(root, 'test', 'fixtures', 'libvirt', 'backup-node.xml'), xml);
  const dest = join(dir, 'dest');
  await mkdir(dest, { mode: 0o700 });
  await mkdir(join(dir, 'lv'));
  const statePath = join(dir, 'lvm-world.json');
  saveState(statePath, createWorld(join(dir, 'lv'), loadTemplates(join(root, 'test', 'fixtures', 'lvm')), spec));
  const uri = `test://${xml}`;
  return {
    dir,
    uri,
    dest,
    statePath,
    world: () => loadState(statePath),
    kvmbak: (args, onStderr) =>
      (() => {
        const env: NodeJS.ProcessEnv = {
          ...process.env,
          PATH: `${bin}:${process.env.PATH ?? ''}`,
          KVMBAK_FAKE_LVM_STATE: statePath,
          KVMBAK_FAKE_LVM_WORLD: worldModule,
          FORCE_COLOR: '0',
        };
        delete env.LIBVIRT_DEFAULT_URI;
        return run(args, { env, ...(onStderr ? { onStderr: (text, child) => onStderr(text, (sig) => child.kill(sig)) } : {}) });
      })(),
  };
}

const setDirs = async (c: Case, domain: string): Promise<string[]> =>
  existsSync(join(c.dest, domain)) ? (await readdir(join(c.dest, domain))).sort() : [];

/**
 * A complete set checked with real tools: manifest, sha256sum -c, and each disk as its LV: zcat of
 * its image (format image), or of its chunk files in list order from DEST/.chunks (format chunks).
 */
async function expectCompleteSet(setPath: string, disks: Record<string, Buffer>, format: 'chunks' | 'image'): Promise<void> {
  await readManifest(setPath);
  execFileSync('sha256sum', ['--quiet', '-c', 'SHA256SUMS'], { cwd: setPath });
  expect((await readdir(join(setPath, 'disks'))).sort()).toEqual(Object.keys(disks).map((t) => (format === 'image' ? `${t}.img.gz` : `${t}.chunks`)));
  for (const [target, content] of Object.entries(disks)) {
    const raw =
      format === 'image'
        ? execFileSync('zcat', [join(setPath, 'disks', `${target}.img.gz`)], { maxBuffer: 64 << 20 })
        : execFileSync(
            'bash',
            ['-c', 'set -o pipefail; grep -v "^#" "$1" | xargs cat | zcat', 'rebuild', join(setPath, 'disks', `${target}.chunks`)],
            {
              cwd: join(setPath, '..', '..', '.chunks'),
              maxBuffer: 64 << 20,
            },
          );
    expect(raw.equals(content)).toBe(true);
  }
}

const lvFile = (c: Case, vg: string, lv: string): string => c.world().lvs.find((l) => l.vg === vg && l.lv === lv)!.file;

describe('kvmbak backup', () => {
  it('backs a running domain up into the chunk store (the default format): exit 0, a complete set, the snapshots gone', async () => {
    const c = await makeCase();
    const vda = await readFile(lvFile(c, 'vg0', 'web-root'));
    const vdb = await readFile(lvFile(c, 'vg0', 'web-data'));
    const r = await c.kvmbak(['backup', 'web-01', '--dest', c.dest, '--uri', c.uri, '--threads', '2']);
    expect(r.code).toBe(0);
    const sets = await setDirs(c, 'web-01');
    expect(sets).toEqual([expect.stringMatching(/^\d{8}T\d{6}Z$/)]);
    const setPath = join(c.dest, 'web-01', sets[0]);
    expect(r.stdout.split('\n')[0]).toBe(`backed up web-01 (save) to ${setPath}`);
    expect(r.stdout).toMatch(/downtime +\d+ ms; state running → running/);
    expect(r.stdout).toContain('skipped sda: cdrom: removable media are not backed up');
    // Progress lines on stderr (not a TTY: no bar), the bypass-cache fallback of the test driver among them.
    expect(r.stderr).toContain('kvmbak: web-01: saving the memory of web-01');
    expect(r.stderr).toContain('does not support bypassing the page cache');
    expect(r.stdout).toMatch(/\n {2}vda +2\.00 MiB → 1 new of 1 chunks \(/);
    await expectCompleteSet(setPath, { vda, vdb }, 'chunks');
    const w = c.world();
    expect(w.lvs.filter((l) => l.origin !== null)).toEqual([]);
    expect(w.calls.filter((x) => x[0] === 'lvcreate')).toHaveLength(2);
  });

  it('--json: one result document on stdout, JSON progress lines on stderr', async () => {
    const c = await makeCase();
    const j = await c.kvmbak(['backup', 'db-01', '--dest', c.dest, '--uri', c.uri, '--json']);
    expect(j.code).toBe(0);
    const doc = JSON.parse(j.stdout) as {
      ok: boolean;
      results: { domain: string; ok: boolean; result: { setPath: string; mode: string; stateAfter: string } }[];
    };
    expect(doc).toMatchObject({ ok: true, results: [{ domain: 'db-01', ok: true, result: { mode: 'offline', stateAfter: 'shutoff' } }] });
    await readManifest(doc.results[0].result.setPath);
    const events = j.stderr
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { event: string; type: string; phase?: string });
    expect(events.every((e) => e.event === 'backup')).toBe(true);
    expect(events.filter((e) => e.type === 'phase').map((e) => e.phase)).toContain('commit');
  });

  it('--dry-run prints the plan and touches nothing', async () => {
    const c = await makeCase();
    const r = await c.kvmbak(['backup', 'web-01', '--dest', c.dest, '--uri', c.uri, '--dry-run']);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^\(dry run: nothing was touched\)\ndomain web-01 \(6695eb01-f6a4-8304-79aa-97f2502e193f\) on test:\/\/\/.*: running\n/);
    expect(r.stdout).toMatch(/disk vda +\/dev\/vg0\/web-root → vg0\/web-root 2\.00 MiB pool vg0, snapshot 2\.00 MiB vg0\/web-root-kvmbak-/);
    expect(await readdir(c.dest)).toEqual([]);
    expect([...new Set(c.world().calls.map((x) => x[0]))].sort()).toEqual(['lvs', 'vgs']);
  });

  it('a domain with a file disk: exit 1 and one line saying which disk and how to leave it out', async () => {
    const c = await makeCase();
    const r = await c.kvmbak(['backup', 'files-01', '--dest', c.dest, '--uri', c.uri]);
    expect(r.code).toBe(1);
    expect(r.stderr.split('\n').filter((l) => !l.startsWith('kvmbak: files-01: planning'))).toEqual([
      'kvmbak: disk vdb of domain files-01 is a file qcow2 disk (/var/lib/libvirt/images/files-01-data.qcow2), not an LVM ' +
        'logical volume; kvmbak backs up LVM disks only — leave it out with --exclude vdb',
      '',
    ]);
    expect(r.stdout).toBe('');
    expect(await readdir(c.dest)).toEqual([]);
  });

  it('usage errors exit 2: a bad --mode, an --exclude naming no disk', async () => {
    const c = await makeCase();
    const bad = await c.kvmbak(['backup', 'web-01', '--dest', c.dest, '--uri', c.uri, '--mode', 'snapshot']);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/Invalid values:\n\s+Argument: mode, Given: "snapshot", Choices: "save", "pause", "quiesce", "offline"/);
    const ex = await c.kvmbak(['backup', 'web-01', '--dest', c.dest, '--uri', c.uri, '--exclude', 'vdz']);
    expect(ex.code).toBe(2);
    expect(ex.stderr).toContain('kvmbak: --exclude vdz: domain web-01 has no disk vdz (its disks: vda, vdb, sda)\n');
    expect(await readdir(c.dest)).toEqual([]);
  });

  it('two domains, one failing: exit 1, the other one backed up (--format image: a self-contained image set)', async () => {
    const c = await makeCase();
    const vda = await readFile(lvFile(c, 'vg0', 'web-root'));
    const vdb = await readFile(lvFile(c, 'vg0', 'web-data'));
    const r = await c.kvmbak(['backup', 'files-01', 'web-01', '--dest', c.dest, '--uri', c.uri, '--mode', 'pause', '--format', 'image']);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('kvmbak: files-01: disk vdb of domain files-01 is a file qcow2 disk');
    expect(r.stderr).toMatch(/kvmbak: 1 of 2 backups failed: files-01\n$/);
    const sets = await setDirs(c, 'web-01');
    expect(sets).toHaveLength(1);
    await expectCompleteSet(join(c.dest, 'web-01', sets[0]), { vda, vdb }, 'image');
    expect(existsSync(join(c.dest, '.chunks'))).toBe(false);
    expect(await setDirs(c, 'files-01')).toEqual([]);
  });

  it('SIGINT while archiving: exit 130, nothing left', async () => {
    const { c, r } = await signalledWhileArchiving('SIGINT');
    expect(r.code).toBe(130);
    expect(r.stderr).toMatch(/kvmbak: (backup cancelled|interrupted by SIGINT)\n$/);
    expect(await setDirs(c, 'web-01')).toEqual([]);
    expect(c.world().lvs.filter((l) => l.origin !== null)).toEqual([]);
  });
});

// Issue 9: signals that cancel like SIGINT (defect 3), options checked before planning (defect 4), one line per message.
describe('kvmbak backup: hardening', () => {
  for (const [sig, code] of [
    ['SIGHUP', 129],
    ['SIGQUIT', 131],
  ] as const) {
    it(`${sig} in the window (the VM saved): the window finishes, the VM is restored, no snapshot, no set, exit ${code}`, async () => {
      const c = await makeCase();
      let sent = false;
      const r = await c.kvmbak(['backup', 'web-01', '--dest', c.dest, '--uri', c.uri], (text, kill) => {
        if (!sent && text.includes('kvmbak: web-01: snapshot vg0/')) {
          sent = true;
          kill(sig);
        }
      });
      expect(sent).toBe(true);
      expect({ code: r.code, signal: r.signal }).toEqual({ code, signal: null });
      expect(r.stderr).toContain('kvmbak: web-01: restoring web-01 from its saved memory');
      expect(r.stderr).toMatch(new RegExp(`kvmbak: (backup cancelled|interrupted by ${sig})\n$`));
      const w = c.world();
      expect(w.lvs.filter((l) => l.origin !== null)).toEqual([]);
      expect(w.calls.filter((x) => x[0] === 'lvcreate')).toHaveLength(2);
      expect(await setDirs(c, 'web-01')).toEqual([]);
    });
  }

  it('--threads 257 is refused before anything is planned or held: exit 2, one line naming the flag', async () => {
    const c = await makeCase();
    const r = await c.kvmbak(['backup', 'web-01', '--dest', c.dest, '--uri', c.uri, '--threads', '257']);
    expect(r.code).toBe(2);
    expect(r.stderr).toBe("kvmbak: --threads must be a whole number from 1 to 256, got 257\nRun 'kvmbak --help' for usage.\n");
    expect(c.world().calls).toEqual([]);
    expect(await readdir(c.dest)).toEqual([]);
    const t = await c.kvmbak(['backup', 'web-01', '--dest', c.dest, '--uri', c.uri, '--agent-timeout', '0']);
    expect(t.code).toBe(2);
    expect(t.stderr).toContain('kvmbak: --agent-timeout must be a whole number of seconds from 1 to 2147483647, got 0\n');
  });

  it('a single-value option given twice is refused with one line (not a TypeError)', async () => {
    const c = await makeCase();
    const r = await c.kvmbak(['backup', 'web-01', '--dest', c.dest, '-d', c.dest, '--uri', c.uri]);
    expect(r.code).toBe(2);
    expect(r.stderr).toBe("kvmbak: --dest was given 2 times; give it once\nRun 'kvmbak --help' for usage.\n");
    expect(c.world().calls).toEqual([]);
  });

  it('a domain name with a newline cannot forge a line: control characters are escaped', async () => {
    const c = await makeCase();
    const r = await c.kvmbak(['backup', 'web-01\nkvmbak: backed up everything', '--dest', c.dest, '--uri', c.uri]);
    expect(r.code).toBe(1);
    const lines = r.stderr.trimEnd().split('\n');
    expect(lines.filter((l) => l.startsWith('kvmbak: backed up'))).toEqual([]);
    expect(lines.at(-1)).toMatch(
      /^kvmbak: no domain named web-01\\nkvmbak: backed up everything on test:\/\/\/\S+ \(domains: .*\); check the name or --uri$/,
    );
  });
});

describe('kvmbak inspect', () => {
  it('shows the plan of a domain; --json gives it as a document', async () => {
    const c = await makeCase();
    const r = await c.kvmbak(['inspect', 'vol-01', '--uri', c.uri]);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(
      /^domain vol-01 \(7a8b9c0d-1e2f-4a3b-9c4d-5e6f7a8b9c0d\) on test:\/\/\/\S+: running\n {2}mode {10}save \(memory up to 64\.0 MiB\)\n {2}format {8}chunks \(deduplicated into DEST\/\.chunks\)\n {2}disk vda +\/dev\/vg0\/vol-root → vg0\/vol-root 1\.00 MiB pool vg0, snapshot 1\.00 MiB vg0\/vol-root-kvmbak-\S+; first backup into the chunk store \(full read\)\n {2}vg vg0: \S+ MiB free, snapshots need 1\.00 MiB\n$/,
    );
    const image = await c.kvmbak(['inspect', 'vol-01', '--uri', c.uri, '--format', 'image']);
    expect(image.stdout).toMatch(/\n {2}format {8}image \(disks\/TARGET\.img\.gz\)\n {2}disk vda .+; full read into an image\n/);
    const j = await c.kvmbak(['inspect', 'db-01', '--uri', c.uri, '--json']);
    expect(JSON.parse(j.stdout)).toMatchObject({ ok: true, plan: { domain: 'db-01', mode: 'offline', disks: [{ target: 'vda', pool: null }] } });
    const missing = await c.kvmbak(['inspect', 'nope', '--uri', c.uri]);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toMatch(
      /^kvmbak: no domain named nope on test:\/\/\/\S+ \(domains: app-01, db-01, files-01, vol-01, web-01\); check the name or --uri\n$/,
    );
    expect([...new Set(c.world().calls.map((x) => x[0]))].sort()).toEqual(['lvs', 'vgs']);
  });
});

describe('kvmbak recover', () => {
  it('after a kvmbak killed with SIGKILL mid-backup: removes its snapshots and partial set, takes over its lock', async () => {
    const { c, r: crash } = await signalledWhileArchiving('SIGKILL');
    expect(crash.code).toBeNull();
    const left = await setDirs(c, 'web-01');
    expect(left).toEqual(['.journal-' + left[2] + '.json', '.lock', left[2]].sort());
    expect(c.world().lvs.filter((l) => l.origin !== null)).toHaveLength(2);

    const r = await c.kvmbak(['recover', '--dest', c.dest, '--uri', c.uri]);
    expect(r.code).toBe(0);
    const setPath = join(c.dest, 'web-01', left[2]);
    expect(r.stdout.split('\n')).toEqual([
      expect.stringMatching(new RegExp(`^web-01 ${left[2]}: removed snapshot vg0/web-root-kvmbak-`)),
      expect.stringMatching(new RegExp(`^web-01 ${left[2]}: removed snapshot vg0/web-data-kvmbak-`)),
      `web-01 ${left[2]}: deleted the partial set ${setPath}`,
      '',
    ]);
    expect(await setDirs(c, 'web-01')).toEqual([]);
    expect(c.world().lvs.filter((l) => l.origin !== null)).toEqual([]);
    // Nothing more to do.
    const again = await c.kvmbak(['recover', '--dest', c.dest, '--uri', c.uri, '--json']);
    expect(JSON.parse(again.stdout)).toEqual({ ok: true, runs: [], orphanSnapshots: [], errors: [] });
  });

  it('a damaged journal: exit 1 with what to do, and the next backup refuses', async () => {
    const c = await makeCase();
    await mkdir(join(c.dest, 'web-01'), { mode: 0o700 });
    const journal = join(c.dest, 'web-01', '.journal-20260101T000000Z.json');
    await writeFile(journal, JSON.stringify({ format: 'kvmbak-journal/1', owner: { pid: 1, host: hostname(), bootId: currentBootId() } }));
    const r = await c.kvmbak(['recover', '--dest', c.dest, '--uri', c.uri]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(
      new RegExp(
        `^kvmbak: web-01 20260101T000000Z: journal is unreadable \\(.*\\); check the domain, remove snapshots tagged kvmbak by hand, then delete ${journal}\n$`,
      ),
    );
    const usage = await c.kvmbak(['recover', 'web-01', '--uri', c.uri]);
    expect(usage.code).toBe(2);
    expect(usage.stderr).toContain('kvmbak: recovering one domain needs --dest, where its journals are\n');
    const b = await c.kvmbak(['backup', 'web-01', '--dest', c.dest, '--uri', c.uri]);
    expect(b.code).toBe(1);
    expect(b.stderr).toMatch(/kvmbak: an interrupted backup of web-01 could not be undone/);
    expect(c.world().calls.filter((x) => x[0] === 'lvcreate')).toEqual([]);
  });
});
