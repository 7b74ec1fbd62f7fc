// Where the time goes: each stage of pack/unpack measured alone, on one
// thread, over the same image (its kvmbak image and index from run.mjs).
//   node bench/profile.mjs IMG KVMBAK.gz INDEX.json
// Prints one JSON line of seconds per GiB of raw data for each stage, and
// the codec's own speed next to node:zlib's on the same chunks (MB/s on one core).
import { createHash } from 'node:crypto';
import { createRequire } from 'node:module';
import { closeSync, fstatSync, openSync, readSync, writeSync, fsyncSync, rmSync } from 'node:fs';
import { Worker } from 'node:worker_threads';
import { readFileSync } from 'node:fs';
import zlib from 'node:zlib';

const [img, gz, indexPath, levelArg] = process.argv.slice(2);
// the addon, as the archive workers load it; its level for kvmbak's default (dist has the mapping)
const codec = createRequire(import.meta.url)('../build/Release/kvmbak.node');
const { codecLevelFor } = await import('../dist/index.js').then((m) => ({ codecLevelFor: m.codecLevel }));
const LEVEL = Number(levelArg ?? 3);
const CODEC_LEVEL = codecLevelFor(LEVEL);
const index = JSON.parse(readFileSync(indexPath, 'utf8'));
const CH = index.chunkSize;
const GiB = 1024 ** 3;
const now = () => performance.now() / 1000;
// CPU-bound stages are timed in CPU seconds of this (single-threaded) process, so that other load
// on the machine does not count; I/O stages (read, write, fsync) in wall-clock seconds
const cpuNow = () => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
};
const fd = openSync(img, 'r');
const size = fstatSync(fd).size;
const perGiB = (s, bytes = size) => (s * GiB) / bytes;
const out = {};

// read (the caller dropped the page cache: cold) + what else happens per raw chunk
const buf = Buffer.alloc(CH);
const zero = Buffer.alloc(65536);
const h = createHash('sha256');
let tRead = 0,
  tHash = 0,
  tZero = 0,
  tComp = 0,
  tCompK = 0,
  tCodec = 0,
  compBytes = 0,
  zeroChunks = 0,
  storedChunks = 0;
const cOut = Buffer.alloc(codec.gzipCompressBound(CH));
const scratch = Buffer.alloc(codec.gzipCompressBound(16384));
// what the kvmbak worker does (src/archive/worker.ts): store chunks whose samples do not compress
function incompressible(input, len) {
  const s = Math.min(16384, len >>> 3);
  let out = 0;
  for (let k = 0; k < 4; k++) {
    const off = Math.floor(((len - s) * k) / 3);
    out += codec.gzipCompress(input.subarray(off, off + s), 1, scratch) - 18;
  }
  return out >= 4 * s * 0.99;
}
// the levels next to CODEC_LEVEL, to show why it is the default: output size and speed of each
const neighbours = [CODEC_LEVEL - 1, CODEC_LEVEL + 1].filter((l) => l >= 1 && l <= 12);
const levelStats = new Map([CODEC_LEVEL, ...neighbours].map((l) => [l, { seconds: 0, bytes: 0 }]));
const members = [];
for (let pos = 0; pos < size; pos += CH) {
  let t = now();
  const n = readSync(fd, buf, 0, CH, pos);
  tRead += now() - t;
  const v = buf.subarray(0, n);
  t = cpuNow();
  h.update(v);
  tHash += cpuNow() - t;
  t = cpuNow();
  let isZero = true;
  for (let o = 0; o < n; o += 65536)
    if (v.compare(zero, 0, Math.min(65536, n - o), o, Math.min(n, o + 65536)) !== 0) {
      isZero = false;
      break;
    }
  tZero += cpuNow() - t;
  if (isZero) {
    zeroChunks++;
    continue;
  }
  t = cpuNow();
  zlib.gzipSync(v, { level: LEVEL, memLevel: 8, chunkSize: n + (n >>> 10) + 1024 });
  tComp += cpuNow() - t;
  t = cpuNow();
  const plain = codec.gzipCompress(v, CODEC_LEVEL, cOut);
  tCodec += cpuNow() - t;
  levelStats.get(CODEC_LEVEL).seconds += cpuNow() - t;
  levelStats.get(CODEC_LEVEL).bytes += plain;
  for (const l of neighbours) {
    t = cpuNow();
    const b = codec.gzipCompress(v, l, cOut);
    levelStats.get(l).seconds += cpuNow() - t;
    levelStats.get(l).bytes += b;
  }
  t = cpuNow();
  const stored = incompressible(v, n);
  const len = codec.gzipCompress(v, stored ? 0 : CODEC_LEVEL, cOut);
  tCompK += cpuNow() - t;
  if (stored) storedChunks++;
  if (plain === 0 || len === 0) throw new Error('codec output too small');
  compBytes += n;
  members.push(Buffer.from(cOut.subarray(0, len)));
}
closeSync(fd);
out.readCold = perGiB(tRead);
out.sha256 = perGiB(tHash);
out.zeroCheck = perGiB(tZero);
out.compressPlain = perGiB(tComp);
out.codecCompressPlain = perGiB(tCodec);
out.compress = perGiB(tCompK);
out.level = LEVEL;
out.codecLevel = CODEC_LEVEL;
out.codec = codec.codecInfo();
// one core's speed on the non-zero chunks (MB of raw data per second)
out.mbpsZlibCompress = compBytes / tComp / 1e6;
out.mbpsCodecCompress = compBytes / tCodec / 1e6;
// every level on every non-zero chunk, no chunk stored (zero chunks are a fixed member at any level)
out.levels = [...levelStats].sort((a, b) => a[0] - b[0]).map(([level, x]) => ({ level, bytes: x.bytes, mbps: compBytes / x.seconds / 1e6 }));
out.zeroChunkShare = (zeroChunks * CH) / size;
out.storedChunkShare = (storedChunks * CH) / size;

