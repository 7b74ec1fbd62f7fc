/**
 * Source of the compression worker, run with `new Worker(WORKER_SOURCE, { eval: true })`.
 *
 * It is a string so that there is no worker file to locate: the same code runs
 * from the TypeScript sources under vitest and from the tsup bundle. zlib's
 * synchronous functions run on the worker's own thread, never on libuv's
 * shared thread pool (which fs, dns and crypto need).
 *
 * Messages in (buffers arrive as transferred ArrayBuffers, no copy):
 *   { id, op: 'gzip',   ab, len, level, memLevel, strategy }
 *   { id, op: 'gunzip', ab, len, expect }
 * Messages out:
 *   gzip   → { id, ab, out, outOff, outLen, stored }  ab (the input) is handed back for reuse, as by gunzip;
 *                                                    stored: the chunk was incompressible and stored (level 0)
 *   gunzip → { id, ab, zero: true } | { id, ab, zero: false, out, outOff, outLen }
 *   error  → { id, error: { message, code, kind } }   kind: 'truncated' | 'corrupt' | 'length' | 'internal'
 */
export const WORKER_SOURCE = String.raw`
'use strict';
const { parentPort } = require('node:worker_threads');
const zlib = require('node:zlib');

const ZERO = new Uint8Array(65536);

function isAllZero(u8) {
  const n = u8.byteLength;
  const zero = Buffer.from(ZERO.buffer);
  const b = Buffer.from(u8.buffer, u8.byteOffset, n);
  for (let off = 0; off < n; off += 65536) {
    const end = Math.min(n, off + 65536);
    if (b.compare(zero, 0, end - off, off, end) !== 0) return false;
  }
  return true;
}

// Hand a result buffer back without copying: zlib allocated it for this call
// alone (chunkSize is the whole output). Results under 4 KiB may live in
// Buffer's shared pool, which must not be transferred: copy those.
function detach(buf) {
  if (buf.byteLength >= 4096) {
    return { out: buf.buffer, outOff: buf.byteOffset, outLen: buf.byteLength };
  }
  const copy = new Uint8Array(buf.byteLength);
  copy.set(buf);
  return { out: copy.buffer, outOff: 0, outLen: buf.byteLength };
}

// Incompressible data (compressed files, media, encrypted blocks) costs
// deflate the most time for no gain: 4 samples spread over the chunk are
// deflated at level 1, and when they do not shrink by 1% the chunk is stored
// (level 0: deflate stored blocks, a valid member at memcpy speed, no larger
// than level 3 would make it).
function incompressible(input, len) {
  const s = Math.min(16384, len >>> 3);
  if (s < 512) return false;
  let out = 0;
  for (let k = 0; k < 4; k++) {
    const off = Math.floor(((len - s) * k) / 3);
    out += zlib.deflateRawSync(input.subarray(off, off + s), { level: 1 }).byteLength;
  }
  return out >= 4 * s * 0.99;
}

function fail(id, kind, e) {
  parentPort.postMessage({ id, error: { kind, message: String(e && e.message || e), code: e && e.code } });
}

parentPort.on('message', (m) => {
  if (m.op === 'gzip') {
    let r;
    let stored = false;
    try {
      const input = new Uint8Array(m.ab, 0, m.len);
      // one output buffer of deflate's worst-case size: no intermediate pieces to concatenate or collect
      const bound = m.len + (m.len >>> 10) + 1024;
      stored = m.level > 0 && incompressible(input, m.len);
      const level = stored ? 0 : m.level;
      r = detach(zlib.gzipSync(input, { level, memLevel: m.memLevel, strategy: m.strategy, chunkSize: bound }));
    } catch (e) {
      fail(m.id, 'internal', e);
      return;
    }
    parentPort.postMessage({ id: m.id, ab: m.ab, out: r.out, outOff: r.outOff, outLen: r.outLen, stored }, [m.ab, r.out]);
  } else if (m.op === 'gunzip') {
    const input = new Uint8Array(m.ab, 0, m.len);
    let res;
    try {
      res = zlib.gunzipSync(input, {
        info: true,
        chunkSize: Math.max(64, m.expect + 1),
        maxOutputLength: m.expect + 1,
      });
    } catch (e) {
      const kind = e && e.code === 'Z_BUF_ERROR' ? 'truncated'
        : e && e.code === 'ERR_BUFFER_TOO_LARGE' ? 'length'
        : 'corrupt';
      fail(m.id, kind, e);
      return;
    }
    const out = res.buffer;
    if (out.byteLength !== m.expect) {
      fail(m.id, 'length', new Error('member holds ' + out.byteLength + ' bytes, expected ' + m.expect));
      return;
    }
    if (res.engine.bytesWritten !== m.len) {
      fail(m.id, 'corrupt', new Error((m.len - res.engine.bytesWritten) + ' bytes of unexpected data after the gzip member'));
      return;
    }
    if (isAllZero(out)) {
      parentPort.postMessage({ id: m.id, zero: true, ab: m.ab }, [m.ab]);
      return;
    }
    const r = detach(out);
    parentPort.postMessage({ id: m.id, ab: m.ab, zero: false, out: r.out, outOff: r.outOff, outLen: r.outLen }, [m.ab, r.out]);
  } else {
    fail(m.id, 'internal', new Error('unknown op ' + m.op));
  }
});
`;

/**
 * Source of the hash worker: sha256 of the raw data, in the order the chunks
 * are posted, off the main thread (so reading, zero detection and writing go
 * on while it hashes).
 *
 * Messages in:  { id, op: 'update', ab, len } | { op: 'zeros', len } | { id, op: 'digest' }
 * Messages out: { id, ab } (the chunk, handed back) | { id, hex }
 */
export const HASH_WORKER_SOURCE = String.raw`
'use strict';
const { parentPort } = require('node:worker_threads');
const { createHash } = require('node:crypto');
const ZERO = Buffer.alloc(65536);
const hash = createHash('sha256');
parentPort.on('message', (m) => {
  if (m.op === 'update') {
    hash.update(new Uint8Array(m.ab, 0, m.len));
    parentPort.postMessage({ id: m.id, ab: m.ab }, [m.ab]);
  } else if (m.op === 'zeros') {
    let left = m.len;
    while (left > 0) {
      const n = Math.min(left, ZERO.length);
      hash.update(n === ZERO.length ? ZERO : ZERO.subarray(0, n));
      left -= n;
    }
  } else if (m.op === 'digest') {
    parentPort.postMessage({ id: m.id, hex: hash.digest('hex') });
  }
});
`;
