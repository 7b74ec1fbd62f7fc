import { createHash, type Hash } from 'node:crypto';
import { Transform, type TransformCallback } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGunzip } from 'node:zlib';
import { AbortError, isAbortError, isKvmbakError, throwIfAborted } from '../errors.js';
import { chunkStarted, chunksFinished, counters } from './counters.js';
import { ArchiveError, destError, sourceError } from './errors.js';
import { AsyncQueue, RunTracker, Semaphore, settleQuietly } from './flow.js';
import {
  BackgroundSync,
  SYNC_EVERY,
  openSource,
  openUnpackDest,
  readFully,
  writeFully,
  type BlockDest,
  type PartialFile,
  type Source,
} from './io.js';
import { checkByteCount, checkSha256, checkThreads, chunkWindow } from './options.js';
import { WorkerPool, WorkerTaskError } from './pool.js';
import { ProgressMeter } from './progress.js';
import type { HashOptions, HashResult, ImageIndex, UnpackOptions, UnpackResult } from './types.js';
import { hashZeros, isAllZero, zeroBuffer } from './zero.js';

/** Where decompressed data goes: a new (sparse) file, a block device written in place, or nowhere (hashing). */
interface Sink {
  kind: 'file' | 'block';
  path: string;
  fh: BlockDest['fh'];
  /** Capacity of a block device. */
  size: number | undefined;
}

interface RunResult {
  bytes: number;
  sha256: string;
  /** Only when RunConfig.hashFile. */
  fileSha256?: string;
  storedBytes: number;
  zeroChunks: number;
  /** Raw bytes written to the sink. */
  bytesWritten: number;
}

interface RunConfig {
  threads: number;
  /** Also hash the compressed file (costs CPU: hashImage needs it, unpack only on request). */
  hashFile: boolean;
  signal: AbortSignal | undefined;
  meter: ProgressMeter;
  /** A block sink reads as zeros already: leave its all-zero chunks unwritten. */
  skipZeros?: boolean;
}

const STREAM_READ = 256 * 1024;
const WRITES_IN_FLIGHT = 2;
const STREAM_OUT_CHUNK = 256 * 1024;

/**
 * Decompresses a gzip image onto a block device (in place) or into a new
 * file (`<dest>.partial`, 0600, fsync, rename; all-zero chunks become holes).
 *
 * With `index` (the PackResult or the manifest's copy) members are
 * decompressed in parallel by worker threads and written at their offsets;
 * without it the image is streamed, so any gzip file restores (`dd | gzip`,
 * multi-member too). A block device smaller than the image is refused before
 * anything is written, when the size is known (index or expectBytes).
 * Truncated or corrupt images fail with the offset of the damage; with
 * `expectSha256` the raw data is verified. A failed or aborted unpack into a
 * file leaves nothing behind.
 */
export async function unpackImage(image: string, dest: string, options: UnpackOptions = {}): Promise<UnpackResult> {
  const threads = checkThreads(options.threads);
  const expectSha256 = options.expectSha256 === undefined ? undefined : checkSha256(options.expectSha256, 'expectSha256');
  let expectBytes = options.expectBytes === undefined ? undefined : checkByteCount(options.expectBytes, 'expectBytes');
  const { signal, onProgress, index } = options;
  if (index) {
    checkIndexShape(index, image);
    if (expectBytes !== undefined && expectBytes !== index.bytes) {
      throw new ArchiveError(
        `the index of ${image} describes ${index.bytes} raw bytes but ${expectBytes} were expected; check that the index belongs to this image`,
        'KVMBAK_ARCHIVE_INDEX',
        { path: image },
      );
    }
    expectBytes = index.bytes;
  }
  throwIfAborted(signal);
  counters.operations++;
  try {
    const img = await openSource(image, 'image');
    try {
      const parallel = index !== undefined && img.seekable;
      if (parallel) checkIndexAgainstFile(image, index, img);
      else await checkNotEmpty(img);
      const out: BlockDest | PartialFile = await openUnpackDest(dest, options.overwrite ?? false);
      try {
        if (out.kind === 'block' && expectBytes !== undefined && out.size < expectBytes) {
          throw tooSmall(dest, out.size, expectBytes, true);
        }
        const sink: Sink = {
          kind: out.kind,
          path: out.kind === 'file' ? out.partial : out.dest,
          fh: out.fh,
          size: out.kind === 'block' ? out.size : undefined,
        };
        const meter = new ProgressMeter('unpack', expectBytes, onProgress);
        const cfg = { threads, signal, meter, hashFile: options.hashFile ?? false, skipZeros: options.skipZeros === true };
        const r = parallel ? await runIndexed(img, index!, sink, cfg) : await runStream(img, sink, cfg);
        if (out.kind === 'file') {
          // the last chunks may have been holes: give the file its full length
          await out.fh.truncate(r.bytes).catch((e: unknown) => {
            throw destError(out.partial, e);
          });
        }
        checkOutcome(image, r, expectBytes, expectSha256, out.kind === 'block' ? dest : undefined);
        throwIfAborted(signal);
        meter.flush('sync');
        await out.commit();
        return {
          ...r,
          verified: expectSha256 !== undefined,
          mode: parallel ? 'parallel' : 'stream',
          destKind: out.kind,
          seconds: meter.seconds,
        };
      } catch (e) {
        await out.discard();
        throw e;
      }
    } finally {
      await img.fh.close().catch(() => undefined);
    }
  } finally {
    counters.operations--;
  }
}

