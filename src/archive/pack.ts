import { createHash } from 'node:crypto';
import { throwIfAborted } from '../errors.js';
import { loadNative } from '../native.js';
import { chunkStarted, chunksFinished, counters } from './counters.js';
import { ArchiveError, destError, sourceError } from './errors.js';
import { AsyncQueue, RunTracker, Semaphore, settleQuietly } from './flow.js';
import { BackgroundSync, SYNC_EVERY, createPartial, openSource, readFully, writeFully, type PartialFile, type Source } from './io.js';
import { DEFAULT_CHUNK_SIZE, DEFAULT_LEVEL, checkChunkSize, checkLevel, checkThreads, chunkWindow, codecLevel } from './options.js';
import { WorkerPool, WorkerTaskError } from './pool.js';
import { ProgressMeter } from './progress.js';
import { ReadThrottle } from './throttle.js';
import type { PackOptions, PackResult } from './types.js';
import { hashZeros, isAllZero, zeroMember } from './zero.js';

interface ReadChunk {
  index: number;
  ab: ArrayBuffer;
  len: number;
}

interface Member {
  data: Uint8Array;
  raw: number;
  /** An all-zero chunk: its buffer went back at once, it holds a zeroAhead place instead of a slot. */
  zero?: boolean;
  stored?: boolean;
  /** The output buffer holding data, recycled once written. */
  out?: ArrayBuffer;
}

/**
 * Packs a block device or file into a multi-member gzip image.
 *
 * The source is read sequentially in chunkSize pieces (several reads in
 * flight); each chunk is hashed in order on this thread (sha256 of a 4 MiB
 * chunk takes about 2.5 ms: a thread of its own cost more CPU in start-up and
 * messages than it saved, on 2 cores), then compressed by
 * a worker thread as an independent gzip member (the addon's libdeflate codec,
 * at the libdeflate level that `level` maps to), unless it is all zeros: those
 * are written as a member computed once per size, and give their buffer back
 * at once, so reading and hashing run on through a zero region while the
 * workers compress what came before. A chunk whose samples do
 * not compress (already compressed or encrypted data) is stored (deflate
 * level 0) instead of being searched for matches in vain. Members are
 * written in order to `<dest>.partial` (0600), flushed to the disk as they
 * go (BackgroundSync), fsynced and renamed to `dest`.
 * `zcat dest` prints the source byte for byte. At most chunkWindow(threads)
 * chunks are in memory, whatever the source size. On error or abort the
 * partial file is removed and the workers are terminated.
 */
export async function packImage(source: string, dest: string, options: PackOptions = {}): Promise<PackResult> {
  const level = checkLevel(options.level ?? DEFAULT_LEVEL);
  const chunkSize = checkChunkSize(options.chunkSize ?? DEFAULT_CHUNK_SIZE);
  const threads = checkThreads(options.threads);
  const throttle = options.bwlimit !== undefined ? new ReadThrottle(options.bwlimit) : undefined;
  const { signal, onProgress } = options;
  throwIfAborted(signal);
  counters.operations++;
  try {
    const src = await openSource(source);
    try {
      const out = await createPartial(dest, options.overwrite ?? false);
      try {
        const meter = new ProgressMeter('pack', src.size, onProgress);
        const r = await runPack(src, out, { level, chunkSize, threads, signal, meter, throttle });
        throwIfAborted(signal);
        meter.flush('sync');
        await out.commit();
        return { ...r, level, chunkSize, seconds: meter.seconds };
      } catch (e) {
        await out.discard();
        throw e;
      }
    } finally {
      await src.fh.close().catch(() => undefined);
    }
  } finally {
    counters.operations--;
  }
}

/** All-zero chunks that may wait to be written (they hold no buffer, only their place in the file's order). */
const ZERO_AHEAD = 64;

interface PackConfig {
  level: number;
  chunkSize: number;
  threads: number;
  signal: AbortSignal | undefined;
  meter: ProgressMeter;
  throttle: ReadThrottle | undefined;
}

