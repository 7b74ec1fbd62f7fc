// One kvmbak run in its own process, so its peak RSS and CPU time are its own.
//   node bench/child.mjs pack   SRC DEST.gz RESULT.json [threads] [level] [chunkSize]
//   node bench/child.mjs unpack SRC.gz DEST INDEX.json  [threads]
// Prints one JSON line: { op, seconds, bytes, storedBytes, maxRssKiB, cpuUserS, cpuSystemS, poolLagMs, ... }.
// poolLagMs: the longest a 1-byte read took, issued every 10 ms during the run. fs calls
// run on libuv's thread pool (4 threads), as do crypto and the libvirt calls: a codec
// holding that pool would show here as a lag of a chunk's compression time or more.
import { open, writeFile, readFile } from 'node:fs/promises';
import { packImage, unpackImage } from '../dist/index.js';

const [op, src, dst, json, threads, level, chunkSize] = process.argv.slice(2);
const common = { overwrite: true, ...(threads ? { threads: Number(threads) } : {}) };
const probe = await open(new URL(import.meta.url), 'r');
const one = Buffer.alloc(1);
let poolLagMs = 0;
let probing = true;
const poll = (async () => {
  while (probing) {
    const t = performance.now();
    await probe.read(one, 0, 1, 0);
    poolLagMs = Math.max(poolLagMs, performance.now() - t);
    await new Promise((r) => setTimeout(r, 10));
  }
})();
const t0 = performance.now();
let line;
if (op === 'pack') {
  const r = await packImage(src, dst, { ...common, ...(level ? { level: Number(level) } : {}), ...(chunkSize ? { chunkSize } : {}) });
  const wall = (performance.now() - t0) / 1000;
  if (json) await writeFile(json, JSON.stringify(r));
  line = { op, seconds: wall, bytes: r.bytes, storedBytes: r.storedBytes, zeroChunks: r.zeroChunks, sha256: r.sha256 };
} else if (op === 'unpack') {
  const index = JSON.parse(await readFile(json, 'utf8'));
  const r = await unpackImage(src, dst, { ...common, index, expectSha256: index.sha256 });
  const wall = (performance.now() - t0) / 1000;
  line = { op, seconds: wall, bytes: r.bytes, storedBytes: r.storedBytes, verified: r.verified, mode: r.mode };
} else {
  throw new Error(`unknown op ${op}`);
}
probing = false;
await poll;
await probe.close();
line.poolLagMs = poolLagMs;
const ru = process.resourceUsage();
line.maxRssKiB = ru.maxRSS;
line.cpuUserS = ru.userCPUTime / 1e6;
line.cpuSystemS = ru.systemCPUTime / 1e6;
process.stdout.write(`${JSON.stringify(line)}\n`);