/**
 * Decompresses an image without writing it anywhere: its raw size and
 * sha256, and the sha256 of the compressed file (for verify). Parallel with
 * an index, streamed without.
 */
export async function hashImage(image: string, options: HashOptions = {}): Promise<HashResult> {
  const threads = checkThreads(options.threads);
  const { signal, onProgress, index } = options;
  if (index) checkIndexShape(index, image);
  throwIfAborted(signal);
  counters.operations++;
  try {
    const img = await openSource(image, 'image');
    try {
      const parallel = index !== undefined && img.seekable;
      if (parallel) checkIndexAgainstFile(image, index, img);
      else await checkNotEmpty(img);
      const meter = new ProgressMeter('hash', index?.bytes, onProgress);
      const cfg = { threads, signal, meter, hashFile: true };
      const r = parallel ? await runIndexed(img, index!, null, cfg) : await runStream(img, null, cfg);
      throwIfAborted(signal);
      return { bytes: r.bytes, sha256: r.sha256, fileSha256: r.fileSha256!, storedBytes: r.storedBytes, seconds: meter.seconds };
    } finally {
      await img.fh.close().catch(() => undefined);
    }
  } finally {
    counters.operations--;
  }
}

function tooSmall(dest: string, size: number, need: number, known: boolean): ArchiveError {
  return new ArchiveError(
    known
      ? `destination ${dest} holds ${size} bytes but the image needs ${need}; use a destination of at least ${need} bytes (e.g. lvextend it)`
      : `destination ${dest} holds ${size} bytes but the image holds more; it was written up to its end — use a destination at least as big as the image`,
    'KVMBAK_DEST_TOO_SMALL',
    { path: dest, rawOffset: size },
  );
}

function checkOutcome(
  image: string,
  r: RunResult,
  expectBytes: number | undefined,
  expectSha256: string | undefined,
  blockDest: string | undefined,
): void {
  const note = blockDest ? `; ${blockDest} now holds unverified data` : '';
  if (expectBytes !== undefined && r.bytes !== expectBytes) {
    throw new ArchiveError(
      `image ${image} holds ${r.bytes} raw bytes, expected ${expectBytes}: it does not belong to this backup or is damaged${note}`,
      'KVMBAK_ARCHIVE_SIZE',
      { path: image },
    );
  }
  if (expectSha256 !== undefined && r.sha256 !== expectSha256) {
    throw new ArchiveError(
      `raw sha256 of image ${image} is ${r.sha256}, expected ${expectSha256}: the image is damaged or not the one expected${note}`,
      'KVMBAK_ARCHIVE_CHECKSUM',
      { path: image },
    );
  }
}

function indexError(image: string, what: string): ArchiveError {
  return new ArchiveError(
    `the member index does not fit image ${image}: ${what}; check that the index (manifest) belongs to this image`,
    'KVMBAK_ARCHIVE_INDEX',
    { path: image },
  );
}

