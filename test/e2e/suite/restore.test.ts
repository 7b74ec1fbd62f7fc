// kvmbak restore, verify, list and prune against real lvm2 and libvirtd in the lab — and the
// by-hand restore with the standard tools only (the format is only trustworthy if that works).
// lab-two (2 LVs, running) is backed up, destroyed, undefined and its LVs removed: kvmbak restore
// brings it back running from its memory state. A copy goes to a second VG under a new name.
import { spawn } from 'node:child_process';
import { closeSync, cpSync, mkdtempSync, openSync, readSync, readdirSync, rmSync, statSync, truncateSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { backup, readManifest, type BackupResult } from '../../../src/index.js';
import { domState, lab, lvsReport, pipeline, sh, sha256Of, virsh, type LabFixture } from './lab.js';

const CLI = join(process.cwd(), 'dist', 'cli.js');
const COPY_VG = 'vgkvmbakcopy';

function cli(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

async function lvExists(vg: string, lv: string): Promise<boolean> {
  return (await sh('lvs', [`${vg}/${lv}`], { check: false })).code === 0;
}

describe('kvmbak restore in the lab', () => {
  let fx: LabFixture;
  let work: string;
  let dest: string;
  let saveSet: BackupResult;
  let loop = '';

  beforeAll(async () => {
    fx = lab();
    work = mkdtempSync('/var/tmp/kvmbak-e2e-restore-');
    dest = join(work, 'dest');
    await sh('mkdir', ['-m', '700', dest]);
    // A second VG (on a loop device) for restores to another VG.
    const img = join(work, 'copy-pv.raw');
    truncateSync(openAndClose(img), 256 * 1024 * 1024);
    loop = (await sh('losetup', ['-f', '--show', img])).stdout.trim();
    await sh('pvcreate', ['-q', loop]);
    await sh('vgcreate', ['-q', COPY_VG, loop]);
    if ((await domState('lab-two')) !== 'running') await virsh('start', 'lab-two');
    saveSet = await backup({ domain: 'lab-two', dest, uri: fx.uri, format: 'image', mode: 'save' });
  });

  afterAll(async () => {
    for (const name of ['lab-two-copy', 'lab-one-copy']) {
      await virsh('destroy', name).catch(() => undefined);
      await virsh('undefine', name).catch(() => undefined);
    }
    await sh('vgremove', ['-q', '-f', COPY_VG], { check: false });
    if (loop) {
      await sh('pvremove', ['-q', '-f', loop], { check: false });
      await sh('losetup', ['-d', loop], { check: false });
    }
    rmSync(work, { recursive: true, force: true });
  });

  function openAndClose(path: string): string {
    closeSync(openSync(path, 'w', 0o600));
    return path;
  }

  it('verify passes on the fresh set; list shows it complete', async () => {
    const v = await cli(['verify', saveSet.setPath]);
    expect(v.code, v.stdout + v.stderr).toBe(0);
    const l = await cli(['list', dest, 'lab-two', '--json']);
    expect(l.code).toBe(0);
    const doc = JSON.parse(l.stdout) as { sets: { path: string; status?: string; complete?: boolean }[] };
    expect(doc.sets).toHaveLength(1);
  });

  it('after total loss (domain destroyed + undefined, LVs removed) kvmbak restore brings lab-two back running from its memory', async () => {
    const m = await readManifest(saveSet.setPath);
    await virsh('destroy', 'lab-two');
    await virsh('undefine', 'lab-two');
    for (const d of m.disks) await sh('lvremove', ['-q', '-y', `${d.vg}/${d.lv}`]);
    const t = performance.now();
    const r = await cli(['restore', saveSet.setPath, '-c', fx.uri, '--json', '--quiet']);
    const seconds = (performance.now() - t) / 1000;
    expect(r.code, r.stdout + r.stderr).toBe(0);
    const doc = JSON.parse(r.stdout) as {
      memoryRestored: boolean;
      stateAfter: string;
      disks: { created: boolean; rawBytes: number; seconds: number }[];
    };
    console.log(
      `[measure] restore of lab-two (2 LVs, ${m.disks.reduce((n, d) => n + d.image!.rawBytes, 0)} bytes + memory): ${seconds.toFixed(1)} s`,
    );
    expect(doc.memoryRestored).toBe(true);
    expect(doc.stateAfter).toBe('running');
    expect(doc.disks.every((d) => d.created)).toBe(true);
    expect(await domState('lab-two')).toBe('running');
    for (const d of m.disks) {
      const st = await sh('lvs', ['--noheadings', '--units', 'b', '--nosuffix', '-o', 'lv_size', `${d.vg}/${d.lv}`]);
      expect(Number(st.stdout.trim())).toBe(d.lvSize);
      expect(await sha256Of(`/dev/${d.vg}/${d.lv}`)).toBe(d.image!.rawSha256);
    }
  });

  it('restoring again over the running original is refused without --force', async () => {
    const r = await cli(['restore', saveSet.setPath, '-c', fx.uri]);
    expect(r.code).toBe(1);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(await domState('lab-two')).toBe('running');
  });

  it('a copy with --name and --vg goes to new LVs while the original runs; both run', async () => {
    const r = await cli(['restore', saveSet.setPath, '-c', fx.uri, '--name', 'lab-two-copy', '--vg', COPY_VG, '--no-memory', '--json', '--quiet']);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(await domState('lab-two')).toBe('running');
    expect(await domState('lab-two-copy')).toBe('running');
    const m = await readManifest(saveSet.setPath);
    for (const d of m.disks) {
      expect(await lvExists(COPY_VG, d.lv)).toBe(true);
      expect(await sha256Of(`/dev/${COPY_VG}/${d.lv}`)).toBe(d.image!.rawSha256);
    }
    const xml = (await virsh('dumpxml', 'lab-two-copy')).stdout;
    expect(xml).toContain(`/dev/${COPY_VG}/`);
    expect(xml).not.toContain(`/dev/${fx.vg}/`);
    const orig = (await virsh('domuuid', 'lab-two')).stdout.trim();
    expect((await virsh('domuuid', 'lab-two-copy')).stdout.trim()).not.toBe(orig);
  });

  it('a pause set restored with --force over the running original boots it', async () => {
    const p = await backup({ domain: 'lab-one', dest, uri: fx.uri, format: 'image', mode: 'pause' });
    const r = await cli(['restore', p.setPath, '-c', fx.uri, '--force', '--json', '--quiet']);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    const doc = JSON.parse(r.stdout) as { memoryRestored: boolean; started: boolean };
    expect(doc).toMatchObject({ memoryRestored: false, started: true });
    expect(await domState('lab-one')).toBe('running');
  });

  it('verify fails naming the file on a flipped byte and on a truncated image', async () => {
    const m = await readManifest(saveSet.setPath);
    const img = m.disks[0]!.image!.file;
    const bad = join(work, 'flipped', 'lab-two', saveSet.setPath.split('/').pop()!);
    cpSync(saveSet.setPath, bad, { recursive: true });
    const fd = openSync(join(bad, img), 'r+');
    const at = Math.floor(statSync(join(bad, img)).size / 2);
    const b = Buffer.alloc(1);
    readSync(fd, b, 0, 1, at);
    b[0] = b[0]! ^ 0xff;
    writeSync(fd, b, 0, 1, at);
    closeSync(fd);
    const v1 = await cli(['verify', bad]);
    expect(v1.code).toBe(1);
    expect(v1.stdout + v1.stderr).toContain(img);
    const trunc = join(work, 'truncated', 'lab-two', saveSet.setPath.split('/').pop()!);
    cpSync(saveSet.setPath, trunc, { recursive: true });
    truncateSync(join(trunc, img), Math.floor(statSync(join(trunc, img)).size / 3));
    const v2 = await cli(['verify', trunc]);
    expect(v2.code).toBe(1);
    expect(v2.stdout + v2.stderr).toContain(img);
  });

  it('prune keeps what the rules say and never the newest complete set', async () => {
    const pdest = join(work, 'prune');
    const dom = join(pdest, 'lab-two');
    await sh('mkdir', ['-p', '-m', '700', dom]);
    // Five copies of the real set under older names (a day apart).
    const ids: string[] = [];
    for (let i = 5; i >= 1; i--) {
      const t = new Date(Date.now() - i * 86_400_000);
      const id = t
        .toISOString()
        .replace(/[-:]/g, '')
        .replace(/\.\d+Z$/, 'Z');
      cpSync(saveSet.setPath, join(dom, id), { recursive: true });
      ids.push(id);
    }
    const dry = await cli(['prune', pdest, '--keep-last', '2', '--dry-run', '--json']);
    expect(dry.code, dry.stdout + dry.stderr).toBe(0);
    expect(
      readdirSync(dom)
        .filter((n) => !n.startsWith('.'))
        .sort(),
    ).toEqual([...ids].sort());
    const real = await cli(['prune', pdest, '--keep-last', '2']);
    expect(real.code, real.stdout + real.stderr).toBe(0);
    expect(
      readdirSync(dom)
        .filter((n) => !n.startsWith('.'))
        .sort(),
    ).toEqual(ids.slice(-2).sort());
  });

  it('restored to other LVs (--map), lab-two resumes from its memory with the saved XML rewritten', async () => {
    const m = await readManifest(saveSet.setPath);
    const maps = m.disks.flatMap((d) => ['--map', `${d.target}=${COPY_VG}/moved-${d.target}`]);
    const r = await cli(['restore', saveSet.setPath, '-c', fx.uri, ...maps, '--force', '--json', '--quiet']);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    const doc = JSON.parse(r.stdout) as { memoryRestored: boolean; stateAfter: string };
    expect(doc).toMatchObject({ memoryRestored: true, stateAfter: 'running' });
    expect(await domState('lab-two')).toBe('running');
    const xml = (await virsh('dumpxml', 'lab-two')).stdout;
    for (const d of m.disks) {
      expect(xml).toContain(`/dev/${COPY_VG}/moved-${d.target}`);
      expect(await sha256Of(`/dev/${COPY_VG}/moved-${d.target}`)).toBe(d.image!.rawSha256);
    }
    // Put lab-two back on its own LVs for the other suites.
    await virsh('destroy', 'lab-two');
    await virsh('undefine', 'lab-two');
    await virsh('define', join(saveSet.setPath, 'domain.xml'));
    await virsh('start', 'lab-two');
  });

  it('by hand, without kvmbak: sha256sum -c, zcat | dd, virsh define, virsh restore', async () => {
    const m = await readManifest(saveSet.setPath);
    // Checksums with the standard tool, in the set folder.
    const sums = await new Promise<number | null>((resolve) => {
      const c = spawn('sha256sum', ['-c', '--strict', 'SHA256SUMS'], { cwd: saveSet.setPath, stdio: 'ignore' });
      c.on('close', resolve);
    });
    expect(sums).toBe(0);
    await virsh('destroy', 'lab-two');
    await virsh('undefine', 'lab-two');
    for (const d of m.disks) {
      // Wipe the LV so the test proves the data came back from the image.
      const wipe = await pipeline([
        [
          'dd',
          ['if=/dev/zero', `of=/dev/${d.vg}/${d.lv}`, 'bs=4M', 'oflag=direct', 'status=none', `count=${Math.ceil(d.lvSize / (4 * 1024 * 1024))}`],
        ],
      ]);
      expect(wipe.map((s) => s.code === 0 || /No space left/.test(s.stderr))).toEqual([true]);
      const st = await pipeline([
        ['zcat', [join(saveSet.setPath, d.image!.file)]],
        ['dd', [`of=/dev/${d.vg}/${d.lv}`, 'bs=4M', 'status=none', 'conv=fsync']],
      ]);
      expect(st.map((s) => s.code)).toEqual([0, 0]);
      expect(await sha256Of(`/dev/${d.vg}/${d.lv}`, d.image!.rawBytes)).toBe(d.image!.rawSha256);
    }
    await virsh('define', join(saveSet.setPath, 'domain.xml'));
    await virsh('restore', join(saveSet.setPath, 'memory.state'));
    expect(await domState('lab-two')).toBe('running');
  });
});

// Restore never destroys before it has checked (issue 9): a damaged set is refused before the running
// domain is touched; an intact one is written into new LVs beside the old ones, swapped in by name.
describe('kvmbak restore --force: checked first, then written beside and swapped', () => {
  let fx: LabFixture;
  let work: string;
  let set: BackupResult;

  beforeAll(async () => {
    fx = lab();
    work = mkdtempSync('/var/tmp/kvmbak-e2e-swap-');
    await sh('mkdir', ['-m', '700', join(work, 'dest')]);
    if ((await domState('lab-one')) !== 'running') await virsh('start', 'lab-one');
    set = await backup({ domain: 'lab-one', dest: join(work, 'dest'), uri: fx.uri, format: 'image', mode: 'pause' });
  });

  afterAll(() => {
    rmSync(work, { recursive: true, force: true });
  });

  /** VG/LV → [uuid, sha256 of the whole LV] of lab-one's disks. */
  async function lvState(): Promise<Record<string, [string, string]>> {
    const m = await readManifest(set.setPath);
    const out: Record<string, [string, string]> = {};
    for (const d of m.disks) {
      const path = `/dev/${d.vg}/${d.lv}`;
      out[`${d.vg}/${d.lv}`] = [(await lvsReport(path, ['lv_uuid'])).lv_uuid!, await sha256Of(path)];
    }
    return out;
  }

  async function restoreLeftovers(): Promise<string[]> {
    const { stdout } = await sh('lvs', ['--noheadings', '-o', 'lv_name,lv_tags', fx.vg]);
    return stdout
      .split('\n')
      .map((l) => l.trim())
      .filter((l) => /kvmbak-(new|old)-|kvmbak-restore/.test(l));
  }

  it('a set with one flipped byte in an image: refused before anything, the domain runs on, its LVs byte-identical', async () => {
    const m = await readManifest(set.setPath);
    const flipped = join(work, 'flipped', 'lab-one', set.setPath.split('/').pop()!);
    cpSync(set.setPath, flipped, { recursive: true });
    const img = join(flipped, m.disks[0]!.image!.file);
    const fd = openSync(img, 'r+');
    const at = Math.floor(statSync(img).size / 2);
    const b = Buffer.alloc(1);
    readSync(fd, b, 0, 1, at);
    b[0] = b[0]! ^ 0x01;
    writeSync(fd, b, 0, 1, at);
    closeSync(fd);
    const before = await lvState();
    for (const extra of [['--dry-run'], []]) {
      const r = await cli(['restore', flipped, '-c', fx.uri, '--force', ...extra]);
      expect(r.code, r.stdout + r.stderr).toBe(1);
      expect(r.stderr.trim().split('\n')).toHaveLength(1);
      expect(r.stderr).toContain(`is damaged: ${m.disks[0]!.image!.file}: sha256 differs from the manifest`);
      expect(r.stderr).toContain('nothing was changed');
    }
    expect(await domState('lab-one')).toBe('running');
    expect(await lvState()).toEqual(before);
    expect(await restoreLeftovers()).toEqual([]);
  });

  it('an intact set: new LVs written while the domain runs, swapped in, the old ones removed, the domain running', async () => {
    const m = await readManifest(set.setPath);
    const before = await lvState();
    const r = await cli(['restore', set.setPath, '-c', fx.uri, '--force', '--json', '--quiet']);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    const doc = JSON.parse(r.stdout) as { started: boolean; stateAfter: string; leftoverLvs: string[]; disks: { lv: string; swapped: boolean }[] };
    expect(doc).toMatchObject({ started: true, stateAfter: 'running', leftoverLvs: [] });
    expect(doc.disks.map((d) => [d.lv, d.swapped])).toEqual(m.disks.map((d) => [`${d.vg}/${d.lv}`, true]));
    expect(await domState('lab-one')).toBe('running');
    const after = await lvState();
    for (const d of m.disks) {
      const key = `${d.vg}/${d.lv}`;
      expect(after[key]![0]).not.toBe(before[key]![0]); // a new LV under the old name
      expect(await sha256Of(`/dev/${key}`, d.image!.rawBytes)).toBe(d.image!.rawSha256);
      expect((await lvsReport(`/dev/${key}`, ['lv_size'])).lv_size).toBe(String(d.lvSize));
      // libvirt's pool was refreshed: it knows the new LV (its key is the new uuid) and not the temporary names
      const vol = await sh('virsh', ['-c', fx.uri, 'vol-key', `/dev/${key}`]);
      expect(vol.stdout.trim()).toBe(after[key]![0]);
    }
    expect(await restoreLeftovers()).toEqual([]);
    const vols = await sh('virsh', ['-c', fx.uri, 'vol-list', fx.pool]);
    expect(vols.stdout).not.toMatch(/kvmbak-(new|old)-/);
    // the domain runs on the new LV
    expect((await virsh('domblklist', 'lab-one')).stdout).toContain(`/dev/${m.disks[0]!.vg}/${m.disks[0]!.lv}`);
  });
});
