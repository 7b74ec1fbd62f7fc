#!/usr/bin/env node
// kvmbak archive benchmark: kvmbak's packImage/unpackImage against the manual
// pipelines `dd if=IMG bs=4M | gzip -3 > out.gz` and `gunzip -c out.gz | dd of=FILE bs=4M conv=fsync`,
// on the same images, in the same run (kvmbak fsyncs its output too).
//
//   npm run bench                       all images, 3 repetitions
//   npm run bench -- --reps 5 --only realistic,zero
//   npm run bench -- --quick            one repetition, no 4 GiB RSS run
//   npm run bench -- --cache warm       inputs in the page cache (a busy shared disk skews cold runs)
//   npm run bench -- --only chunks      the chunk store table alone (bench/chunks.mjs; "chunks" is in the default --only)
//
// Data lives in bench/.data (git-ignored), results in bench/.out/results.json.
// Fairness: the page cache is dropped (sync; echo 3 > /proc/sys/vm/drop_caches)
// before every timed run when we can (root), so both sides read cold; with
// --cache warm (or without root) every run is preceded by a read of its input
// instead, so both sides read from memory.
// Ref and kvmbak runs alternate, so background load hits both alike.
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createWriteStream, existsSync, readdirSync, statSync } from 'node:fs';
import { copyFile, lstat, mkdir, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import os from 'node:os';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const DATA = join(root, 'bench', '.data');
const OUT = join(root, 'bench', '.out');
const GiB = 1024 ** 3;
const MiB = 1024 ** 2;

const args = process.argv.slice(2);
const opt = (name, def) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1] : def;
};
const quick = args.includes('--quick');
// cold: drop the page cache before every run (needs root); warm: read every input once before its run
const cacheMode = opt('cache', process.getuid?.() === 0 ? 'cold' : 'warm');
const reps = Number(opt('reps', quick ? 1 : 3));
const only = opt('only', 'realistic,full,zero,chunks').split(',');
const log = (...a) => console.error('[bench]', ...a);

// ---------------------------------------------------------------- build
function newest(dir) {
  let t = 0;
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    t = Math.max(t, e.isDirectory() ? newest(p) : statSync(p).mtimeMs);
  }
  return t;
}
function ensureBuilt() {
  const dist = join(root, 'dist', 'index.js');
  if (existsSync(dist) && statSync(dist).mtimeMs >= newest(join(root, 'src'))) return;
  log('dist/ is missing or older than src/: building with tsup');
  const r = spawnSync('npx', ['tsup'], { cwd: root, stdio: ['ignore', 'ignore', 'inherit'] });
  if (r.status !== 0) throw new Error('tsup failed');
}

// ---------------------------------------------------------------- data
async function walkFiles(dir, out, limit) {
  let entries;
  try {
    entries = (await readdir(dir, { withFileTypes: true })).sort((a, b) => a.name.localeCompare(b.name));
  } catch {
    return;
  }
  for (const e of entries) {
    if (out.bytes >= limit) return;
    const p = join(dir, e.name);
    if (e.isDirectory()) await walkFiles(p, out, limit);
    else if (e.isFile()) {
      const st = await lstat(p);
      out.files.push(p);
      out.bytes += st.size;
    }
  }
}

/** A staging folder holding the first `limit` bytes of files found under `from` (copies, same layout). */
async function stage(dir, from, limit) {
  const marker = join(dir, '.complete');
  if (existsSync(marker)) return JSON.parse(await readFile(marker, 'utf8'));
  await rm(dir, { recursive: true, force: true });
  const found = { files: [], bytes: 0 };
  for (const f of from) await walkFiles(f, found, limit);
  for (const f of found.files) {
    const to = join(dir, relative('/', f));
    await mkdir(dirname(to), { recursive: true });
    await copyFile(f, to);
  }
  const info = { files: found.files.length, bytes: found.bytes };
  await writeFile(marker, JSON.stringify(info));
  return info;
}

function ext4Usage(img) {
  const out = execFileSync('dumpe2fs', ['-h', img], { stdio: ['ignore', 'pipe', 'ignore'] }).toString();
  const count = Number(/Block count:\s+(\d+)/.exec(out)[1]);
  const free = Number(/Free blocks:\s+(\d+)/.exec(out)[1]);
  return (count - free) / count;
}