function memberCount(index: ImageIndex): number {
  return index.bytes === 0 ? 1 : Math.ceil(index.bytes / index.chunkSize);
}

function checkIndexShape(index: ImageIndex, image: string): void {
  const bad = (what: string) => indexError(image, what);
  if (!Number.isSafeInteger(index.chunkSize) || index.chunkSize <= 0) throw bad(`chunkSize ${index.chunkSize} is not a positive whole number`);
  if (!Number.isSafeInteger(index.bytes) || index.bytes < 0) throw bad(`bytes ${index.bytes} is not a byte count`);
  if (!Array.isArray(index.members)) throw bad('members is not a list');
  const want = memberCount(index);
  if (index.members.length !== want)
    throw bad(`${index.members.length} members listed, ${want} expected for ${index.bytes} bytes in chunks of ${index.chunkSize}`);
  let prev = -1;
  for (const [i, off] of index.members.entries()) {
    if (!Number.isSafeInteger(off) || off <= prev || (i === 0 && off !== 0)) throw bad(`member offset #${i} (${off}) is out of order`);
    prev = off;
  }
  if (index.storedBytes !== undefined && (!Number.isSafeInteger(index.storedBytes) || index.storedBytes <= prev)) {
    throw bad(`storedBytes ${index.storedBytes} does not lie after the last member`);
  }
}

function checkIndexAgainstFile(image: string, index: ImageIndex, img: Source): void {
  const last = index.members[index.members.length - 1]!;
  const size = img.kind === 'file' ? img.size! : index.storedBytes;
  if (size === undefined) throw indexError(image, 'storedBytes is needed when the image is not a regular file');
  if (index.storedBytes !== undefined && img.kind === 'file') {
    if (size < index.storedBytes) {
      throw new ArchiveError(
        `image ${image} is truncated: it has ${size} bytes but should have ${index.storedBytes}; the copy is incomplete — use a complete copy`,
        'KVMBAK_ARCHIVE_TRUNCATED',
        { path: image, offset: size },
      );
    }
    if (size > index.storedBytes) {
      throw new ArchiveError(
        `image ${image} has ${size - index.storedBytes} bytes of unexpected data after offset ${index.storedBytes}; the file was changed — use an intact copy`,
        'KVMBAK_ARCHIVE_CORRUPT',
        { path: image, offset: index.storedBytes },
      );
    }
  }
  if (last >= size) {
    throw new ArchiveError(
      `image ${image} is truncated: it has ${size} bytes but its last gzip member starts at offset ${last}; use a complete copy`,
      'KVMBAK_ARCHIVE_TRUNCATED',
      { path: image, offset: size },
    );
  }
}

async function checkNotEmpty(img: Source): Promise<void> {
  if (img.kind === 'file' && img.size === 0) {
    throw new ArchiveError(`image ${img.path} is empty (0 bytes), not a gzip file; use a complete copy`, 'KVMBAK_ARCHIVE_TRUNCATED', {
      path: img.path,
      offset: 0,
    });
  }
}

interface ReadMember {
  index: number;
  ab: ArrayBuffer;
  len: number;
}

/** A decoded chunk; `out` (the buffer holding data, or the zeros) is recycled once written. */
type Decoded =
  { index: number; raw: number; zero: true; out?: ArrayBuffer } | { index: number; raw: number; zero: false; data: Uint8Array; out: ArrayBuffer };

