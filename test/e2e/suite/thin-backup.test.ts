// `kvmbak backup --format chunks` of a thin-LV domain (lab-thin) on real lvm2, device-mapper and
// thin-provisioning-tools. The first run reads the disk whole and keeps its thin snapshot as the
// base (tagged kvmbak-base); after writes to three 4 MiB-aligned regions, the second run asks
// thin_delta and reads exactly those chunks (asserted from what the run reports), and its base
// replaces the first. kill -9 while a third run holds the pool's metadata snapshot (in thin_delta),
// then `kvmbak recover`: nothing held (`dmsetup status`), no snapshot but the base, no set that looks
// complete; the next run still reads by thin delta. After total loss, the first set comes back with
// the README's by-hand lines and the newest with kvmbak (both resumed from memory), and the run
// after that falls back to a full read, saying why.
// lab-thin ends running on its thin LV with its content; every base is removed.
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CHUNK_SIZE, backup, readManifest, type BackupProgress, type BackupResult } from '../../../src/index.js';
import {
  CLI,
  domState,
  keepDomain,
  kvmbakLvs,
  lab,
  lvmSettled,
  putDomainBack,
  runCli,
  sh,
  sha256Of,
  virsh,
  writePattern,
  type LabFixture,
} from './lab.js';
import { bash, fillIn, readmeBlock } from './readme-block.js';

const DOMAIN = 'lab-thin';
/** The chunks written between the first two backups (4 MiB-aligned regions). */
const REGIONS = [2, 7, 11];

/** The raw `dmsetup status` line of the pool and its held metadata root field ('-' when none). */
async function poolStatus(tpool: string): Promise<{ line: string; held: string }> {
  const line = (await sh('dmsetup', ['status', tpool])).stdout.trim();
  return { line, held: line.split(/\s+/)[6] ?? '' };
}

/** LVs tagged kvmbak-base, as VG/LV. */
async function bases(): Promise<string[]> {
  const { stdout } = await sh('lvs', ['--noheadings', '-o', 'lv_full_name', '@kvmbak-base']);
  return stdout
    .split('\n')
    .map((l) => l.trim())
    .filter(Boolean)
    .sort();
}

/** sha256 of the data a chunk list rebuilds: its chunk files in order, each decompressed. */
function rebuiltSha256(store: string, list: string): string {
  const h = createHash('sha256');
  for (const c of listed(list)) h.update(gunzipSync(readFileSync(join(store, c))));
  return h.digest('hex');
}

/** The chunk paths of a list, in order (relative to DEST/.chunks). */
function listed(file: string): string[] {
  return readFileSync(file, 'utf8')
    .split('\n')
    .filter((l) => l && !l.startsWith('#'));
}

