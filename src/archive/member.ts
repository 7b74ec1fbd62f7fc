/**
 * MemberCodec: independent gzip members compressed and decompressed whole by the archive's worker
 * threads (the addon's libdeflate codec), one call per member, for callers that are not an image
 * pipeline: the chunk store. The members are the ones `kvmbak image pack` writes: the same level
 * mapping (codecLevel), and the same stored path for a chunk whose samples do not compress.
 *
 * The codec runs on its own threads, never on the JS thread nor on libuv's pool (which fs, crypto
 * and the libvirt calls need). Workers start on first use, and an idle worker does not keep the
 * process alive, so an owner that is never destroyed costs nothing at exit; destroy() ends them
 * (a later call starts new ones).
 *
 * Data is copied into buffers of the codec's own (recycled, so memory stays bounded by the calls
 * in flight) and transferred to a worker: the caller keeps its buffer.
 */
import { loadNative } from '../native.js';
import { ArchiveError, type ArchiveErrorCode } from './errors.js';
import { checkByteCount, checkLevel, checkThreads, codecLevel } from './options.js';
import { WorkerPool, WorkerTaskError } from './pool.js';
import type { TaskFailureKind } from './messages.js';

export interface MemberCodecOptions {
  /** Worker threads (default: the number of cores, as pack). */
  threads?: number;
}

export interface CompressMemberOptions {
  /**
   * Sample the data first and store it (deflate level 0: a valid member at memcpy speed) when it
   * does not compress, as pack does (default true).
   */
  sample?: boolean;
}

const KIND_CODES: Record<TaskFailureKind, ArchiveErrorCode> = {
  truncated: 'KVMBAK_ARCHIVE_TRUNCATED',
  corrupt: 'KVMBAK_ARCHIVE_CORRUPT',
  length: 'KVMBAK_ARCHIVE_SIZE',
  internal: 'KVMBAK_ARCHIVE_WORKER',
};

const KIND_WORDS: Record<TaskFailureKind, string> = {
  truncated: 'ends early',
  corrupt: 'does not decompress',
  length: 'does not hold the expected bytes',
  internal: 'could not be decompressed',
};

/** Smallest buffer class: members of a few bytes share 64 KiB buffers. */
const MIN_CLASS = 64 * 1024;

/** Buffer capacity class of `len` bytes: the next power of two, so recycled buffers fit any size of the class. */
function sizeClass(len: number): number {
  let c = MIN_CLASS;
  while (c < len) c *= 2;
  return c;
}

export class MemberCodec {
  readonly threads: number;
  private pool: WorkerPool | undefined;
  /** Recycled input buffers by size class, and compression outputs (gzipCompressBound of the class). */
  private readonly inputs = new Map<number, ArrayBuffer[]>();
  private readonly outputs = new Map<number, ArrayBuffer[]>();

  constructor(options: MemberCodecOptions = {}) {
    this.threads = checkThreads(options.threads);
  }

  /**
   * One gzip member of `raw` at kvmbak `level` (1-9, mapped to libdeflate as pack maps it);
   * `zcat` of it prints `raw`.
   */
  async compress(raw: Uint8Array, level: number, options: CompressMemberOptions = {}): Promise<Buffer> {
    return this.compressTo(raw, level, async (member) => Buffer.from(member), options);
  }

  /**
   * compress(), handing the member to `use` in a buffer of the codec's, which it gets back once
   * `use` settles (so `use` must not keep it): no copy and no allocation per member, for a caller
   * that writes the member out at once. Returns what `use` returns.
   */
  async compressTo<T>(raw: Uint8Array, level: number, use: (member: Uint8Array) => Promise<T>, options: CompressMemberOptions = {}): Promise<T> {
    const deflateLevel = codecLevel(checkLevel(level));
    const len = raw.byteLength;
    const cls = sizeClass(len);
    const ab = this.take(this.inputs, cls, () => new ArrayBuffer(cls));
    new Uint8Array(ab, 0, len).set(raw);
    const out = this.take(this.outputs, cls, () => new ArrayBuffer(loadNative().gzipCompressBound(cls)));
    const pool = this.start();
    let r;
    try {
      r = await pool.gzip(ab, len, out, deflateLevel, options.sample ?? true);
    } catch (e) {
      throw this.failed(pool, e, (t) => new ArchiveError(`compressing a gzip member of ${len} bytes failed: ${t.message}`, 'KVMBAK_ARCHIVE_WORKER'));
    }
    this.give(this.inputs, cls, r.ab);
    try {
      return await use(new Uint8Array(r.out, 0, r.outLen));
    } finally {
      this.give(this.outputs, cls, r.out);
    }
  }

