#!/usr/bin/env node
// kvmbak chunk store benchmark (issue 11): the store against `kvmbak image pack`, on the same
// realistic 1 GiB image, in the same run.
//
//   node bench/chunks.mjs                 2 repetitions
//   node bench/chunks.mjs --reps 3
//   npm run bench -- --only chunks        the same through bench/run.mjs (also part of a plain `npm run bench`)
//
// Prints, with the command that reproduces each figure:
//   - first backup into an empty store vs `kvmbak image pack` of the same image (speed ratio);
//   - second backup of the unchanged image: speed-up over the first, bytes added;
//   - after rewriting 2% of the image's 4 MiB chunks: bytes added / bytes of the first backup.
// The store runs write a disk as `kvmbak backup --format chunks` does (storeChunked): no whole-disk
// sha256, the disk is identified by its chunk list.
// The image is bench/run.mjs's "realistic" one (ext4 of /usr files, fully allocated), shared through
// bench/.data: whichever bench runs first makes it. Inputs are read once before every timed run
// (warm page cache) so both sides read from memory; runs alternate so background load hits both.
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, readdirSync, statSync } from 'node:fs';
import { copyFile, lstat, mkdir, open, readdir, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const DATA = join(root, 'bench', '.data');
const OUT = join(root, 'bench', '.out', 'chunks');
const GiB = 1024 ** 3;
const MiB = 1024 ** 2;
const log = (...a) => console.error('[bench:chunks]', ...a);

// ---------------------------------------------------------------- child: one measured run per process
if (process.argv[2] === '--child') {
  const [, , , op, src, dst, concurrency] = process.argv;
  const { ChunkStore, writeDiskToStore } = await import('../dist/index.js');
  const t0 = performance.now();
  let line;
  if (op === 'store') {
    const store = await ChunkStore.open(dst);
    const r = await writeDiskToStore(src, store, {
      ...(concurrency ? { concurrency: Number(concurrency) } : {}),
    });
    await store.close();
    line = {
      op,
      seconds: (performance.now() - t0) / 1000,
      bytesRead: r.bytesRead,
      bytesAdded: r.bytesAdded,
      chunksNew: r.chunksNew,
      chunksReused: r.chunksReused,
      zeroChunks: r.zeroChunks,
    };
  } else if (op === 'rewrite') {
    // A copy of SRC with 4 KiB of random data written into 2% of its 4 MiB chunks (as a guest rewriting files).
    execFileSync('cp', ['--reflink=auto', src, dst]);
    const nChunks = Math.ceil(statSync(src).size / (4 * MiB));
    const rewrite = Math.max(1, Math.round(nChunks * 0.02));
    const fh = await open(dst, 'r+');
    // evenly spread over the disk (the same chunks every run, zero and data ones as they come), so
    // the figure does not depend on a draw: 5 chunks that happen to be data or stored ones weigh more
    const picked = Array.from({ length: rewrite }, (_, k) => Math.floor(((k + 0.5) * nChunks) / rewrite));
    for (const c of picked) await fh.write(randomBytes(4096), 0, 4096, c * 4 * MiB + 8192);
    await fh.close();
    line = { op, seconds: (performance.now() - t0) / 1000, rewrite, nChunks, picked };
  } else throw new Error(`unknown op ${op}`);
  const ru = process.resourceUsage();
  line.maxRssKiB = ru.maxRSS;
  line.cpuS = (ru.userCPUTime + ru.systemCPUTime) / 1e6;
  process.stdout.write(`${JSON.stringify(line)}\n`);
  process.exit(0);
}

const args = process.argv.slice(2);
const reps = Number(args.includes('--reps') ? args[args.indexOf('--reps') + 1] : 2);

// ---------------------------------------------------------------- build
function newest(dir) {
  let t = 0;
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    t = Math.max(t, e.isDirectory() ? newest(p) : statSync(p).mtimeMs);
  }
  return t;
}
const dist = join(root, 'dist', 'index.js');
if (!existsSync(dist) || statSync(dist).mtimeMs < newest(join(root, 'src'))) {
  log('dist/ is missing or older than src/: building with tsup');
  if (spawnSync('npx', ['tsup'], { cwd: root, stdio: ['ignore', 'ignore', 'inherit'] }).status !== 0) throw new Error('tsup failed');
}

