// One kvmbak run in its own process, so its peak RSS and CPU time are its own.
//   node bench/child.mjs pack   SRC DEST.gz RESULT.json [threads] [level] [chunkSize]
//   node bench/child.mjs unpack SRC.gz DEST INDEX.json  [threads]
// Prints one JSON line: { op, seconds, bytes, storedBytes, maxRssKiB, cpuUserS, cpuSystemS, ... }.
import { writeFile, readFile } from 'node:fs/promises';
import { packImage, unpackImage } from '../dist/index.js';

const [op, src, dst, json, threads, level, chunkSize] = process.argv.slice(2);
const common = { overwrite: true, ...(threads ? { threads: Number(threads) } : {}) };
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
const ru = process.resourceUsage();
line.maxRssKiB = ru.maxRSS;
line.cpuUserS = ru.userCPUTime / 1e6;
line.cpuSystemS = ru.systemCPUTime / 1e6;
process.stdout.write(`${JSON.stringify(line)}\n`);