function mkfs(img, size, staging) {
  execFileSync('truncate', ['-s', String(size), img]);
  execFileSync('mkfs.ext4', ['-q', '-F', '-N', '131072', '-L', 'kvmbak-bench', '-d', staging, img], { stdio: 'inherit' });
}

async function makeImages() {
  await mkdir(DATA, { recursive: true });
  const images = {};
  const done = async (name, describe, make) => {
    const img = join(DATA, `${name}.img`);
    const meta = `${img}.json`;
    if (!existsSync(meta)) {
      log(`generating ${name}.img ...`);
      await rm(img, { force: true });
      const info = await make(img);
      await writeFile(meta, JSON.stringify(info));
    }
    images[name] = { path: img, ...JSON.parse(await readFile(meta, 'utf8')), describe };
  };

  if (only.includes('realistic')) {
    await done('realistic', 'ext4 of /usr files, fully allocated (like a classic LV)', async (img) => {
      const st = await stage(join(DATA, 'staging-usr'), ['/usr/lib/x86_64-linux-gnu', '/usr/bin', '/usr/share', '/usr/lib'], 560 * MiB);
      const tmp = `${img}.sparse`;
      mkfs(tmp, GiB, join(DATA, 'staging-usr'));
      const used = ext4Usage(tmp);
      // an LV has no holes: write every block
      execFileSync('cp', ['--sparse=never', tmp, img]);
      await rm(tmp);
      return { size: GiB, used, files: st.files, sparse: false };
    });
  }
  if (only.includes('full')) {
    await done('full', 'every block written: 60% random, 40% /usr binaries, no zeros', async (img) => {
      const bins = [];
      await walkFiles('/usr/bin', { files: bins, bytes: 0 }, 400 * MiB);
      const ws = createWriteStream(img, { mode: 0o600 });
      let bi = 0;
      let binBuf = Buffer.alloc(0);
      for (let i = 0; i < GiB / (4 * MiB); i++) {
        let block;
        if (i % 5 < 3) block = randomBytes(4 * MiB);
        else {
          while (binBuf.length < 4 * MiB) binBuf = Buffer.concat([binBuf, await readFile(bins[bi++ % bins.length])]);
          block = binBuf.subarray(0, 4 * MiB);
          binBuf = binBuf.subarray(4 * MiB);
          // no all-zero 4 KiB runs left to exploit
          for (let o = 0; o < block.length; o += 4096) if (block[o] === 0) block[o] = 1;
        }
        if (!ws.write(block)) await new Promise((r) => ws.once('drain', r));
      }
      await new Promise((r, j) => ws.end((e) => (e ? j(e) : r())));
      return { size: GiB, sparse: false };
    });
  }
  if (only.includes('zero') || !quick) {
    const small = await stage(join(DATA, 'staging-small'), ['/usr/share/doc', '/usr/share/man'], 24 * MiB);
    await done('zero', 'fresh ext4 with 24 MiB of files, sparse (like a thin LV)', async (img) => {
      mkfs(img, GiB, join(DATA, 'staging-small'));
      return { size: GiB, used: ext4Usage(img), files: small.files, sparse: true };
    });
    if (!quick) {
      await done('zero4g', 'the same at 4 GiB (RSS check)', async (img) => {
        mkfs(img, 4 * GiB, join(DATA, 'staging-small'));
        return { size: 4 * GiB, used: ext4Usage(img), files: small.files, sparse: true };
      });
    }
  }
  return images;
}

// ---------------------------------------------------------------- running
let canDrop = cacheMode === 'cold';
/** Before every timed run: cold (drop the page cache) or warm (read the inputs once), the same for both sides. */
async function prepareCache(inputs) {
  execFileSync('sync');
  if (canDrop) {
    try {
      await writeFile('/proc/sys/vm/drop_caches', '3');
      return;
    } catch {
      canDrop = false;
      log('cannot drop the page cache: warming inputs instead');
    }
  }
  for (const f of inputs) execFileSync('cat', [f], { stdio: ['ignore', 'ignore', 'ignore'] });
}

