/**
 * The per-chunk primitives: one gzip member per chunk, sha256 ids, the all-zero chunk.
 *
 * compressMember/decompressMember are the seam the addon's whole-buffer codec (libdeflate) will
 * replace: members are independent, so a whole-buffer API is all a chunk needs. For now they use
 * node:zlib's asynchronous calls, which run on libuv's thread pool, like the hashing below
 * (WebCrypto's digest is an asynchronous job on the same pool): the JS thread never compresses or
 * hashes a chunk itself.
 */
import { createHash, webcrypto } from 'node:crypto';
import { constants, gunzip, gzip } from 'node:zlib';
import { promisify } from 'node:util';

const gzipAsync = promisify(gzip);
const gunzipAsync = promisify(gunzip);

/** Fixed chunking: 4 MiB of the raw disk per chunk (the last one shorter). */
export const CHUNK_SIZE = 4 * 1024 * 1024;
/** Bounds a chunk list may declare (a power of two between them). */
export const MIN_CHUNK_SIZE = 64 * 1024;
export const MAX_CHUNK_SIZE = 64 * 1024 * 1024;

const HEX64 = /^[0-9a-f]{64}$/;

/** True for a well-formed chunk id: 64 lowercase hex digits (a sha256). */
export function isChunkId(id: string): boolean {
  return HEX64.test(id);
}

/** One gzip member of `raw` at `level` (1-9), compressed off the JS thread. */
export function compressMember(raw: Uint8Array, level: number): Promise<Buffer> {
  return gzipAsync(raw, { level });
}

/**
 * The bytes of a gzip member, decompressed off the JS thread. `maxBytes` bounds the output so a
 * damaged or hostile file cannot make it allocate more than a chunk.
 */
export function decompressMember(gz: Uint8Array, maxBytes = MAX_CHUNK_SIZE): Promise<Buffer> {
  return gunzipAsync(gz, { maxOutputLength: Math.max(1, maxBytes) });
}

/** sha256 of `data` as hex, computed on libuv's thread pool. */
export async function sha256Hex(data: Uint8Array): Promise<string> {
  return Buffer.from(await webcrypto.subtle.digest('SHA-256', data)).toString('hex');
}

const PIECE = 64 * 1024;
const ZERO_PIECE = Buffer.alloc(PIECE);

/** True when every byte is zero (memcmp against a zero block, stopping at the first difference). */
export function isAllZero(u8: Uint8Array): boolean {
  const b = Buffer.from(u8.buffer, u8.byteOffset, u8.byteLength);
  for (let off = 0; off < b.byteLength; off += PIECE) {
    const end = Math.min(b.byteLength, off + PIECE);
    if (b.compare(ZERO_PIECE, 0, end - off, off, end) !== 0) return false;
  }
  return true;
}

/** Feeds `len` zero bytes to a hash without a buffer of that size. */
export function hashZeros(hash: { update(data: Uint8Array): unknown }, len: number): void {
  for (let left = len; left > 0; left -= PIECE) hash.update(left >= PIECE ? ZERO_PIECE : ZERO_PIECE.subarray(0, left));
}

export interface ZeroChunk {
  /** sha256 of `len` zero bytes: the id of the all-zero chunk of that length. */
  readonly id: string;
  /** Its gzip member, made once (level 9, run-length strategy: ~4 KiB for 4 MiB). */
  readonly member: Buffer;
}

const zeroChunks = new Map<number, Promise<ZeroChunk>>();

/**
 * The all-zero chunk of `len` bytes, computed once per length and kept: an all-zero chunk is then
 * recognised by a memcmp, neither hashed nor compressed again. At most a few lengths occur (the
 * chunk size and a disk's shorter last chunk), so the cache is small; it is capped anyway.
 */
export function zeroChunk(len: number): Promise<ZeroChunk> {
  let hit = zeroChunks.get(len);
  if (!hit) {
    const h = createHash('sha256');
    hashZeros(h, len);
    const id = h.digest('hex');
    hit = gzipAsync(Buffer.alloc(len), { level: 9, strategy: constants.Z_RLE }).then((member) => ({ id, member }));
    if (zeroChunks.size >= 8) zeroChunks.delete(zeroChunks.keys().next().value as number);
    zeroChunks.set(len, hit);
    hit.catch(() => zeroChunks.delete(len));
  }
  return hit;
}