// writing the compressed output (page cache, then fsync)
let t = now();
const w = openSync(`${gz}.profile`, 'w');
let off = 0;
for (const m of members) {
  writeSync(w, m, 0, m.length, off);
  off += m.length;
}
out.writeCompressed = perGiB(now() - t);
t = now();
fsyncSync(w);
out.fsyncCompressed = perGiB(now() - t);
closeSync(w);
rmSync(`${gz}.profile`);

// unpack stages: inflate, raw write
t = now();
const raws = [];
let tInfl = 0;
let tZInfl = 0;
for (const m of members) {
  let t0 = cpuNow();
  zlib.gunzipSync(m, { chunkSize: CH + 1 });
  tZInfl += cpuNow() - t0;
  const r = Buffer.allocUnsafe(CH);
  t0 = cpuNow();
  const d = codec.gzipDecompress(m, r);
  tInfl += cpuNow() - t0;
  if (d.result !== 'ok') throw new Error(`codec refused a member: ${d.result}`);
  raws.push(r.subarray(0, d.outBytes));
  if (raws.length > 16) raws.shift();
}
out.inflate = perGiB(tInfl);
out.inflateZlib = perGiB(tZInfl);
out.mbpsZlibInflate = compBytes / tZInfl / 1e6;
out.mbpsCodecInflate = compBytes / tInfl / 1e6;
t = now();
const w2 = openSync(`${gz}.profile-raw`, 'w');
let rawOff = 0;
for (let i = 0; i < members.length; i++) {
  const r = raws[i % raws.length];
  writeSync(w2, r, 0, r.length, rawOff);
  rawOff += r.length;
}
out.writeRaw = perGiB(now() - t, rawOff);
closeSync(w2);
rmSync(`${gz}.profile-raw`);

// a chunk's round trip to a worker thread and back, transferred (no copy)
const worker = new Worker(
  `require('node:worker_threads').parentPort.on('message', (ab) => require('node:worker_threads').parentPort.postMessage(ab, [ab]))`,
  { eval: true },
);
let ab = new ArrayBuffer(CH);
const rounds = 200;
await new Promise((resolve) => {
  let i = 0;
  t = now();
  worker.on('message', (back) => {
    ab = back;
    if (++i === rounds) return resolve();
    worker.postMessage(ab, [ab]);
  });
  worker.postMessage(ab, [ab]);
});
out.transferRoundTripMs = ((now() - t) / rounds) * 1000;
await worker.terminate();

process.stdout.write(`${JSON.stringify(out)}\n`);