function timed(cmd, argv) {
  return new Promise((resolvePromise, reject) => {
    const tf = join(OUT, 'time.txt');
    const useTime = existsSync('/usr/bin/time');
    const [c, a] = useTime ? ['/usr/bin/time', ['-f', '%e %U %S %M', '-o', tf, cmd, ...argv]] : [cmd, argv];
    const t0 = performance.now();
    const child = spawn(c, a, { stdio: ['ignore', 'pipe', 'inherit'] });
    let stdout = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.on('error', reject);
    child.on('close', async (code) => {
      const wall = (performance.now() - t0) / 1000;
      if (code !== 0) return reject(new Error(`${cmd} ${argv.join(' ')} exited ${code}`));
      let cpu;
      if (useTime) {
        const [, u, s, m] = (await readFile(tf, 'utf8')).trim().split('\n').at(-1).split(' ').map(Number);
        cpu = { user: u, system: s, maxRssKiB: m };
      }
      resolvePromise({ wall, stdout, cpu });
    });
  });
}

const sh = (script, ...a) => timed('sh', ['-c', script, 'sh', ...a]);
const kv = (...a) => timed(process.execPath, [join(root, 'bench', 'child.mjs'), ...a]);

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};
const mbps = (bytes, s) => bytes / s / 1e6;

/** One kvmbak run's figures, from its JSON line and the process's wall time. */
function kvRecord(line, k) {
  return {
    s: line.seconds,
    wall: k.wall,
    rssMiB: line.maxRssKiB / 1024,
    cpu: { user: line.cpuUserS, system: line.cpuSystemS },
    poolLagMs: line.poolLagMs,
  };
}

async function benchImage(name, img) {
  const refGz = join(OUT, `${name}.ref.gz`);
  const kvGz = join(OUT, `${name}.kvmbak.gz`);
  const idx = join(OUT, `${name}.index.json`);
  const restored = join(OUT, `${name}.restored`);
  const res = { name, describe: img.describe, bytes: img.size, used: img.used, pack: { ref: [], kvmbak: [] }, unpack: { ref: [], kvmbak: [] } };

  for (let r = 0; r < reps; r++) {
    await rm(refGz, { force: true });
    await prepareCache([img.path]);
    const ref = await sh('dd if="$1" bs=4M status=none | gzip -3 > "$2"', img.path, refGz);
    res.pack.ref.push({ s: ref.wall, cpu: ref.cpu });
    await rm(kvGz, { force: true });
    await prepareCache([img.path]);
    const k = await kv('pack', img.path, kvGz, idx);
    const line = JSON.parse(k.stdout);
    res.pack.kvmbak.push(kvRecord(line, k));
    res.refSize = (await stat(refGz)).size;
    res.kvSize = line.storedBytes;
    res.zeroShare = (line.zeroChunks * 4 * MiB) / line.bytes;
    log(
      `${name} pack #${r + 1}: ref ${ref.wall.toFixed(2)} s, kvmbak ${line.seconds.toFixed(2)} s (process ${k.wall.toFixed(2)} s, ${(line.maxRssKiB / 1024).toFixed(0)} MiB RSS)`,
    );
  }
  for (let r = 0; r < reps; r++) {
    await rm(restored, { force: true });
    await prepareCache([refGz]);
    const ref = await sh('gunzip -c "$1" | dd of="$2" bs=4M conv=fsync status=none', refGz, restored);
    res.unpack.ref.push({ s: ref.wall, cpu: ref.cpu });
    await rm(restored, { force: true });
    await prepareCache([kvGz]);
    const k = await kv('unpack', kvGz, restored, idx);
    const line = JSON.parse(k.stdout);
    if (!line.verified) throw new Error('unpack did not verify');
    res.unpack.kvmbak.push(kvRecord(line, k));
    log(`${name} unpack #${r + 1}: ref ${ref.wall.toFixed(2)} s, kvmbak ${line.seconds.toFixed(2)} s (process ${k.wall.toFixed(2)} s)`);
  }
  await rm(restored, { force: true });
  return res;
}

async function rssRun(name, img) {
  const out = join(OUT, `${name}.kvmbak.gz`);
  await prepareCache([img.path]);
  const k = await kv('pack', img.path, out);
  const line = JSON.parse(k.stdout);
  await rm(out, { force: true });
  log(`${name} pack: ${line.seconds.toFixed(2)} s, ${(line.maxRssKiB / 1024).toFixed(0)} MiB RSS`);
  return { name, bytes: img.size, s: line.seconds, rssMiB: line.maxRssKiB / 1024 };
}

