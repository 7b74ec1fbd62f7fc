/**
 * The messages between the archive engine and its worker threads
 * (src/archive/worker.ts). Buffers travel as transferred ArrayBuffers (no
 * copy) and come back in the reply, so the engine recycles them: memory stays
 * bounded by the chunks in flight.
 */

/** Compress `len` bytes of `ab` into one gzip member written to `out` (see pool.ts). */
export interface GzipRequest {
  op: 'gzip';
  id: number;
  ab: ArrayBuffer;
  len: number;
  /** Output buffer, at least gzipCompressBound(len) bytes. */
  out: ArrayBuffer;
  /** libdeflate level (0..12). */
  level: number;
  /** Sample the chunk first and store it (level 0) when it does not compress. */
  sample: boolean;
}

/** Decompress the one gzip member in the first `len` bytes of `ab` into `out`, which it must fill exactly. */
export interface GunzipRequest {
  op: 'gunzip';
  id: number;
  ab: ArrayBuffer;
  len: number;
  /** Output buffer: the member must hold exactly `expect` bytes. */
  out: ArrayBuffer;
  expect: number;
  /** Also hash the decompressed bytes (GunzipReply.sha256). */
  hash?: boolean;
}

/** sha256 of the first `len` bytes of `ab` (the chunk store's ids, hashed off the JS thread). */
export interface Sha256Request {
  op: 'sha256';
  id: number;
  ab: ArrayBuffer;
  len: number;
}

export type WorkerRequest = GzipRequest | GunzipRequest | Sha256Request;

export interface GzipReply {
  id: number;
  /** The input, handed back. */
  ab: ArrayBuffer;
  /** The output buffer, holding the member in its first outLen bytes. */
  out: ArrayBuffer;
  outLen: number;
  /** The chunk was incompressible and went in as stored deflate blocks. */
  stored: boolean;
}

export interface GunzipReply {
  id: number;
  ab: ArrayBuffer;
  out: ArrayBuffer;
  /** The member decoded to `expect` zero bytes (out holds them, and need not be written to a new file). */
  zero: boolean;
  /** sha256 (hex) of the decompressed bytes, when asked (GunzipRequest.hash). */
  sha256?: string;
}

export interface Sha256Reply {
  id: number;
  ab: ArrayBuffer;
  /** Lowercase hex. */
  sha256: string;
}

/**
 * Why a task failed. 'truncated': the member ends early; 'corrupt': it does
 * not decompress or is followed by other data; 'length': it decompresses to
 * another size than expected; 'internal': anything else.
 */
export type TaskFailureKind = 'truncated' | 'corrupt' | 'length' | 'internal';

export interface FailureReply {
  id: number;
  error: { kind: TaskFailureKind; message: string; code?: string | undefined };
  /** Buffers handed back even on failure. */
  ab?: ArrayBuffer;
  out?: ArrayBuffer;
}

export type WorkerReply = GzipReply | GunzipReply | Sha256Reply | FailureReply;