  /**
   * The bytes of the single gzip member `member`, which must hold exactly `expectBytes`. A member
   * that ends early is an ArchiveError KVMBAK_ARCHIVE_TRUNCATED; one that does not decompress (bad
   * header, data or CRC, or data after the member) KVMBAK_ARCHIVE_CORRUPT; one that holds another
   * number of bytes KVMBAK_ARCHIVE_SIZE. The messages are zlib's words, as for an image.
   */
  async decompress(member: Uint8Array, expectBytes: number): Promise<Buffer> {
    return (await this.inflate(member, expectBytes, false)).data;
  }

  /** decompress(), and the sha256 (lowercase hex) of the bytes, computed by the same worker. */
  decompressHashed(member: Uint8Array, expectBytes: number): Promise<{ data: Buffer; sha256: string }> {
    return this.inflate(member, expectBytes, true) as Promise<{ data: Buffer; sha256: string }>;
  }

  /** sha256 (lowercase hex) of `data`, computed by a worker thread. */
  async sha256(data: Uint8Array): Promise<string> {
    const len = data.byteLength;
    const cls = sizeClass(len);
    const ab = this.take(this.inputs, cls, () => new ArrayBuffer(cls));
    new Uint8Array(ab, 0, len).set(data);
    const pool = this.start();
    let r;
    try {
      r = await pool.sha256(ab, len);
    } catch (e) {
      throw this.failed(pool, e, (t) => new ArchiveError(`hashing ${len} bytes failed: ${t.message}`, 'KVMBAK_ARCHIVE_WORKER'));
    }
    this.give(this.inputs, cls, r.ab);
    return r.sha256;
  }

  private async inflate(member: Uint8Array, expectBytes: number, hash: boolean): Promise<{ data: Buffer; sha256: string | undefined }> {
    checkByteCount(expectBytes, 'expectBytes');
    const len = member.byteLength;
    if (len === 0) throw new ArchiveError('the gzip member is empty (0 bytes)', 'KVMBAK_ARCHIVE_TRUNCATED', { offset: 0 });
    const cls = sizeClass(len);
    const ab = this.take(this.inputs, cls, () => new ArrayBuffer(cls));
    new Uint8Array(ab, 0, len).set(member);
    const pool = this.start();
    let r;
    try {
      r = await pool.gunzip(ab, len, new ArrayBuffer(expectBytes), expectBytes, hash);
    } catch (e) {
      throw this.failed(
        pool,
        e,
        (t) =>
          new ArchiveError(
            `the gzip member (${len} bytes) ${KIND_WORDS[t.kind]}: ${t.message}`,
            KIND_CODES[t.kind],
            t.kind === 'internal' ? {} : { offset: 0 },
          ),
      );
    }
    this.give(this.inputs, cls, r.ab);
    return { data: Buffer.from(r.out, 0, expectBytes), sha256: r.sha256 };
  }

  /** Ends the worker threads (tasks in flight are rejected); a later call starts new ones. */
  async destroy(): Promise<void> {
    const pool = this.pool;
    this.pool = undefined;
    this.inputs.clear();
    this.outputs.clear();
    await pool?.destroy();
  }

  private start(): WorkerPool {
    return (this.pool ??= new WorkerPool(this.threads, { unrefIdle: true }));
  }

  /** The error for a failed task; a dead worker (not bad data) drops the pool, so the next call starts afresh. */
  private failed(pool: WorkerPool, e: unknown, bad: (t: WorkerTaskError) => ArchiveError): unknown {
    if (e instanceof WorkerTaskError) return bad(e);
    if (this.pool === pool) {
      this.pool = undefined;
      void pool.destroy();
    }
    return e;
  }

  private take(free: Map<number, ArrayBuffer[]>, cls: number, make: () => ArrayBuffer): ArrayBuffer {
    return free.get(cls)?.pop() ?? make();
  }

  private give(free: Map<number, ArrayBuffer[]>, cls: number, ab: ArrayBuffer): void {
    if (this.pool === undefined) return;
    let list = free.get(cls);
    if (!list) free.set(cls, (list = []));
    // as many as can be in flight at once, plus one being filled
    if (list.length <= this.threads) list.push(ab);
  }
}
