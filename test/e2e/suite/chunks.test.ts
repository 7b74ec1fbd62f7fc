// The chunk store in the lab (format chunks), on lab-one's thick LV: a second backup after three
// 4 MiB-aligned regions changed stores exactly those chunks; after total loss (domain undefined, LV
// removed) the first set comes back with the README's by-hand lines; kill -9 in the middle of a
// chunked backup, then kvmbak recover, leaves no snapshot and no set that looks complete; a flipped
// byte in a shared chunk makes verify name it and both sets; prune of the first set collects the
// chunks only it used, and the second still verifies and, after total loss, restores with kvmbak
// (resumed from memory); kill -9 in the middle of a collection leaves every remaining set verifiable.
// lab-one ends running on its own LV with its fixture content.
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { closeSync, openSync, readSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CHUNK_SIZE, backup, readManifest, type BackupResult } from '../../../src/index.js';
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

const DOMAIN = 'lab-one';
const LV = 'lab-one-disk0';
/** The chunks rewritten between the two backups (distinct, 4 MiB-aligned). */
const REGIONS = [1, 6, 13];

function readRegion(path: string, index: number): Buffer {
  const b = Buffer.alloc(CHUNK_SIZE);
  const fd = openSync(path, 'r');
  try {
    readSync(fd, b, 0, CHUNK_SIZE, index * CHUNK_SIZE);
  } finally {
    closeSync(fd);
  }
  return b;
}

/** What a list names for the data at `path` now: each 4 MiB chunk's path in DEST/.chunks (its sha256, a disk's identity). */
function chunkPathsOf(path: string, bytes: number): string[] {
  const out: string[] = [];
  for (let i = 0; i * CHUNK_SIZE < bytes; i++) {
    const id = createHash('sha256')
      .update(readRegion(path, i).subarray(0, Math.min(CHUNK_SIZE, bytes - i * CHUNK_SIZE)))
      .digest('hex');
    out.push(`${id.slice(0, 4)}/${id}`);
  }
  return out;
}

/** The chunk lines of a chunk list (paths relative to DEST/.chunks). */
function ids(file: string): string[] {
  return readFileSync(file, 'utf8')
    .split('\n')
    .filter((l) => l && !l.startsWith('#'));
}

/** The domain and its LV are gone: the host lost the VM. */
async function totalLoss(fx: LabFixture): Promise<void> {
  await virsh('destroy', DOMAIN).catch(() => undefined);
  await virsh('undefine', DOMAIN);
  await sh('lvremove', ['-q', '-y', `${fx.vg}/${LV}`]);
  await sh('virsh', ['-q', '-c', fx.uri, 'pool-refresh', fx.pool], { check: false });
}