/** Parallel decompression driven by the member index. */
async function runIndexed(img: Source, index: ImageIndex, sink: Sink | null, cfg: RunConfig): Promise<RunResult> {
  const { threads, signal, meter } = cfg;
  const { chunkSize, bytes: totalRaw, members } = index;
  const n = members.length;
  const end = img.kind === 'file' ? img.size! : index.storedBytes!;
  const pool = new WorkerPool(threads);
  pool.warm(n);
  const slots = new Semaphore(chunkWindow(threads));
  const readQ = new AsyncQueue<Promise<ReadMember>>();
  const outQ = new AsyncQueue<Promise<Decoded>>();
  const rawHash = createHash('sha256');
  const fileHash = cfg.hashFile ? createHash('sha256') : undefined;
  // compressed members already seen to decode to zeros: identical bytes decode identically
  const zeroMembers: Uint8Array[] = [];
  // compressed members are read into recycled buffers big enough for any member of a chunk
  const inCap = chunkSize + (chunkSize >>> 10) + 1024;
  const inputs: ArrayBuffer[] = [];
  // members are decompressed into recycled chunk-sized buffers
  const outputs: ArrayBuffer[] = [];
  let bytes = 0;
  let zeroChunks = 0;
  let bytesWritten = 0;
  let inFlight = 0;
  const run = new RunTracker(signal, (e) => {
    slots.abort(e);
    readQ.abort(e);
    outQ.abort(e);
    pool.fail(e);
  });
  const memberEnd = (i: number): number => (i + 1 < n ? members[i + 1]! : end);
  const rawLen = (i: number): number => (i + 1 < n ? chunkSize : totalRaw - (n - 1) * chunkSize);
  const where = (i: number): string => `gzip member #${i} at compressed offset ${members[i]} (raw offset ${i * chunkSize})`;

  const reader = async (): Promise<void> => {
    for (let i = 0; i < n; i++) {
      await slots.acquire();
      if (run.failed) return;
      inFlight++;
      chunkStarted();
      const len = memberEnd(i) - members[i]!;
      const ab = len <= inCap ? (inputs.pop() ?? new ArrayBuffer(inCap)) : new ArrayBuffer(len);
      const p = run.track(
        readFully(img.fh, new Uint8Array(ab), len, members[i]!).then(
          (got) => {
            if (got < len) {
              throw new ArchiveError(
                `image ${img.path} is truncated: ${where(i)} ends at ${members[i]! + got}; use a complete copy`,
                'KVMBAK_ARCHIVE_TRUNCATED',
                {
                  path: img.path,
                  offset: members[i]! + got,
                },
              );
            }
            return { index: i, ab, len };
          },
          (e: unknown) => {
            throw sourceError(img.path, e, 'image');
          },
        ),
      );
      readQ.push(p);
    }
    readQ.close();
  };

  const decodeError = (i: number, e: unknown): unknown => {
    if (!(e instanceof WorkerTaskError)) return e;
    if (e.kind === 'truncated') {
      return i === n - 1
        ? new ArchiveError(`image ${img.path} is truncated: ${where(i)} ends early; use a complete copy`, 'KVMBAK_ARCHIVE_TRUNCATED', {
            path: img.path,
            offset: members[i],
            rawOffset: i * chunkSize,
          })
        : new ArchiveError(
            `image ${img.path} is corrupt: ${where(i)} is incomplete; the image is damaged — use another copy`,
            'KVMBAK_ARCHIVE_CORRUPT',
            {
              path: img.path,
              offset: members[i],
              rawOffset: i * chunkSize,
            },
          );
    }
    if (e.kind === 'length') {
      return new ArchiveError(
        `image ${img.path} does not match its index: ${where(i)}: ${e.message}; check that the index (manifest) belongs to this image`,
        'KVMBAK_ARCHIVE_INDEX',
        {
          path: img.path,
          offset: members[i],
          rawOffset: i * chunkSize,
        },
      );
    }
    if (e.kind === 'internal') {
      return new ArchiveError(`decompressing ${img.path} failed: ${e.message}`, 'KVMBAK_ARCHIVE_WORKER', { path: img.path });
    }
    return new ArchiveError(
      `image ${img.path} is corrupt: ${where(i)} does not decompress (${e.message}); the image is damaged — use another copy`,
      'KVMBAK_ARCHIVE_CORRUPT',
      {
        path: img.path,
        offset: members[i],
        rawOffset: i * chunkSize,
      },
    );
  };

  // In order: hash the compressed file, recognise known zero members, dispatch the rest.
  const dispatcher = async (): Promise<void> => {
    for (;;) {
      const p = await readQ.shift();
      if (p === undefined) break;
      const m = await p;
      if (run.failed) return;
      const view = new Uint8Array(m.ab, 0, m.len);
      fileHash?.update(view);
      const raw = rawLen(m.index);
      if (raw === chunkSize && zeroMembers.some((z) => z.byteLength === m.len && Buffer.compare(z, view) === 0)) {
        if (m.ab.byteLength === inCap) inputs.push(m.ab);
        outQ.push(Promise.resolve({ index: m.index, raw, zero: true }));
        continue;
      }
      const out = outputs.pop() ?? new ArrayBuffer(chunkSize);
      const d = pool.gunzip(m.ab, m.len, out, raw).then(
        (r): Decoded => {
          const known = r.zero && raw === chunkSize && m.len <= 1 << 20 && zeroMembers.length < 4;
          if (known) zeroMembers.push(new Uint8Array(r.ab, 0, m.len).slice());
          if (r.ab.byteLength === inCap) inputs.push(r.ab);
          if (r.zero) return { index: m.index, raw, zero: true, out: r.out };
          return { index: m.index, raw, zero: false, data: new Uint8Array(r.out, 0, raw), out: r.out };
        },
        (e: unknown) => {
          throw decodeError(m.index, e);
        },
      );
      outQ.push(settleQuietly(d));
    }
    outQ.close();
  };

  // In order: hash the raw data and write it at its offset. Up to WRITES_IN_FLIGHT
  // writes run while the next chunks are hashed; a chunk's slot is freed once written.
  const writer = async (): Promise<void> => {
    const writes = new Set<Promise<void>>();
    const syncer = sink
      ? new BackgroundSync(
          sink.fh,
          SYNC_EVERY,
          (p) => run.track(p),
          (e) => run.fail(destError(sink.path, e)),
        )
      : undefined;
    const done = (d: Decoded): void => {
      bytes += d.raw;
      inFlight--;
      chunksFinished();
      if (d.out) outputs.push(d.out);
      slots.release();
      meter.add(d.raw, memberEnd(d.index) - members[d.index]!);
    };
    for (;;) {
      const p = await outQ.shift();
      if (p === undefined) break;
      const d = await p;
      if (run.failed) return;
      const pos = d.index * chunkSize;
      let data: Uint8Array | undefined;
      if (d.zero) {
        hashZeros(rawHash, d.raw);
        if (d.raw > 0) zeroChunks++;
        // a new file is already zero there (a hole); a device must get the zeros, unless it reads as zeros (skipZeros)
        if (sink?.kind === 'block' && d.raw > 0 && cfg.skipZeros !== true) data = d.out ? new Uint8Array(d.out, 0, d.raw) : zeroBuffer(d.raw);
      } else {
        rawHash.update(d.data);
        if (sink) data = d.data;
      }
      if (!sink || !data) {
        done(d);
        continue;
      }
      const w = run.track(writeFully(sink.fh, data, pos).catch((e: unknown) => Promise.reject(destError(sink.path, e)))).then(
        () => {
          writes.delete(w);
          bytesWritten += data.byteLength;
          syncer?.wrote(data.byteLength);
          if (!run.failed) done(d);
        },
        (e: unknown) => {
          writes.delete(w);
          run.fail(e);
        },
      );
      writes.add(w);
      if (writes.size >= WRITES_IN_FLIGHT) await Promise.race(writes);
    }
    await Promise.all(writes);
  };

  try {
    await run.finish([reader(), dispatcher(), writer()]);
    meter.flush();
    const r: RunResult = { bytes, sha256: rawHash.digest('hex'), storedBytes: end, zeroChunks, bytesWritten };
    if (fileHash) r.fileSha256 = fileHash.digest('hex');
    return r;
  } finally {
    run.dispose();
    chunksFinished(inFlight);
    await pool.destroy();
  }
}

