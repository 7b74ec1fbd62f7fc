// Lab guest: fills block devices with a deterministic, per-name pattern and reports its sha256.
// Usage: node fill-pattern.mjs NAME=DEVICE:BYTES...  → prints {"NAME":{"path","bytes","sha256"},...}
// Pattern, per 1 MiB block i (so images hold compressible data, zero runs and incompressible data):
//   i % 4 == 0  text lines naming the LV and block (block 0 is text: never a boot signature)
//   i % 4 == 2  zeros
//   otherwise   AES-128-CTR keystream keyed by the name (pseudo-random)
import { createCipheriv, createHash } from 'node:crypto';
import { closeSync, fsyncSync, openSync, writeSync } from 'node:fs';

const BLOCK = 1024 * 1024;

function textBlock(name, i) {
  const line = Buffer.from(`kvmbak lab ${name} block ${i}\n`);
  const b = Buffer.alloc(BLOCK);
  for (let off = 0; off < BLOCK; off += line.length) line.copy(b, off, 0, Math.min(line.length, BLOCK - off));
  return b;
}

function* pattern(name, bytes) {
  const key = createHash('sha256').update(`kvmbak-lab:${name}`).digest().subarray(0, 16);
  const cipher = createCipheriv('aes-128-ctr', key, Buffer.alloc(16));
  const zeros = Buffer.alloc(BLOCK);
  for (let i = 0; i * BLOCK < bytes; i++) {
    const len = Math.min(BLOCK, bytes - i * BLOCK);
    let b;
    if (i % 4 === 0) b = textBlock(name, i);
    else if (i % 4 === 2) b = zeros;
    else b = cipher.update(zeros);
    yield b.subarray(0, len);
  }
}

const result = {};
for (const arg of process.argv.slice(2)) {
  const m = /^([^=]+)=([^:]+):(\d+)$/.exec(arg);
  if (!m) throw new Error(`bad argument ${arg}: expected NAME=DEVICE:BYTES`);
  const [, name, path, size] = m;
  const bytes = Number(size);
  const fd = openSync(path, 'r+');
  try {
    const hash = createHash('sha256');
    let pos = 0;
    for (const b of pattern(name, bytes)) {
      writeSync(fd, b, 0, b.length, pos);
      hash.update(b);
      pos += b.length;
    }
    fsyncSync(fd);
    result[name] = { path, bytes, sha256: hash.digest('hex') };
  } finally {
    closeSync(fd);
  }
}
process.stdout.write(`${JSON.stringify(result)}\n`);