/**
 * The chunk store table (issue 11): bench/chunks.mjs in its own process, printed after the archive
 * table; 2 repetitions (1 with --quick) of pack, a first and an unchanged backup into the store.
 */
async function chunkStoreTable() {
  const r = spawnSync(process.execPath, [join(root, 'bench', 'chunks.mjs'), '--reps', String(Number(opt('reps', quick ? 1 : 2)))], {
    cwd: root,
    stdio: ['ignore', 'pipe', 'inherit'],
    encoding: 'utf8',
  });
  if (r.status !== 0) throw new Error(`bench/chunks.mjs exited ${r.status}`);
  return r.stdout.trimEnd();
}

// ---------------------------------------------------------------- main
ensureBuilt();
await mkdir(OUT, { recursive: true });
if (only.every((x) => x === 'chunks')) {
  console.log(await chunkStoreTable());
  process.exit(0);
}
const images = await makeImages();
const cpus = os.cpus();
const startLoad = os
  .loadavg()
  .map((l) => l.toFixed(2))
  .join(' ');
log(
  `machine: ${cpus.length} × ${cpus[0]?.model}, node ${process.version}, load ${os
    .loadavg()
    .map((l) => l.toFixed(2))
    .join(' ')}`,
);
const results = [];
for (const name of only) if (images[name]) results.push(await benchImage(name, images[name]));
const profiles = [];
for (const r of results) {
  if (r.name === 'zero') continue;
  await prepareCache([images[r.name].path]);
  const p = await timed(process.execPath, [
    join(root, 'bench', 'profile.mjs'),
    images[r.name].path,
    join(OUT, `${r.name}.kvmbak.gz`),
    join(OUT, `${r.name}.index.json`),
  ]);
  profiles.push({ name: r.name, ...JSON.parse(p.stdout) });
  log(`${r.name} profiled`);
}
const rss = [];
if (!quick && images.zero && images.zero4g) {
  rss.push(await rssRun('zero', images.zero), await rssRun('zero4g', images.zero4g));
}

