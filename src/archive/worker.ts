/**
 * The archive engine's worker thread (built as its own entry,
 * dist/archive-worker.js): a codec worker of the pool (gzip/gunzip, pool.ts).
 *
 * Members are compressed and decompressed by the addon's libdeflate codec,
 * whose whole-buffer calls are synchronous: they run on this thread, never
 * on libuv's shared pool (which fs, crypto and the libvirt calls need), and
 * never on the main thread.
 */
import { createHash } from 'node:crypto';
import { parentPort } from 'node:worker_threads';
import { gunzipSync } from 'node:zlib';
import { loadNative, type NativeCodec } from '../native.js';
import type { FailureReply, GunzipRequest, GzipRequest, Sha256Request, TaskFailureKind, WorkerReply, WorkerRequest } from './messages.js';
import { isAllZero } from './zero.js';

const port = parentPort;
if (!port) throw new Error('kvmbak: archive-worker.js runs as a worker thread only');

// loaded on the first task, so a worker that is started but never used costs no dlopen
let loaded: NativeCodec | undefined;
const codec = (): NativeCodec => (loaded ??= loadNative());

/** gzip header + trailer around a deflate stream (libdeflate writes no optional fields). */
const GZIP_OVERHEAD = 18;
const SAMPLE = 16384;
let scratch: Uint8Array | undefined;

/**
 * Incompressible data (compressed files, media, encrypted blocks) costs
 * deflate the most time for no gain: 4 samples spread over the chunk are
 * compressed at level 1, and when they do not shrink by 1% the chunk is
 * stored (level 0: stored deflate blocks, a valid member at memcpy speed, no
 * larger than compressing would make it).
 */
function incompressible(input: Uint8Array): boolean {
  const len = input.byteLength;
  const s = Math.min(SAMPLE, len >>> 3);
  if (s < 512) return false;
  scratch ??= new Uint8Array(codec().gzipCompressBound(SAMPLE));
  let out = 0;
  for (let k = 0; k < 4; k++) {
    const off = Math.floor(((len - s) * k) / 3);
    out += codec().gzipCompress(input.subarray(off, off + s), 1, scratch) - GZIP_OVERHEAD;
  }
  return out >= 4 * s * 0.99;
}

class TaskFailure extends Error {
  constructor(
    readonly kind: TaskFailureKind,
    message: string,
    readonly code?: string,
  ) {
    super(message);
  }
}

function gzip(m: GzipRequest): WorkerReply {
  const input = new Uint8Array(m.ab, 0, m.len);
  const stored = m.sample && m.level > 0 && incompressible(input);
  const outLen = codec().gzipCompress(input, stored ? 0 : m.level, new Uint8Array(m.out));
  if (outLen === 0) throw new TaskFailure('internal', `output buffer of ${m.out.byteLength} bytes too small for a member of ${m.len} bytes`);
  return { id: m.id, ab: m.ab, out: m.out, outLen, stored };
}

function gunzip(m: GunzipRequest): WorkerReply {
  const input = new Uint8Array(m.ab, 0, m.len);
  const out = new Uint8Array(m.out, 0, m.expect);
  const r = codec().gzipDecompress(input, out);
  if (r.result !== 'ok' || r.outBytes !== m.expect || r.inBytes !== m.len) throw diagnose(input, m.expect);
  const reply: WorkerReply = { id: m.id, ab: m.ab, out: m.out, zero: isAllZero(out) };
  if (m.hash) reply.sha256 = createHash('sha256').update(out).digest('hex');
  return reply;
}

function sha256(m: Sha256Request): WorkerReply {
  return {
    id: m.id,
    ab: m.ab,
    sha256: createHash('sha256')
      .update(new Uint8Array(m.ab, 0, m.len))
      .digest('hex'),
  };
}

/**
 * Says why a member was refused, in zlib's words (the words of every gzip
 * tool): libdeflate only says "bad data", and tells a truncated member from
 * a corrupt one no better. Runs on failures only.
 */
function diagnose(input: Uint8Array, expect: number): TaskFailure {
  let res: { buffer: Buffer; engine: { bytesWritten: number } };
  try {
    res = gunzipSync(input, { info: true, chunkSize: Math.max(64, expect + 1), maxOutputLength: expect + 1 }) as unknown as typeof res;
  } catch (e) {
    const code = (e as { code?: unknown }).code;
    const message = (e as Error).message;
    if (code === 'Z_BUF_ERROR') return new TaskFailure('truncated', message, code);
    if (code === 'ERR_BUFFER_TOO_LARGE') return new TaskFailure('length', `member holds more than ${expect} bytes`, code);
    return new TaskFailure('corrupt', message, typeof code === 'string' ? code : undefined);
  }
  if (res.buffer.byteLength !== expect) return new TaskFailure('length', `member holds ${res.buffer.byteLength} bytes, expected ${expect}`);
  if (res.engine.bytesWritten !== input.byteLength) {
    return new TaskFailure('corrupt', `${input.byteLength - res.engine.bytesWritten} bytes of unexpected data after the gzip member`);
  }
  // zlib reads what libdeflate refused: report it rather than guess
  return new TaskFailure('corrupt', 'libdeflate refused the member');
}

/** The buffers a message hands back (a sha256 request has no output buffer). */
function buffers(m: { ab?: ArrayBuffer; out?: ArrayBuffer }): ArrayBuffer[] {
  return [m.ab, m.out].filter((b): b is ArrayBuffer => b !== undefined);
}

function handle(m: WorkerRequest): void {
  const r = m.op === 'gzip' ? gzip(m) : m.op === 'gunzip' ? gunzip(m) : sha256(m);
  port!.postMessage(r, buffers(r as { ab?: ArrayBuffer; out?: ArrayBuffer }));
}

port.on('message', (m: WorkerRequest) => {
  try {
    handle(m);
  } catch (e) {
    const f = e instanceof TaskFailure ? e : new TaskFailure('internal', String((e as Error)?.message ?? e));
    const reply: FailureReply = { id: m.id, error: { kind: f.kind, message: f.message, code: f.code } };
    reply.ab = m.ab;
    if (m.op !== 'sha256') reply.out = m.out;
    port.postMessage(reply, buffers(reply));
  }
});