/** Counts (and hashes, when asked) the compressed bytes flowing into gunzip. */
class Tap extends Transform {
  bytes = 0;
  constructor(private readonly hash: Hash | undefined) {
    super();
  }
  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.hash?.update(chunk);
    this.bytes += chunk.byteLength;
    cb(null, chunk);
  }
}

/**
 * Streams any gzip file (single or multi-member) through node's zlib. Used
 * without an index, so it cannot know member boundaries to parallelise; its
 * zlib work items are bounded by STREAM_OUT_CHUNK, short enough not to stall
 * libuv's shared pool.
 */
async function runStream(img: Source, sink: Sink | null, cfg: RunConfig): Promise<RunResult> {
  const { signal, meter } = cfg;
  const fileHash = cfg.hashFile ? createHash('sha256') : undefined;
  const rawHash = createHash('sha256');
  const tap = new Tap(fileHash);
  const gunzip = createGunzip({ chunkSize: STREAM_OUT_CHUNK });
  let pos = 0;
  let bytesWritten = 0;
  let lastStored = 0;
  let ownError: unknown;

  async function* readImage(): AsyncGenerator<Buffer> {
    let at = 0;
    for (;;) {
      const buf = Buffer.allocUnsafe(STREAM_READ);
      let got: number;
      try {
        got = await readFully(img.fh, buf, STREAM_READ, img.seekable ? at : null);
      } catch (e) {
        throw (ownError ??= sourceError(img.path, e, 'image'));
      }
      if (got === 0) return;
      at += got;
      yield got === STREAM_READ ? buf : buf.subarray(0, got);
      if (got < STREAM_READ) return;
    }
  }

  async function writeOut(source: AsyncIterable<Buffer>): Promise<void> {
    try {
      await writeAll(source);
    } catch (e) {
      // pipeline() may report the abort of the other stages instead: keep ours
      throw (ownError ??= e);
    }
  }

  async function writeAll(source: AsyncIterable<Buffer>): Promise<void> {
    for await (const chunk of source) {
      rawHash.update(chunk);
      if (sink) {
        if (sink.kind === 'block' && pos + chunk.byteLength > sink.size!) throw tooSmall(sink.path, sink.size!, pos + chunk.byteLength, false);
        // a new file starts as a hole: zeros need not be written; nor to a device that reads as zeros (skipZeros)
        if ((sink.kind === 'block' && cfg.skipZeros !== true) || !isAllZero(chunk)) {
          await writeFully(sink.fh, chunk, pos).catch((e: unknown) => Promise.reject(destError(sink.path, e)));
          bytesWritten += chunk.byteLength;
        }
      }
      pos += chunk.byteLength;
      const stored = gunzip.bytesWritten;
      meter.add(chunk.byteLength, stored - lastStored);
      lastStored = stored;
    }
  }

  try {
    await pipeline(readImage, tap, gunzip, writeOut, signal ? { signal } : {});
  } catch (e) {
    if (signal?.aborted) throw new AbortError('The operation was aborted', { cause: signal.reason });
    if (ownError !== undefined) throw ownError;
    if (isKvmbakError(e)) throw e;
    if (isAbortError(e)) throw new AbortError('The operation was aborted', { cause: e });
    const code = (e as { code?: string }).code;
    if (code === 'Z_BUF_ERROR') {
      throw new ArchiveError(
        `image ${img.path} is truncated: it ends inside a gzip member (at compressed offset ${tap.bytes}, after ${pos} raw bytes); use a complete copy`,
        'KVMBAK_ARCHIVE_TRUNCATED',
        { path: img.path, offset: tap.bytes, rawOffset: pos },
        { cause: e },
      );
    }
    if (typeof code === 'string' && code.startsWith('Z_')) {
      // zlib reports per write: the damage lies in the piece after what it accepted
      const at = gunzip.bytesWritten;
      throw new ArchiveError(
        `image ${img.path} is corrupt at compressed offset ${at} or within the ${Math.min(STREAM_READ, tap.bytes - at)} bytes after it: ${(e as Error).message}; the image is damaged or not gzip — use another copy`,
        'KVMBAK_ARCHIVE_CORRUPT',
        { path: img.path, offset: at },
        { cause: e },
      );
    }
    throw e;
  }
  if (gunzip.bytesWritten < tap.bytes) {
    throw new ArchiveError(
      `image ${img.path} has ${tap.bytes - gunzip.bytesWritten} bytes of trailing data after the last gzip member at offset ${gunzip.bytesWritten}; the file was damaged or appended to — use an intact copy`,
      'KVMBAK_ARCHIVE_CORRUPT',
      { path: img.path, offset: gunzip.bytesWritten },
    );
  }
  meter.flush();
  const r: RunResult = { bytes: pos, sha256: rawHash.digest('hex'), storedBytes: tap.bytes, zeroChunks: 0, bytesWritten };
  if (fileHash) r.fileSha256 = fileHash.digest('hex');
  return r;
}