// ---------------------------------------------------------------- the image (bench/run.mjs's recipe)
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
      out.files.push(p);
      out.bytes += (await lstat(p)).size;
    }
  }
}
async function realisticImage() {
  const img = join(DATA, 'realistic.img');
  if (existsSync(`${img}.json`)) return img;
  log('generating realistic.img (ext4 of /usr files, 1 GiB, fully allocated) ...');
  await mkdir(DATA, { recursive: true });
  const staging = join(DATA, 'staging-usr');
  if (!existsSync(join(staging, '.complete'))) {
    await rm(staging, { recursive: true, force: true });
    const found = { files: [], bytes: 0 };
    for (const f of ['/usr/lib/x86_64-linux-gnu', '/usr/bin', '/usr/share', '/usr/lib']) await walkFiles(f, found, 560 * MiB);
    for (const f of found.files) {
      const to = join(staging, relative('/', f));
      await mkdir(dirname(to), { recursive: true });
      await copyFile(f, to);
    }
    await writeFile(join(staging, '.complete'), JSON.stringify({ files: found.files.length, bytes: found.bytes }));
  }
  const tmp = `${img}.sparse`;
  execFileSync('truncate', ['-s', String(GiB), tmp]);
  execFileSync('mkfs.ext4', ['-q', '-F', '-N', '131072', '-L', 'kvmbak-bench', '-d', staging, tmp], { stdio: 'inherit' });
  execFileSync('cp', ['--sparse=never', tmp, img]);
  await rm(tmp);
  await writeFile(`${img}.json`, JSON.stringify({ size: GiB, sparse: false }));
  return img;
}

