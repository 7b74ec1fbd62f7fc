/**
 * The per-chunk primitives: one gzip member per chunk, sha256 ids, the all-zero chunk.
 *
 * Members are compressed and decompressed by the addon's libdeflate codec on the archive's worker
 * threads (a MemberCodec: the level mapping and the stored path of `kvmbak image pack`), never on
 * the JS thread nor on libuv's pool, and chunks are hashed there too (sha256Hex). The JS thread
 * never compresses or hashes a chunk itself.
 */
import { createHash } from 'node:crypto';
import { constants, gzip } from 'node:zlib';
import { promisify } from 'node:util';
import { ArchiveError, MemberCodec } from '../archive/index.js';

const gzipAsync = promisify(gzip);

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

let shared: MemberCodec | undefined;

/** The process-wide codec of compressMember/decompressMember without one (its idle threads do not keep the process alive). */
function sharedCodec(): MemberCodec {
  return (shared ??= new MemberCodec());
}

/** One gzip member of `raw` at kvmbak `level` (1-9), compressed off the JS thread (by `codec`, else a shared one). */
export function compressMember(raw: Uint8Array, level: number, codec: MemberCodec = sharedCodec()): Promise<Buffer> {
  return codec.compress(raw, level);
}

/** gzip's ISIZE: the member's raw length modulo 2^32, from its last 4 bytes (exact for a chunk). */
export function memberRawSize(gz: Uint8Array): number | undefined {
  if (gz.byteLength < 18) return undefined;
  return Buffer.from(gz.buffer, gz.byteOffset, gz.byteLength).readUInt32LE(gz.byteLength - 4);
}

/**
 * The raw length to expect of a chunk's member: its trailer's, at most `maxBytes` (a member that
 * holds more then fails as one that does not hold the expected bytes, and a damaged trailer as the
 * damage it is), so a damaged or hostile file never makes the codec allocate more than a chunk.
 */
export function expectedChunkBytes(gz: Uint8Array, maxBytes: number): number {
  const size = memberRawSize(gz);
  if (size === undefined) {
    throw new ArchiveError(`the gzip member is ${gz.byteLength} bytes, shorter than any gzip member (18)`, 'KVMBAK_ARCHIVE_TRUNCATED', { offset: 0 });
  }
  return Math.min(size, Math.max(0, maxBytes));
}

/**
 * The bytes of a gzip member, decompressed off the JS thread (by `codec`, else a shared one), at
 * most `maxBytes` (see expectedChunkBytes). A damaged member fails with an ArchiveError:
 * KVMBAK_ARCHIVE_TRUNCATED, _CORRUPT, or _SIZE for one holding more than `maxBytes`.
 */
export async function decompressMember(gz: Uint8Array, maxBytes = MAX_CHUNK_SIZE, codec: MemberCodec = sharedCodec()): Promise<Buffer> {
  return codec.decompress(gz, expectedChunkBytes(gz, maxBytes));
}

/**
 * sha256 of `data` as hex, computed by a codec worker thread (`codec`, else a shared one): WebCrypto's
 * digest, on libuv's pool, first copies its input on the JS thread, which cost that thread more than
 * hashing the chunk there (7 against 3 ms per 4 MiB).
 */
export function sha256Hex(data: Uint8Array, codec: MemberCodec = sharedCodec()): Promise<string> {
  return codec.sha256(data);
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
  /** Its gzip member, made once by node:zlib on libuv's pool (level 9, run-length strategy: ~4 KiB for 4 MiB). */
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