async function runPack(src: Source, out: PartialFile, cfg: PackConfig): Promise<Omit<PackResult, 'level' | 'chunkSize' | 'seconds'>> {
  const { level, chunkSize, threads, signal, meter } = cfg;
  const pool = new WorkerPool(threads);
  pool.warm(src.size === undefined ? threads : Math.ceil(src.size / chunkSize));
  const slots = new Semaphore(chunkWindow(threads));
  const readQ = new AsyncQueue<Promise<ReadChunk>>();
  const outQ = new AsyncQueue<Promise<Member>>();
  const freeBuffers: ArrayBuffer[] = [];
  // compressed members land in recycled buffers of the codec's worst-case size
  const outCap = loadNative().gzipCompressBound(chunkSize);
  const freeOut: ArrayBuffer[] = [];
  const deflateLevel = codecLevel(level);
  // all-zero chunks give their buffer back as soon as they are seen, so reading and hashing run on
  // through a zero region while the workers compress what came before; this bounds how far
  const zeroAhead = new Semaphore(ZERO_AHEAD);
  const rawHash = createHash('sha256');
  const fileHash = createHash('sha256');
  const members: number[] = [];
  let bytes = 0;
  let storedBytes = 0;
  let zeroChunks = 0;
  let storedChunks = 0;
  let eof = false;
  let inFlight = 0;
  const run = new RunTracker(signal, (e) => {
    slots.abort(e);
    readQ.abort(e);
    outQ.abort(e);
    zeroAhead.abort(e);
    pool.fail(e);
  });
  const syncer = new BackgroundSync(
    out.fh,
    SYNC_EVERY,
    (p) => run.track(p),
    (e) => run.fail(destError(out.partial, e)),
  );
  const started = (): void => {
    inFlight++;
    chunkStarted();
  };
  const finished = (): void => {
    inFlight--;
    chunksFinished();
    slots.release();
  };

  // Issues reads ahead, one slot per chunk; positional reads may run concurrently.
  const reader = async (): Promise<void> => {
    let index = 0;
    let previous: Promise<unknown> = Promise.resolve();
    for (;;) {
      if (eof || run.failed) break;
      if (src.size !== undefined && index * chunkSize > src.size) break;
      if (cfg.throttle) await cfg.throttle.take(src.size === undefined ? chunkSize : Math.min(chunkSize, src.size - index * chunkSize), signal);
      await slots.acquire();
      if (eof || run.failed) {
        slots.release();
        break;
      }
      started();
      const i = index++;
      const ab = freeBuffers.pop() ?? new ArrayBuffer(chunkSize);
      const view = new Uint8Array(ab);
      const doRead = (): Promise<number> =>
        readFully(src.fh, view, chunkSize, src.seekable ? i * chunkSize : null).catch((e: unknown) => {
          throw sourceError(src.path, e);
        });
      // Pipes and character devices have no positions: one read at a time, in order.
      const p = run.track(
        (src.seekable ? doRead() : previous.then(doRead)).then((len) => {
          if (len < chunkSize) eof = true;
          return { index: i, ab, len };
        }),
      );
      previous = p;
      readQ.push(p);
    }
    readQ.close();
  };

  // In order: spot zero chunks, have the raw data hashed, hand the rest to the workers.
  const dispatcher = async (): Promise<void> => {
    let ended = false;
    for (;;) {
      const p = await readQ.shift();
      if (p === undefined) break;
      const c = await p;
      if (run.failed) return;
      if (ended || (c.len === 0 && c.index > 0)) {
        // a read past the end of the source
        ended = true;
        freeBuffers.push(c.ab);
        finished();
        continue;
      }
      if (c.len < chunkSize) ended = true;
      const view = new Uint8Array(c.ab, 0, c.len);
      bytes += c.len;
      let member: Promise<Member>;
      // the raw sha256 is of the whole stream, in order: here, before the chunk leaves this thread
      if (isAllZero(view)) {
        hashZeros(rawHash, c.len);
        if (c.len > 0) zeroChunks++;
        freeBuffers.push(c.ab);
        finished();
        await zeroAhead.acquire();
        member = zeroMember(pool, c.len).then((data) => ({ data, raw: c.len, zero: true }));
      } else {
        rawHash.update(view);
        member = pool.gzip(c.ab, c.len, freeOut.pop() ?? new ArrayBuffer(outCap), deflateLevel, true).then(
          (r) => {
            freeBuffers.push(r.ab);
            return { data: new Uint8Array(r.out, 0, r.outLen), raw: c.len, stored: r.stored, out: r.out };
          },
          (e: unknown) => {
            throw e instanceof WorkerTaskError
              ? new ArchiveError(`compressing ${src.path} failed: ${e.message}`, 'KVMBAK_ARCHIVE_WORKER', {
                  path: src.path,
                  rawOffset: c.index * chunkSize,
                })
              : e;
          },
        );
      }
      outQ.push(settleQuietly(member));
    }
    outQ.close();
  };

  // In order: append members to the partial file, hashing what is written.
  const writer = async (): Promise<void> => {
    for (;;) {
      const p = await outQ.shift();
      if (p === undefined) break;
      const m = await p;
      if (run.failed) return;
      members.push(storedBytes);
      await run.track(
        writeFully(out.fh, m.data, storedBytes).catch((e: unknown) => {
          throw destError(out.partial, e);
        }),
      );
      syncer.wrote(m.data.byteLength);
      fileHash.update(m.data);
      storedBytes += m.data.byteLength;
      if (m.out) freeOut.push(m.out);
      if (m.stored) storedChunks++;
      if (m.zero) zeroAhead.release();
      else finished();
      meter.add(m.raw, m.data.byteLength);
    }
  };

  try {
    await run.finish([reader(), dispatcher(), writer()]);
    if (members.length === 0) throw new ArchiveError(`internal error: no gzip member written for ${src.path}`, 'KVMBAK_ARCHIVE_WORKER');
    const sha256 = rawHash.digest('hex');
    meter.flush();
    return {
      bytes,
      sha256,
      storedBytes,
      fileSha256: fileHash.digest('hex'),
      members,
      zeroChunks,
      storedChunks,
    };
  } finally {
    run.dispose();
    chunksFinished(inFlight);
    await pool.destroy();
  }
}