// ---------------------------------------------------------------- report
const pad = (s, n) => String(s).padEnd(n);
const lpad = (s, n) => String(s).padStart(n);
const lines = [];
lines.push(`kvmbak archive benchmark — ${new Date().toISOString()}`);
lines.push(`machine: ${cpus.length} CPUs (${cpus[0]?.model}), node ${process.version}, ${reps} repetition(s), median [best]`);
lines.push(
  `page cache: ${canDrop ? 'dropped before every run (cold reads)' : 'inputs read once before every run (warm)'}; load average at start ${startLoad}, at end ${os
    .loadavg()
    .map((l) => l.toFixed(2))
    .join(' ')}`,
);
if (os.loadavg()[0] > cpus.length / 2 || Number(startLoad.split(' ')[0]) > cpus.length / 2) {
  lines.push(
    `WARNING: the machine was busy (load average above ${cpus.length / 2} on ${cpus.length} CPUs): kvmbak's threads shared the cores with other work`,
  );
  lines.push("  while the reference's one gzip thread hardly noticed, so the speed-ups below understate kvmbak's; rerun on an idle machine.");
}
lines.push('MB = 10^6 bytes. kvmbak = the packImage/unpackImage call (worker start-up, fsync and rename included), run in a child process;');
lines.push('the reference = the whole shell pipeline (the unpack one with dd conv=fsync, as kvmbak fsyncs).');
{
  const extra = results.flatMap((r) => [...r.pack.kvmbak, ...r.unpack.kvmbak].map((x) => x.wall - x.s));
  if (extra.length) lines.push(`Starting node and importing kvmbak adds ${median(extra).toFixed(2)} s per process (median), not counted above.`);
}
lines.push('');
lines.push(
  `${pad('image', 10)} ${pad('op', 7)} ${lpad('ref MB/s', 14)} ${lpad('kvmbak MB/s', 16)} ${lpad('speed-up', 14)} ${lpad('size ratio', 11)} ${lpad('kvmbak RSS', 11)} ${lpad('pool lag', 9)}`,
);
// the longest wait of a 1-byte fs read (libuv's pool) polled every 10 ms during the run: the codec must not hold the pool
const lag = (arr) => (arr.every((x) => x.poolLagMs !== undefined) ? `${Math.max(...arr.map((x) => x.poolLagMs)).toFixed(0)} ms` : '-');
for (const r of results) {
  const fmt = (arr) => `${mbps(r.bytes, median(arr.map((x) => x.s))).toFixed(0)} [${mbps(r.bytes, Math.min(...arr.map((x) => x.s))).toFixed(0)}]`;
  const ratio = (ref, kv) =>
    `${(median(ref.map((x) => x.s)) / median(kv.map((x) => x.s))).toFixed(2)}× [${(Math.min(...ref.map((x) => x.s)) / Math.min(...kv.map((x) => x.s))).toFixed(2)}×]`;
  lines.push(
    `${pad(r.name, 10)} ${pad('pack', 7)} ${lpad(fmt(r.pack.ref), 14)} ${lpad(fmt(r.pack.kvmbak), 16)} ${lpad(ratio(r.pack.ref, r.pack.kvmbak), 14)} ${lpad(`${(r.kvSize / r.refSize).toFixed(4)}`, 11)} ${lpad(`${Math.max(...r.pack.kvmbak.map((x) => x.rssMiB)).toFixed(0)} MiB`, 11)} ${lpad(lag(r.pack.kvmbak), 9)}`,
  );
  lines.push(
    `${pad('', 10)} ${pad('unpack', 7)} ${lpad(fmt(r.unpack.ref), 14)} ${lpad(fmt(r.unpack.kvmbak), 16)} ${lpad(ratio(r.unpack.ref, r.unpack.kvmbak), 14)} ${lpad('', 11)} ${lpad(`${Math.max(...r.unpack.kvmbak.map((x) => x.rssMiB)).toFixed(0)} MiB`, 11)} ${lpad(lag(r.unpack.kvmbak), 9)}`,
  );
}
lines.push('');
for (const r of results) {
  const used = `${r.used !== undefined ? `, ext4 ${(r.used * 100).toFixed(0)}% full` : ''}, ${(r.zeroShare * 100).toFixed(0)}% all-zero 4 MiB chunks`;
  lines.push(`${r.name}: ${r.describe}${used}; output ${(r.kvSize / 1e6).toFixed(1)} MB (kvmbak) vs ${(r.refSize / 1e6).toFixed(1)} MB (gzip -3)`);
  const cpuOf = (x) => (x.cpu ? x.cpu.user + x.cpu.system : NaN);
  lines.push(
    `  CPU seconds (user+sys, median): pack ref ${median(r.pack.ref.map(cpuOf)).toFixed(1)}, kvmbak ${median(r.pack.kvmbak.map(cpuOf)).toFixed(1)}; unpack ref ${median(r.unpack.ref.map(cpuOf)).toFixed(1)}, kvmbak ${median(r.unpack.kvmbak.map(cpuOf)).toFixed(1)}`,
  );
}
if (profiles.length) {
  lines.push('');
  lines.push('where the time goes — each stage alone on one thread, seconds per GiB of raw data (bench/profile.mjs;');
  lines.push('CPU seconds for sha256, zero check, compression and inflation, wall-clock seconds for reads, writes and fsync):');
  const cols = [
    ['readCold', canDrop ? 'read (cold)' : 'read (warm)'],
    ['sha256', 'sha256'],
    ['zeroCheck', 'zero check'],
    ['compressPlain', 'zlib L3'],
    ['codecCompressPlain', 'codec'],
    ['compress', 'as kvmbak'],
    ['writeCompressed', 'write .gz'],
    ['fsyncCompressed', 'fsync .gz'],
    ['inflateZlib', 'zlib inflate'],
    ['inflate', 'codec inflate'],
    ['writeRaw', 'write raw'],
  ];
  lines.push('  ("codec" = the addon\'s libdeflate at the level --level 3 maps to; "as kvmbak" = that, with incompressible chunks stored;');
  lines.push('   "zlib L3" = node:zlib gzipSync level 3; zero chunks skipped by all three)');
  lines.push(`  ${pad('image', 10)} ${cols.map(([, h]) => lpad(h, 12)).join(' ')} ${lpad('transfer/chunk', 15)}`);
  for (const p of profiles) {
    lines.push(
      `  ${pad(p.name, 10)} ${cols.map(([k]) => lpad(p[k].toFixed(2), 12)).join(' ')} ${lpad(`${p.transferRoundTripMs.toFixed(3)} ms`, 15)}`,
    );
  }
  lines.push('');
  lines.push('codec speed on one core, same non-zero chunks (MB of raw data per CPU second):');
  for (const p of profiles) {
    lines.push(
      `  ${pad(p.name, 10)} compress: node:zlib L${p.level} ${p.mbpsZlibCompress.toFixed(0)}, ${p.codec.library} ${p.codec.version} L${p.codecLevel} ${p.mbpsCodecCompress.toFixed(0)} (${(p.mbpsCodecCompress / p.mbpsZlibCompress).toFixed(1)}×);` +
        ` decompress: node:zlib ${p.mbpsZlibInflate.toFixed(0)}, ${p.codec.library} ${p.mbpsCodecInflate.toFixed(0)} (${(p.mbpsCodecInflate / p.mbpsZlibInflate).toFixed(1)}×)`,
    );
    // the default level's neighbours: the image's output at each (the zero members as they are), against gzip -3's
    const r = results.find((x) => x.name === p.name);
    const here = p.levels?.find((l) => l.level === p.codecLevel);
    if (r?.refSize && here) {
      const parts = p.levels.map(
        (l) => `L${l.level} ${l.mbps.toFixed(0)} MB/s, ${((r.kvSize - here.bytes + l.bytes) / r.refSize).toFixed(3)}× gzip -3's size`,
      );
      lines.push(`  ${pad('', 10)} levels: ${parts.join('; ')} (--level 3 takes the fastest not larger than gzip -3)`);
    }
  }
}
if (profiles.length) {
  // The best any engine could do on this machine with this codec: the profile's CPU work spread
  // perfectly over every core, but never faster than the raw sha256 (one sequential stream).
  lines.push('');
  lines.push(`ceiling on ${cpus.length} cores: the profile's CPU seconds spread perfectly over all cores, never below the sequential raw sha256;`);
  lines.push("  set against the reference's median (start-up, fsync and imperfect overlap come on top):");
  for (const p of profiles) {
    const r = results.find((x) => x.name === p.name);
    const gib = r.bytes / GiB;
    const ceiling = (parts, seq, ref) => {
      const total = parts.reduce((a, [, v]) => a + v, 0);
      const s = Math.max(total / cpus.length, seq);
      const what = parts.map(([k, v]) => `${k} ${v.toFixed(2)}`).join(' + ');
      return `≥ ${s.toFixed(2)} s (${what} = ${total.toFixed(2)} CPU s) → at most ${(median(ref.map((x) => x.s)) / s).toFixed(2)}× the reference`;
    };
    const sha = p.sha256 * gib;
    const pack = [
      ['codec', p.compress * gib],
      ['raw sha256', sha],
      ['file sha256', sha * (r.kvSize / r.bytes)],
      ['zero check', p.zeroCheck * gib],
      ['read', p.readCold * gib],
    ];
    const unpack = [
      ['inflate', p.inflate * gib],
      ['raw sha256', sha],
      ['write raw', p.writeRaw * gib * (1 - p.zeroChunkShare)],
    ];
    lines.push(`  ${pad(p.name, 10)} pack   ${ceiling(pack, sha, r.pack.ref)}`);
    lines.push(`  ${pad('', 10)} unpack ${ceiling(unpack, sha, r.unpack.ref)}`);
  }
}
if (rss.length) {
  lines.push('');
  lines.push('peak RSS of a kvmbak pack process (default 4 MiB chunks, one thread per CPU):');
  for (const x of rss)
    lines.push(
      `  ${pad(x.name, 8)} ${lpad((x.bytes / GiB).toFixed(0), 2)} GiB  ${lpad(x.rssMiB.toFixed(0), 4)} MiB  (${mbps(x.bytes, x.s).toFixed(0)} MB/s)`,
    );
}
if (only.includes('chunks')) lines.push('', await chunkStoreTable());
console.log(lines.join('\n'));
await writeFile(join(OUT, 'results.json'), JSON.stringify({ date: new Date().toISOString(), reps, canDrop, results, profiles, rss }, null, 2));
for (const r of results) await rm(join(OUT, `${r.name}.restored`), { force: true });