describe('chunk store (format chunks) on a thick LV', () => {
  let fx: LabFixture;
  let work: string;
  let dest: string;
  let first: BackupResult;
  let second: BackupResult;
  let lvPath: string;

  beforeAll(async () => {
    fx = lab();
    lvPath = fx.lvs[LV]!.path;
    work = mkdtempSync('/var/tmp/kvmbak-e2e-chunks-');
    dest = join(work, 'dest');
    mkdirSync(dest, { mode: 0o700 });
    // What afterAll puts back: the domain's definition and its LV's content.
    await keepDomain(DOMAIN, lvPath, work);
  });

  afterAll(async () => {
    // lab-one back as the fixture made it: its LV with the fixture's content, defined, running.
    await putDomainBack(DOMAIN, LV, work);
    rmSync(work, { recursive: true, force: true });
  });

  it('a second backup after three 4 MiB regions changed stores exactly those chunks', async () => {
    first = await backup({ domain: DOMAIN, dest, uri: fx.uri, mode: 'save' });
    const m1 = await readManifest(first.setPath);
    const d1 = m1.disks[0]!.chunks!;
    expect(m1.format).toBe('kvmbak/2');
    // the disk's identity is its chunk list: no whole-disk sha256; the ids are the LV's chunks
    expect(d1.rawSha256).toBeUndefined();
    expect(readFileSync(join(first.setPath, d1.file), 'utf8')).not.toContain('# raw-sha256');
    expect(ids(join(first.setPath, d1.file))).toEqual(chunkPathsOf(join(work, 'lv.raw'), fx.lvs[LV]!.bytes));
    expect(d1.chunks).toBe(fx.lvs[LV]!.bytes / CHUNK_SIZE);
    expect(first.disks[0]!.chunks!.method).toBe('full');

    // Simulated guest writes (the SeaBIOS guest writes nothing itself): new data in three chunks.
    for (const i of REGIONS) writePattern(lvPath, `chunks-${i}`, 64 * 1024, i * CHUNK_SIZE + 4096);
    second = await backup({ domain: DOMAIN, dest, uri: fx.uri, mode: 'save' });
    const m2 = await readManifest(second.setPath);
    const d2 = m2.disks[0]!.chunks!;
    expect(ids(join(second.setPath, d2.file))).toEqual(chunkPathsOf(lvPath, fx.lvs[LV]!.bytes));
    expect({ newChunks: d2.newChunks, read: d2.read, chunksRead: d2.chunksRead }).toEqual({
      newChunks: REGIONS.length,
      read: 'full',
      chunksRead: d1.chunks,
    });
    // The set's figures: only the three chunks were added for the disk.
    expect(d2.addedBytes).toBeGreaterThan(0);
    expect(d2.addedBytes).toBeLessThanOrEqual(REGIONS.length * CHUNK_SIZE + 4096);
    expect(d2.addedBytes).toBeLessThan(d1.addedBytes);
    // The two lists differ exactly at the three chunks.
    const a = ids(join(first.setPath, d1.file));
    const b = ids(join(second.setPath, d2.file));
    expect(a.flatMap((id, i) => (id !== b[i] ? [i] : []))).toEqual(REGIONS);
    expect(await kvmbakLvs()).toEqual([]);
  });

  it('after total loss, the first set comes back with the README lines: lab-one resumes from its memory on a new LV', async () => {
    const m = await readManifest(first.setPath);
    const d = m.disks[0]!;
    const original = readRegion(lvPath, REGIONS[0]!);
    await totalLoss(fx);
    const script = fillIn(readmeBlock('### A chunked set', 'memory.chunks'), {
      SET: first.setPath,
      CHUNKS: join(dest, '.chunks'),
      LIST: d.chunks!.file,
      SIZE: String(d.lvSize),
      VG: fx.vg,
      LV,
      POOL: '',
    });
    const run = await bash(script, { LIBVIRT_DEFAULT_URI: fx.uri });
    expect(run.code, `${script}\n---\n${run.out}`).toBe(0);
    // the chunk check printed nothing; the dd line printed dd's count, the list's raw size
    expect(run.out).not.toContain('damaged');
    expect(run.out).toContain(`${d.chunks!.rawBytes} bytes (`);
    expect((await virsh('domstate', '--reason', DOMAIN)).stdout.trim()).toBe('running (restored)');
    expect(await sha256Of(lvPath)).toBe(fx.lvs[LV]!.sha256);
    expect(readRegion(lvPath, REGIONS[0]!).equals(original)).toBe(false);
    expect(existsSync('/var/tmp/memory.state')).toBe(false);
  });

  it('kill -9 in the middle of a chunked backup, then kvmbak recover: the VM runs, no snapshot, no set that looks complete', async () => {
    const before = readdirSync(join(dest, DOMAIN)).sort();
    let killed = false;
    const run = await runCli(['backup', DOMAIN, '--dest', dest, '-c', fx.uri, '--bwlimit', '8M', '--json'], {
      onEvent: (e, kill) => {
        // --json prints each progress event of the backup as {"event":"backup",...event}.
        if (!killed && e.type === 'archive' && typeof e.bytesDone === 'number' && e.bytesDone >= 8 * CHUNK_SIZE) {
          killed = true;
          kill();
        }
      },
    });
    expect(killed, run.stderr).toBe(true);
    expect(run.signal).toBe('SIGKILL');
    await lvmSettled();
    const rec = await sh(process.execPath, [CLI, 'recover', '--dest', dest, '-c', fx.uri], { check: false });
    expect(rec.code, rec.stdout + rec.stderr).toBe(0);
    expect(await domState(DOMAIN)).toBe('running');
    expect(await kvmbakLvs()).toEqual([]);
    expect(readdirSync(join(dest, DOMAIN)).sort()).toEqual(before);
    const list = await runCli(['list', dest, '--json']);
    expect(list.code, list.stderr).toBe(0);
    const sets = (JSON.parse(list.stdout) as { sets: { complete: boolean; path: string }[] }).sets;
    expect(
      sets
        .filter((s) => s.complete)
        .map((s) => s.path)
        .sort(),
    ).toEqual([first.setPath, second.setPath].sort());
  });

  it('a flipped byte in a chunk both sets use: verify names the chunk and both sets, exit 1', async () => {
    const m1 = await readManifest(first.setPath);
    const shared = ids(join(first.setPath, m1.disks[0]!.chunks!.file))[0]!;
    const file = join(dest, '.chunks', shared);
    const original = readFileSync(file);
    const flipped = Buffer.from(original);
    flipped[Math.floor(flipped.length / 2)]! ^= 0xff;
    writeFileSync(file, flipped);
    try {
      const v = await runCli(['verify', first.setPath, second.setPath]);
      expect(v.code, v.stdout + v.stderr).toBe(1);
      const id = shared.slice(shared.indexOf('/') + 1);
      const line = (v.stdout + v.stderr).split('\n').find((l) => l.includes(`chunk ${id} is damaged`));
      expect(line, v.stdout + v.stderr).toBeDefined();
      expect(line).toContain(first.setPath);
      expect(line).toContain(second.setPath);
    } finally {
      writeFileSync(file, original);
    }
    const ok = await runCli(['verify', first.setPath, second.setPath]);
    expect(ok.code, ok.stdout + ok.stderr).toBe(0);
  });

  it('prune of the first set frees the chunks only it used; the second verifies and, after total loss, restores with kvmbak from memory', async () => {
    const m1 = await readManifest(first.setPath);
    const m2 = await readManifest(second.setPath);
    const listsOf = (setPath: string, m: typeof m1) =>
      [...m.disks.map((d) => d.chunks!.file), ...(m.memory ? ['memory.chunks'] : [])].flatMap((f) => ids(join(setPath, f)));
    const kept = new Set(listsOf(second.setPath, m2));
    const onlyFirst = [...new Set(listsOf(first.setPath, m1))].filter((c) => !kept.has(c));
    expect(onlyFirst.length).toBeGreaterThanOrEqual(REGIONS.length);
    const pr = await runCli(['prune', dest, DOMAIN, '--keep-last', '1', '--json']);
    expect(pr.code, pr.stdout + pr.stderr).toBe(0);
    const result = JSON.parse(pr.stdout) as { gc: { status: string; chunksRemoved: number } };
    expect(result.gc.status).toBe('collected');
    expect(existsSync(first.setPath)).toBe(false);
    for (const c of onlyFirst) expect(existsSync(join(dest, '.chunks', c)), c).toBe(false);
    for (const c of kept) expect(existsSync(join(dest, '.chunks', c)), c).toBe(true);
    const v = await runCli(['verify', second.setPath]);
    expect(v.code, v.stdout + v.stderr).toBe(0);

    await totalLoss(fx);
    const r = await runCli(['restore', second.setPath, '-c', fx.uri]);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect((await virsh('domstate', '--reason', DOMAIN)).stdout.trim()).toBe('running (restored)');
    expect(chunkPathsOf(lvPath, m2.disks[0]!.chunks!.rawBytes)).toEqual(ids(join(second.setPath, m2.disks[0]!.chunks!.file)));
  });

  it('kill -9 in the middle of a collection, then verify of every remaining set passes and the next prune finishes', async () => {
    // A third set after other changes: pruning the second makes garbage to collect.
    for (const i of REGIONS) writePattern(lvPath, `chunks-third-${i}`, 64 * 1024, i * CHUNK_SIZE + 8192);
    const third = await backup({ domain: DOMAIN, dest, uri: fx.uri, mode: 'pause' });
    // The collection in a child that kills itself (SIGKILL) once the sweep has removed a chunk.
    const script = [
      `import { pruneSets } from ${JSON.stringify(join(process.cwd(), 'dist', 'index.js'))};`,
      `await pruneSets(${JSON.stringify(dest)}, ${JSON.stringify(DOMAIN)}, { keepLast: 1 }, {`,
      `  onGcProgress: (e) => { if (e.phase === 'sweep' && e.chunksRemoved > 0) process.kill(process.pid, 'SIGKILL'); },`,
      `});`,
    ].join('\n');
    const child = await new Promise<{ code: number | null; signal: NodeJS.Signals | null; out: string }>((resolve, reject) => {
      const c = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'pipe'] });
      let out = '';
      c.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
      c.stderr.setEncoding('utf8').on('data', (d: string) => (out += d));
      c.on('error', reject);
      c.on('close', (code, signal) => resolve({ code, signal, out }));
    });
    expect(child.signal, child.out).toBe('SIGKILL');
    expect(existsSync(second.setPath)).toBe(false);
    const v = await runCli(['verify', third.setPath]);
    expect(v.code, v.stdout + v.stderr).toBe(0);
    const pr = await runCli(['prune', dest, DOMAIN, '--keep-last', '1', '--json']);
    expect(pr.code, pr.stdout + pr.stderr).toBe(0);
    expect((JSON.parse(pr.stdout) as { gc: { status: string } }).gc.status).toBe('collected');
    const again = await runCli(['verify', third.setPath]);
    expect(again.code, again.stdout + again.stderr).toBe(0);
  });
});