describe('backup --format chunks of a thin LV: thin_delta between runs (lab-thin)', () => {
  let fx: LabFixture;
  let work: string;
  let dest: string;
  let vg: string;
  let lv: string;
  let lvPath: string;
  let tpool: string;
  const sets: BackupResult[] = [];
  /** The disk's content when the newest set was taken (before the first total loss). */
  let newestSha = '';

  /** The domain and its LV are gone: the host lost the VM. */
  async function totalLoss(): Promise<void> {
    await virsh('destroy', DOMAIN).catch(() => undefined);
    await virsh('undefine', DOMAIN);
    await sh('lvremove', ['-q', '-y', `${vg}/${lv}`]);
  }

  /** lvs lv_active of a base in the lab VG. */
  async function baseActive(name: string): Promise<boolean> {
    const r = await sh('lvs', ['--noheadings', '-o', 'lv_active', `${vg}/${name}`]);
    return r.stdout.trim() === 'active';
  }

  async function run(extra: { full?: boolean; bwlimit?: number } = {}): Promise<{ result: BackupResult; warnings: string[] }> {
    const warnings: string[] = [];
    const result = await backup({
      domain: DOMAIN,
      dest,
      uri: fx.uri,
      format: 'chunks',
      ...extra,
      onProgress: (e: BackupProgress) => {
        if (e.type === 'warning') warnings.push(e.message);
      },
    });
    sets.push(result);
    return { result, warnings };
  }

  beforeAll(async () => {
    fx = lab();
    vg = fx.vg;
    lv = fx.domains[DOMAIN]!.disks.vda!;
    lvPath = fx.lvs[lv]!.path;
    tpool = `${vg.replace(/-/g, '--')}-${fx.thinPool.replace(/-/g, '--')}-tpool`;
    work = mkdtempSync('/var/tmp/kvmbak-e2e-thinbak-');
    dest = join(work, 'dest');
    mkdirSync(dest, { mode: 0o700 });
    await keepDomain(DOMAIN, lvPath, work);
  });

  afterAll(async () => {
    if (tpool && (await poolStatus(tpool).catch(() => ({ held: '-' }))).held !== '-') {
      await sh('dmsetup', ['message', tpool, '0', 'release_metadata_snap'], { check: false });
    }
    for (const b of await bases().catch(() => [])) await sh('lvremove', ['-q', '-y', b], { check: false });
    // lab-thin back as the fixture made it: its thin LV with the fixture's content, defined, running.
    await putDomainBack(DOMAIN, lv, work, fx.thinPool);
    rmSync(work, { recursive: true, force: true });
  });

  it('the first run reads the disk whole and keeps its thin snapshot as the base', async () => {
    const { result, warnings } = await run();
    expect(warnings).toEqual([]);
    expect(result.disks[0]!.chunks).toMatchObject({ method: 'full', read: 16, total: 16 });
    const d = (await readManifest(result.setPath)).disks[0]!.chunks!;
    expect(d.base).toBeDefined();
    expect(await bases()).toEqual([`${vg}/${d.base!.lv}`]);
    expect(await kvmbakLvs()).toEqual([`${vg}/${d.base!.lv}`]);
    const base = await sh('lvs', ['--noheadings', '-o', 'origin,pool_lv,thin_id,lv_tags', `${vg}/${d.base!.lv}`]);
    expect(base.stdout.trim().split(/\s+/)).toEqual([lv, fx.thinPool, String(d.base!.thinId), 'kvmbak,kvmbak-base']);
    // The base is inactive: no device node, as it would be after the host's next boot.
    expect(await baseActive(d.base!.lv)).toBe(false);
    expect((await poolStatus(tpool)).held).toBe('-');
  });

  it('after writes to three regions, the second run (under --bwlimit) reads only the chunks thin_delta reported from its inactive base; its base replaces the first', async () => {
    const before = (await readManifest(sets[0]!.setPath)).disks[0]!.chunks!;
    for (const i of REGIONS) writePattern(lvPath, `thinbak-${i}`, 64 * 1024, i * CHUNK_SIZE + 8192);
    const expected = await sha256Of(lvPath);
    // bwlimit: the changed chunks are read through the same throttle as a full read
    const { result, warnings } = await run({ bwlimit: 64 * 1024 * 1024 });
    expect(warnings).toEqual([]);
    // What the run reports: thin delta, exactly the three chunks read, three new chunks.
    expect(result.disks[0]!.chunks).toEqual({ method: 'thin-delta', read: REGIONS.length, new: REGIONS.length, total: 16 });
    const d = (await readManifest(result.setPath)).disks[0]!.chunks!;
    expect({ read: d.read, chunksRead: d.chunksRead, newChunks: d.newChunks }).toEqual({ read: 'thin-delta', chunksRead: 3, newChunks: 3 });
    expect(d.addedBytes).toBeLessThanOrEqual(REGIONS.length * CHUNK_SIZE + 4096);
    const a = listed(join(sets[0]!.setPath, before.file));
    const b = listed(join(result.setPath, d.file));
    expect(a.flatMap((id, i) => (id !== b[i] ? [i] : []))).toEqual(REGIONS);
    // The list rebuilds the disk as it is now (the SeaBIOS guest writes nothing itself).
    expect(rebuiltSha256(join(dest, '.chunks'), join(result.setPath, d.file))).toBe(expected);
    // One base: the second run's, inactive; the first one's is gone. Nothing held.
    expect(await bases()).toEqual([`${vg}/${d.base!.lv}`]);
    expect(await baseActive(d.base!.lv)).toBe(false);
    expect(await kvmbakLvs()).toEqual([`${vg}/${d.base!.lv}`]);
    expect((await poolStatus(tpool)).held).toBe('-');
    const v = await runCli(['verify', sets[0]!.setPath, result.setPath]);
    expect(v.code, v.stdout + v.stderr).toBe(0);
  });

  it('kill -9 while a run holds the metadata snapshot (in thin_delta), then kvmbak recover: nothing held, only the base, no partial set; the next run reads by thin delta', async () => {
    const base = (await readManifest(sets[1]!.setPath)).disks[0]!.chunks!.base!;
    const before = readdirSync(join(dest, DOMAIN)).sort();
    // A thin_delta first in PATH that says so and never returns: kvmbak is killed while the
    // pool's metadata snapshot is reserved.
    const bin = join(work, 'bin');
    mkdirSync(bin, { recursive: true });
    const mark = join(work, 'thin_delta.pid');
    writeFileSync(join(bin, 'thin_delta'), `#!/bin/sh\necho $$ > "${mark}"\nexec sleep 600\n`, { mode: 0o755 });
    const proc = spawn(process.execPath, [CLI, 'backup', DOMAIN, '--dest', dest, '-c', fx.uri, '--format', 'chunks'], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, PATH: `${bin}:${process.env.PATH ?? ''}` },
    });
    let out = '';
    proc.stdout.setEncoding('utf8').on('data', (x: string) => (out += x));
    proc.stderr.setEncoding('utf8').on('data', (x: string) => (out += x));
    const exited = new Promise<NodeJS.Signals | null>((resolve) => proc.on('close', (_c, s) => resolve(s)));
    for (let i = 0; i < 600 && !existsSync(mark); i++) await new Promise((r) => setTimeout(r, 200));
    expect(existsSync(mark), out).toBe(true);
    const held = await poolStatus(tpool);
    expect(held.held, held.line).toMatch(/^\d+$/);
    proc.kill('SIGKILL');
    expect(await exited).toBe('SIGKILL');
    await sh('kill', ['-9', readFileSync(mark, 'utf8').trim()], { check: false });
    await lvmSettled();

    const rec = await sh(process.execPath, [CLI, 'recover', '--dest', dest, '-c', fx.uri, '--json'], { check: false });
    expect(rec.code, rec.stdout + rec.stderr).toBe(0);
    const after = await poolStatus(tpool);
    expect(after.held, after.line).toBe('-');
    expect(await domState(DOMAIN)).toBe('running');
    expect(await kvmbakLvs()).toEqual([`${vg}/${base.lv}`]);
    expect(readdirSync(join(dest, DOMAIN)).sort()).toEqual(before);

    // The base survived recover: the next run still reads by thin delta (nothing changed).
    const { result, warnings } = await run();
    expect(warnings).toEqual([]);
    expect(result.disks[0]!.chunks).toEqual({ method: 'thin-delta', read: 0, new: 0, total: 16 });
  });

  it('after total loss the first set comes back with the README lines, thin again in its pool: lab-thin resumes from its memory', async () => {
    const first = sets[0]!;
    const d = (await readManifest(first.setPath)).disks[0]!;
    newestSha = await sha256Of(lvPath);
    await totalLoss();
    // The README's lines as written: with POOL set, its lvcreate makes the LV thin in its pool.
    expect(d.thinPool).toBe(fx.thinPool);
    const script = fillIn(readmeBlock('### A chunked set', 'memory.chunks'), {
      SET: first.setPath,
      CHUNKS: join(dest, '.chunks'),
      LIST: d.chunks!.file,
      SIZE: String(d.lvSize),
      VG: vg,
      LV: lv,
      POOL: d.thinPool!,
    });
    const out = await bash(script, { LIBVIRT_DEFAULT_URI: fx.uri });
    expect(out.code, `${script}\n---\n${out.out}`).toBe(0);
    expect(out.out).not.toContain('damaged');
    expect(out.out).toContain(`${d.chunks!.rawBytes} bytes (`);
    expect((await virsh('domstate', '--reason', DOMAIN)).stdout.trim()).toBe('running (restored)');
    // The first set was taken before anything was written: the fixture's content.
    expect(await sha256Of(lvPath)).toBe(fx.lvs[lv]!.sha256);
    const made = await sh('lvs', ['--noheadings', '-o', 'segtype,pool_lv', `${vg}/${lv}`]);
    expect(made.stdout.trim().split(/\s+/)).toEqual(['thin', fx.thinPool]);
  });

  it('after total loss the newest set restores with kvmbak (resumed from memory); the next run reads whole, saying why', async () => {
    const newest = sets[sets.length - 1]!;
    const expected = newestSha;
    await totalLoss();
    const r = await runCli(['restore', newest.setPath, '-c', fx.uri]);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect((await virsh('domstate', '--reason', DOMAIN)).stdout.trim()).toBe('running (restored)');
    expect(await sha256Of(lvPath)).toBe(expected);
    const thin = await sh('lvs', ['--noheadings', '-o', 'segtype,pool_lv', `${vg}/${lv}`]);
    expect(thin.stdout.trim().split(/\s+/)).toEqual(['thin', fx.thinPool]);

    // The base is a snapshot of the LV that was lost, not of the new one: a full read, one warning.
    const { result, warnings } = await run();
    expect(warnings.length, warnings.join('\n')).toBe(1);
    expect(warnings[0]).toMatch(/^vda: reading the whole disk: the base .* is not a snapshot of /);
    expect(result.disks[0]!.chunks).toMatchObject({ method: 'full', read: 16, new: 0 });
    const d = (await readManifest(result.setPath)).disks[0]!.chunks!;
    expect(await bases()).toEqual([`${vg}/${d.base!.lv}`]);
  });
});
