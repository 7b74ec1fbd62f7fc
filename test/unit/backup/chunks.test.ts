/**
 * Backups in format chunks on libvirt's test driver with the fake lvm2 world: disks and the
 * memory state go into DEST/.chunks, the set keeps chunk lists, a second run stores only the
 * chunks that changed, and the disks rebuild with coreutils + zcat alone.
 */
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { lstat, mkdir, open, readFile, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { CHUNK_SIZE, type BackupResult, backup, isChunkedMemory, readManifest } from '../../../src/index.js';
import { type Env, defaultWorld, diskContent, setup, sha256, stateOf } from './helpers.js';
import { bash, fillIn, readmeBlock } from '../../e2e/suite/readme-block.js';

const MiB = 1024 * 1024;

let env: Env;
beforeEach(async () => {
  const world = defaultWorld();
  // Disks of several chunks, so that a change touches one chunk of many.
  world.lvs[0] = { ...world.lvs[0]!, content: diskContent('web-root', 3 * CHUNK_SIZE + MiB) };
  world.lvs[1] = { ...world.lvs[1]!, content: diskContent('web-data', 2 * CHUNK_SIZE) };
  env = await setup(world);
});
afterEach(async () => {
  await env.cleanup();
});

const chunked = (domain: string, more = {}) => env.opts(domain, { format: 'chunks', ...more });

/** The by-hand rebuild of a chunk list: `grep -v '^#' LIST | xargs cat | zcat`, run in DEST/.chunks. */
function byHand(list: string): Buffer {
  return execFileSync('bash', ['-c', 'set -o pipefail; grep -v "^#" "$1" | xargs cat | zcat', 'rebuild', list], {
    cwd: join(env.dest, '.chunks'),
    maxBuffer: 256 * MiB,
  });
}

async function lvContent(lv: string): Promise<Buffer> {
  return readFile(env.fake.lv('vg0', lv).file);
}

async function modesUnder(root: string, rel = ''): Promise<[string, number][]> {
  const out: [string, number][] = [];
  for (const name of (await readdir(join(root, rel))).sort()) {
    const r = rel ? `${rel}/${name}` : name;
    const st = await lstat(join(root, r));
    out.push([r, st.mode & 0o777]);
    if (st.isDirectory()) out.push(...(await modesUnder(root, r)));
  }
  return out;
}

describe('backup format chunks', () => {
  it('save: disks and memory go into DEST/.chunks; the set holds chunk lists that rebuild them by hand', async () => {
    const before = { vda: await lvContent('web-root'), vdb: await lvContent('web-data') };
    const r = await backup(chunked('web-01'), env.ctx);
    expect(r).toMatchObject({ format: 'chunks', mode: 'save', stateAfter: 'running' });
    expect(await stateOf(env.hv, 'web-01')).toBe('running');
    const m = await readManifest(r.setPath);
    expect(m.format).toBe('kvmbak/2');
    // The set: chunk lists instead of images and memory.state; SHA256SUMS lists them.
    expect((await readdir(r.setPath)).sort()).toEqual(['SHA256SUMS', 'disks', 'domain.xml', 'manifest.json', 'memory.chunks']);
    expect((await readdir(join(r.setPath, 'disks'))).sort()).toEqual(['vda.chunks', 'vdb.chunks']);
    const check = execFileSync('sha256sum', ['-c', 'SHA256SUMS'], { cwd: r.setPath, encoding: 'utf8' });
    expect(check.trim().split('\n').sort()).toEqual(['disks/vda.chunks: OK', 'disks/vdb.chunks: OK', 'domain.xml: OK', 'memory.chunks: OK']);
    for (const [target, content] of Object.entries(before)) {
      const d = m.disks.find((x) => x.target === target)!;
      expect(d.image).toBeUndefined();
      expect(d.chunks).toMatchObject({
        file: `disks/${target}.chunks`,
        rawBytes: content.length,
        chunkSize: CHUNK_SIZE,
        chunks: Math.ceil(content.length / CHUNK_SIZE),
        read: 'full',
        chunksRead: Math.ceil(content.length / CHUNK_SIZE),
      });
      // First backup into an empty store: every distinct chunk is new.
      expect(d.chunks!.newChunks).toBeGreaterThan(0);
      expect(sha256(byHand(join(r.setPath, d.chunks!.file)))).toBe(sha256(content));
      // The disk's identity is its chunk list (in SHA256SUMS) and the chunk ids: no whole-disk sha256.
      expect(d.chunks!.rawSha256).toBeUndefined();
      expect(await readFile(join(r.setPath, d.chunks!.file), 'latin1')).not.toContain('# raw-sha256');
      const res = r.disks.find((x) => x.target === target)!;
      expect(res).toMatchObject({
        format: 'chunks',
        file: `disks/${target}.chunks`,
        fileSha256: d.chunks!.listSha256,
        storedBytes: d.chunks!.addedBytes,
      });
      expect(res.rawSha256).toBeUndefined();
    }
    // The memory state: chunked too, rebuilt by hand it is the test driver's save image; it keeps
    // its whole sha256, in the manifest and the list.
    expect(m.memory !== null && isChunkedMemory(m.memory)).toBe(true);
    expect(await readFile(join(r.setPath, 'memory.chunks'), 'latin1')).toContain(`# raw-sha256 ${m.memory!.sha256}\n`);
    const state = byHand(join(r.setPath, 'memory.chunks'));
    expect(state.subarray(0, 14).toString('latin1')).toBe('TestGuestMagic');
    expect(sha256(state)).toBe(m.memory!.sha256);
    expect(state.length).toBe(m.memory!.bytes);
    // Private: the store and the set.
    expect((await lstat(join(env.dest, '.chunks'))).mode & 0o777).toBe(0o700);
    for (const [rel, mode] of await modesUnder(join(env.dest, '.chunks'))) {
      if (rel.startsWith('.')) continue;
      expect([rel, mode]).toEqual([rel, rel.includes('/') ? 0o600 : 0o700]);
    }
    for (const [rel, mode] of await modesUnder(r.setPath)) expect([rel, mode]).toEqual([rel, rel === 'disks' ? 0o700 : 0o600]);
    expect(env.fake.snapshots()).toEqual([]);
  });

  it('a second run stores only the chunks that changed; dry runs say how each disk will be read', async () => {
    const original = sha256(await lvContent('web-root'));
    const plan1 = await backup(chunked('web-01', { dryRun: true }), env.ctx);
    expect(plan1.plan!.format).toBe('chunks');
    expect(plan1.plan!.disks.map((d) => [d.target, d.readPath])).toEqual([
      ['vda', 'first'],
      ['vdb', 'first'],
    ]);
    const first = await backup(chunked('web-01', { mode: 'pause' }), env.ctx);
    const plan2 = await backup(chunked('web-01', { dryRun: true }), env.ctx);
    expect(plan2.plan!.disks.map((d) => d.readPath)).toEqual(['full', 'full']);

    // Unchanged: nothing new.
    const second = await backup(chunked('web-01', { mode: 'pause' }), env.ctx);
    expect(second.storedBytes).toBe(0);
    for (const d of second.disks) expect(d.chunks).toMatchObject({ new: 0, method: 'full' });

    // One 4 MiB-aligned region of vda rewritten: exactly one new chunk, and only vda's.
    const fh = await open(env.fake.lv('vg0', 'web-root').file, 'r+');
    await fh.write(Buffer.alloc(4096, 0x5a), 0, 4096, 2 * CHUNK_SIZE + 100);
    await fh.close();
    const third = await backup(chunked('web-01', { mode: 'pause' }), env.ctx);
    const [vda, vdb] = third.disks;
    expect(vda!.chunks).toMatchObject({ total: 4, new: 1, read: 4 });
    expect(vdb!.chunks).toMatchObject({ total: 2, new: 0 });
    expect(third.storedBytes).toBe(vda!.storedBytes);
    expect(third.storedBytes).toBeGreaterThan(0);
    expect(third.storedBytes).toBeLessThan(first.storedBytes);
    const m3 = await readManifest(third.setPath);
    expect(sha256(byHand(join(third.setPath, m3.disks[0]!.chunks!.file)))).toBe(sha256(await lvContent('web-root')));
    // The first set still rebuilds as it was.
    const m1 = await readManifest(first.setPath);
    expect(sha256(byHand(join(first.setPath, m1.disks[0]!.chunks!.file)))).toBe(original);
  });

  it("the README's chunk check (### A chunked set) passes on the set, and stops at a damaged chunk naming it", async () => {
    const r = await backup(chunked('web-01', { mode: 'pause' }), env.ctx);
    const m = await readManifest(r.setPath);
    const list = m.disks[0]!.chunks!.file;
    const script = fillIn(readmeBlock('### A chunked set', 'memory.chunks'), {
      SET: r.setPath,
      CHUNKS: join(env.dest, '.chunks'),
      LIST: list,
      SIZE: String(m.disks[0]!.lvSize),
      VG: m.disks[0]!.vg,
      LV: m.disks[0]!.lv,
      POOL: m.disks[0]!.thinPool ?? '',
    }).split('\n');
    // the variable lines, then up to the chunk check (the lines after it need root, LVM and libvirt)
    const check = script.findIndex((l) => l.includes('while read -r C'));
    expect(script.slice(7, check)).toEqual(['cd "$SET"', expect.stringMatching(/^sha256sum -c SHA256SUMS /)]);
    const lines = script.slice(0, check + 1).join('\n');
    const good = await bash(lines, {});
    expect(good.code, good.out).toBe(0);

    const id = (await readFile(join(r.setPath, list), 'latin1')).split('\n').filter((l) => l && !l.startsWith('#'))[1]!;
    const file = join(env.dest, '.chunks', id);
    const gz = await readFile(file);
    gz[Math.floor(gz.length / 2)]! ^= 0xff;
    await writeFile(file, gz);
    const bad = await bash(lines, {});
    expect(bad.code).toBe(1);
    expect(bad.out).toContain(`damaged: ${id}\n`);
  });

  it('with bwlimit the snapshot is read through the throttle and stored the same', async () => {
    const r = await backup(chunked('web-01', { mode: 'pause', bwlimit: 200 * MiB }), env.ctx);
    const m = await readManifest(r.setPath);
    expect(sha256(byHand(join(r.setPath, m.disks[0]!.chunks!.file)))).toBe(sha256(await lvContent('web-root')));
    expect(sha256(byHand(join(r.setPath, m.disks[1]!.chunks!.file)))).toBe(sha256(await lvContent('web-data')));
  });

  it('format chunks is the default; format image writes kvmbak/1 and no store; chunkSize needs format image', async () => {
    const d: BackupResult = await backup(env.opts('web-01', { mode: 'pause' }), env.ctx);
    expect(d.format).toBe('chunks');
    expect((await readManifest(d.setPath)).disks.map((x) => x.chunks?.file)).toEqual(['disks/vda.chunks', 'disks/vdb.chunks']);
    expect(existsSync(join(env.dest, '.chunks'))).toBe(true);

    const other = join(env.dir, 'image-dest');
    await mkdir(other, { mode: 0o700 });
    const r = await backup(env.opts('web-01', { dest: other, mode: 'pause', format: 'image', chunkSize: 65536 }), env.ctx);
    expect(r.format).toBe('image');
    expect((await readManifest(r.setPath)).format).toBe('kvmbak/1');
    expect((await readdir(join(r.setPath, 'disks'))).sort()).toEqual(['vda.img.gz', 'vdb.img.gz']);
    expect(existsSync(join(other, '.chunks'))).toBe(false);

    await expect(backup(env.opts('web-01', { chunkSize: 65536 }), env.ctx)).rejects.toThrow(
      /^chunkSize applies to format image only: the chunk store \(the default format\) cuts every disk into 4 MiB chunks; leave chunkSize out or add format image$/,
    );
    await expect(backup(env.opts('web-01', { format: 'chunks', chunkSize: 65536 }), env.ctx)).rejects.toThrow(
      /^chunkSize applies to format image only: the chunk store cuts every disk into 4 MiB chunks; leave chunkSize out or add format image$/,
    );
    await expect(backup(env.opts('web-01', { format: 'zip' as never }), env.ctx)).rejects.toThrow(
      /^format "zip" is not a storage format; use one of chunks, image$/,
    );
  });

  it('a cancelled chunked backup leaves the VM running, no snapshot and no set', async () => {
    const ac = new AbortController();
    const p = backup(
      chunked('web-01', {
        signal: ac.signal,
        onProgress: (e: { type: string }) => {
          if (e.type === 'archive') ac.abort();
        },
      }),
      env.ctx,
    );
    await expect(p).rejects.toMatchObject({ name: 'AbortError' });
    expect(await stateOf(env.hv, 'web-01')).toBe('running');
    expect(env.fake.snapshots()).toEqual([]);
    expect(existsSync(join(env.dest, 'web-01')) ? await readdir(join(env.dest, 'web-01')) : []).toEqual([]);
  });
});