// ---------------------------------------------------------------- running
function run(argv) {
  return new Promise((res, rej) => {
    const t0 = performance.now();
    const child = spawn(process.execPath, argv, { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    child.on('close', (code) =>
      code === 0
        ? res({ ...JSON.parse(out.trim().split('\n').at(-1)), wall: (performance.now() - t0) / 1000 })
        : rej(new Error(`${argv.join(' ')} exited ${code}`)),
    );
  });
}
const warm = (f) => execFileSync('cat', [f], { stdio: ['ignore', 'ignore', 'ignore'] });
const self = fileURLToPath(import.meta.url);
const pack = (src, dst) => run([join(root, 'bench', 'child.mjs'), 'pack', src, dst]);
const storeRun = (src, store, op = 'store') => run([self, '--child', op, src, store]);
const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};
const mbps = (bytes, s) => bytes / s / 1e6;
function duBytes(dir) {
  return Number(execFileSync('du', ['-sb', dir]).toString().split('\t')[0]);
}

await mkdir(OUT, { recursive: true });
const img = await realisticImage();
const size = statSync(img).size;
const startLoad = os
  .loadavg()
  .map((l) => l.toFixed(2))
  .join(' ');
const packS = [];
const firstS = [];
const secondS = [];
const cpu = { pack: [], first: [], second: [] };
let first;
let second;
let packBytes;
const store = join(OUT, 'store');
for (let r = 0; r < reps; r++) {
  await rm(join(OUT, 'pack.gz'), { force: true });
  warm(img);
  const p = await pack(img, join(OUT, 'pack.gz'));
  packS.push(p.seconds);
  cpu.pack.push(p.cpuUserS + p.cpuSystemS);
  packBytes = p.storedBytes;
  await rm(store, { recursive: true, force: true });
  warm(img);
  first = await storeRun(img, store);
  firstS.push(first.seconds);
  cpu.first.push(first.cpuS);
  warm(img);
  second = await storeRun(img, store);
  secondS.push(second.seconds);
  cpu.second.push(second.cpuS);
  log(
    `#${r + 1}: image pack ${p.seconds.toFixed(2)} s, first store backup ${first.seconds.toFixed(2)} s (${(first.maxRssKiB / 1024).toFixed(0)} MiB RSS), unchanged re-backup ${second.seconds.toFixed(2)} s`,
  );
}
const storeBytes = duBytes(store);

// 2% of the chunks rewritten (4 KiB of random data near the start of each, as a guest rewriting files).
const changed = join(OUT, 'changed.img');
const { rewrite, nChunks } = await run([self, '--child', 'rewrite', img, changed]);
warm(changed);
const third = await storeRun(changed, store);
await rm(changed, { force: true });

await rm(join(OUT, 'pack.gz'), { force: true });
await rm(store, { recursive: true, force: true });

const rebackupRate = mbps(size, median(secondS));
const lines = [];
const cpus = os.cpus();
lines.push(`kvmbak chunk store benchmark — ${new Date().toISOString()}`);
lines.push(
  `machine: ${cpus.length} CPUs (${cpus[0]?.model}), node ${process.version}, ${reps} repetition(s), medians; warm page cache; load ${startLoad} → ${os
    .loadavg()
    .map((l) => l.toFixed(2))
    .join(' ')}`,
);
lines.push(`image: bench/.data/realistic.img (${(size / GiB).toFixed(0)} GiB, ext4 of /usr files, fully allocated); MB = 10^6 bytes`);
lines.push('');
lines.push(`${'figure'.padEnd(52)} ${'value'.padStart(22)}  goal`);
lines.push('  $ the command that measures it (IMG = bench/.data/realistic.img; each run is one process, after `cat IMG >/dev/null`)');
const row = (k, v, goal, cmd) => {
  lines.push(`${k.padEnd(52)} ${v.padStart(22)}  ${goal}`);
  if (cmd) lines.push(`  $ ${cmd}`);
};
const STORE = 'node bench/chunks.mjs --child store IMG /tmp/store';
row('image pack (kvmbak image pack)', `${mbps(size, median(packS)).toFixed(0)} MB/s`, '', 'node bench/child.mjs pack IMG /tmp/x.gz');
row('first backup into an empty store', `${mbps(size, median(firstS)).toFixed(0)} MB/s`, '', `rm -rf /tmp/store; ${STORE}`);
row('  first store backup / image pack speed', `${(median(packS) / median(firstS)).toFixed(2)}×`, '≥ 0.95×', 'the two above, alternated');
row(
  '  bytes: store / image pack .gz',
  `${(storeBytes / 1e6).toFixed(1)} / ${(packBytes / 1e6).toFixed(1)} MB`,
  '',
  'du -sb /tmp/store; stat -c %s /tmp/x.gz',
);
row(
  'second backup, unchanged: speed-up over the first',
  `${(median(firstS) / median(secondS)).toFixed(2)}× (${rebackupRate.toFixed(0)} MB/s)`,
  '≥ 5×',
  `${STORE}   (again, into the store the first made)`,
);
row(
  "  bytes added / first backup's bytes",
  `${((second.bytesAdded / first.bytesAdded) * 100).toFixed(3)} %`,
  '< 0.1 %',
  'bytesAdded of the two runs above',
);
row(
  `after rewriting 2% of the chunks (${rewrite} of ${nChunks}, evenly spread): bytes added`,
  `${((third.bytesAdded / first.bytesAdded) * 100).toFixed(2)} % (${third.chunksNew} new)`,
  '≤ 3 %',
  'node bench/chunks.mjs --child rewrite IMG /tmp/changed.img; node bench/chunks.mjs --child store /tmp/changed.img /tmp/store',
);
row(
  'CPU seconds (user+sys): pack / first / unchanged',
  `${median(cpu.pack).toFixed(1)} / ${median(cpu.first).toFixed(1)} / ${median(cpu.second).toFixed(1)}`,
  'load-independent view',
  'cpuUserS+cpuSystemS / cpuS of the runs above',
);
row('  first / unchanged CPU seconds', `${(median(cpu.first) / median(cpu.second)).toFixed(2)}×`, '');
row('peak RSS, first store backup', `${(first.maxRssKiB / 1024).toFixed(0)} MiB`, '< 256 MiB', 'maxRssKiB of the first backup');
lines.push('');
lines.push('all of it: node bench/chunks.mjs [--reps N] (or npm run bench -- --only chunks); a child also takes a concurrency after DEST');
console.log(lines.join('\n'));
await writeFile(
  join(OUT, 'results.json'),
  JSON.stringify({ date: new Date().toISOString(), reps, packS, firstS, secondS, cpu, first, second, third, storeBytes, packBytes }, null, 2),
);
