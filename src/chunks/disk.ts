/**
 * A whole disk into the chunk store and back.
 *
 * A disk is identified by its chunk list: each id is the sha256 of its raw chunk, checked on every
 * read, so the list (whose own sha256 the set records) pins every byte of the disk. No whole-disk
 * sha256 is needed for that, and none is computed unless asked (`wholeSha256`, for the memory
 * state): it would be one serial hash on the JS thread, capping a re-backup whose other work
 * spreads over the cores, and a thin-delta run (writeDiskDelta) never reads the whole disk.
 *
 * writeDiskToStore reads the source sequentially in 4 MiB chunks and keeps up to `concurrency`
 * chunks in flight: each is checked for all-zero (a memcmp), else hashed on the store's codec threads,
 * looked up by path, and compressed and written only when the store lacks it. Memory:
 * `concurrency + 1` chunk buffers, plus 32 bytes per chunk for the list.
 *
 * readDiskFromStore fetches and checks chunks ahead in parallel (read, decompress, sha256 against
 * the id) and writes them in order; when the list has a raw-sha256 (the memory state, sets of older
 * kvmbak) it also hashes the whole and compares. With `sparse`, all-zero chunks are not written:
 * for a destination that already reads as zeros (a new thin LV, or a regular file, which it
 * truncates first and leaves sparse).
 */
import { createHash } from 'node:crypto';
import { read as fsRead } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import { availableParallelism } from 'node:os';
import { AbortError, ConfigError, throwIfAborted } from '../errors.js';
import { ChunkError } from './errors.js';
import { CHUNK_SIZE, hashZeros, isAllZero, zeroChunk } from './codec.js';
import { chunkCount, chunkIdAt, chunkLength, readChunkList, validateChunkList, type ChunkList } from './list.js';
import type { ChunkStore } from './store.js';

/** A file or device path, an open file descriptor or FileHandle (read from offset 0), or a byte stream. */
export type DiskSource = string | number | FileHandle | AsyncIterable<Uint8Array>;

export interface ChunkDiskProgress {
  phase: 'store' | 'restore';
  bytesDone: number;
  /** Known when the caller gave `size` (write) or from the list (read). */
  bytesTotal: number | undefined;
  chunksDone: number;
}

export interface WriteDiskOptions {
  signal?: AbortSignal;
  onProgress?: (event: ChunkDiskProgress) => void;
  /** Chunks in flight at once (default: the number of cores, at least 2). */
  concurrency?: number;
  /** Expected bytes, for progress only. */
  size?: number;
  /**
   * Also compute the sha256 of the whole source and record it in the list as `# raw-sha256`
   * (default false). It is one serial hash on the JS thread, about 1-2 GB/s: on a fast disk it caps
   * an unchanged re-backup, whose other work spreads over the cores. For data checked whole by its
   * users (the memory state, which `virsh restore` takes as one file); a disk is identified by its
   * chunk ids (each the sha256 of its chunk, checked on every read).
   */
  wholeSha256?: boolean;
}

export interface WriteDiskResult {
  list: ChunkList;
  /** sha256 of the whole source (only with `wholeSha256`). */
  rawSha256: string | undefined;
  bytesRead: number;
  chunks: number;
  /** Chunks the store lacked, written now. */
  chunksNew: number;
  /** Chunks the store had (from earlier disks, or earlier in this disk). */
  chunksReused: number;
  /** All-zero chunks (neither hashed nor compressed), new or reused. */
  zeroChunks: number;
  /** Bytes of chunk files written now. */
  bytesAdded: number;
}

function checkConcurrency(n: number | undefined): number {
  if (n === undefined) return Math.max(2, availableParallelism());
  if (!Number.isInteger(n) || n < 1 || n > 64)
    throw new ConfigError(`concurrency must be a whole number from 1 to 64, got ${String(n)}`, 'concurrency');
  return n;
}

/** Reads chunk after chunk of exactly CHUNK_SIZE bytes (the last shorter) into buffers it is given. */
type ChunkReader = (buf: Buffer) => Promise<number>;

function fileReader(fh: FileHandle): ChunkReader {
  let pos = 0;
  return async (buf) => {
    let filled = 0;
    while (filled < buf.byteLength) {
      const { bytesRead } = await fh.read(buf, filled, buf.byteLength - filled, pos);
      if (bytesRead === 0) break;
      filled += bytesRead;
      pos += bytesRead;
    }
    return filled;
  };
}

function streamReader(source: AsyncIterable<Uint8Array>): ChunkReader {
  const it = source[Symbol.asyncIterator]();
  let pending: Uint8Array | undefined;
  let done = false;
  return async (buf) => {
    let filled = 0;
    while (filled < buf.byteLength) {
      if (!pending || pending.byteLength === 0) {
        if (done) break;
        const r = await it.next();
        if (r.done) {
          done = true;
          break;
        }
        pending = r.value;
        continue;
      }
      const n = Math.min(pending.byteLength, buf.byteLength - filled);
      buf.set(pending.subarray(0, n), filled);
      pending = pending.subarray(n);
      filled += n;
    }
    return filled;
  };
}

/** Grows a buffer of 32-byte ids as chunks arrive (when the size is not known beforehand). */
class IdBuffer {
  private buf = Buffer.alloc(32 * 256);
  set(i: number, id: string): void {
    while ((i + 1) * 32 > this.buf.byteLength) {
      const next = Buffer.alloc(this.buf.byteLength * 2);
      this.buf.copy(next);
      this.buf = next;
    }
    this.buf.write(id, i * 32, 'hex');
  }
  take(n: number): Buffer {
    return Buffer.from(this.buf.subarray(0, n * 32));
  }
}

/**
 * The chunk jobs of one write in flight, and the first failure among them: the writer stops at it,
 * and every job has settled before the writer returns or throws.
 */
class Jobs {
  readonly #inflight = new Set<Promise<void>>();
  #failed = false;
  #failure: unknown;

  get size(): number {
    return this.#inflight.size;
  }

  start(job: () => Promise<void>): void {
    const p = (async () => {
      try {
        await job();
      } catch (e) {
        if (!this.#failed) {
          this.#failed = true;
          this.#failure = e;
        }
      }
    })();
    this.#inflight.add(p);
    void p.finally(() => this.#inflight.delete(p));
  }

  /** Waits until one job ends. */
  async one(): Promise<void> {
    await Promise.race(this.#inflight);
  }

  throwIfFailed(): void {
    if (this.#failed) throw this.#failure;
  }

  /** Waits for every job; throws the first failure. */
  async all(): Promise<void> {
    await Promise.all(this.#inflight);
    this.throwIfFailed();
  }

  /** Waits for every job, whatever became of them (on the way out of an error). */
  async settle(): Promise<void> {
    await Promise.allSettled(this.#inflight);
  }
}

/** What a write stored, and the one step that stores a chunk read from the disk. */
class StoreTally {
  chunksNew = 0;
  chunksReused = 0;
  zeroChunks = 0;
  bytesAdded = 0;

  constructor(
    private readonly store: ChunkStore,
    private readonly signal: AbortSignal | undefined,
  ) {}

  /** Stores `view` (an all-zero chunk gets the zero chunk's id, unhashed), counts it, and returns its id. */
  async put(view: Buffer): Promise<string> {
    const id = isAllZero(view) ? (await zeroChunk(view.byteLength)).id : await this.store.sha256(view);
    const r = await this.store.put(view, { id, signal: this.signal, deferDirSync: true });
    if (r.added) this.chunksNew++;
    else this.chunksReused++;
    if (r.zero) this.zeroChunks++;
    this.bytesAdded += r.bytesAdded;
    return r.id;
  }
}

/** A progress callback called at most every 200 ms, and always when forced (the last event). */
function progressReporter(onProgress: ((event: ChunkDiskProgress) => void) | undefined, event: () => ChunkDiskProgress): (force: boolean) => void {
  let last = 0;
  return (force) => {
    const now = Date.now();
    if (!onProgress || (!force && now - last < 200)) return;
    last = now;
    onProgress(event());
  };
}

/** `n` chunk buffers of CHUNK_SIZE bytes, outside the pooled allocator (they live for the whole write). */
function chunkBuffers(n: number): Buffer[] {
  return Array.from({ length: n }, () => Buffer.allocUnsafeSlow(CHUNK_SIZE));
}

/**
 * Stores a disk: reads `source` to its end in 4 MiB chunks, writes the chunks the store lacks,
 * and returns the chunk list and figures. The chunks are durable (folders fsynced) when it returns.
 * On failure or abort, chunks already written stay in the store unreferenced (garbage collection
 * removes them); nothing else is left.
 */
export async function writeDiskToStore(source: DiskSource, store: ChunkStore, options: WriteDiskOptions = {}): Promise<WriteDiskResult> {
  const concurrency = checkConcurrency(options.concurrency);
  const { signal, onProgress } = options;
  throwIfAborted(signal);
  let ownHandle: FileHandle | undefined;
  let read: ChunkReader;
  if (typeof source === 'string') {
    try {
      ownHandle = await open(source, 'r');
    } catch (e) {
      throw new ChunkError(`cannot read the disk ${source}: ${(e as Error).message}`, 'KVMBAK_CHUNK_STORE_IO', { path: source }, { cause: e });
    }
    read = fileReader(ownHandle);
  } else if (typeof source === 'number') {
    const fd = source;
    let pos = 0;
    read = (buf) =>
      new Promise((resolve, reject) => {
        let filled = 0;
        const step = (): void =>
          fsRead(fd, buf, filled, buf.byteLength - filled, pos, (err, n) => {
            if (err) return reject(err);
            filled += n;
            pos += n;
            if (n === 0 || filled === buf.byteLength) resolve(filled);
            else step();
          });
        step();
      });
  } else if (Symbol.asyncIterator in source) {
    read = streamReader(source);
  } else {
    read = fileReader(source);
  }

  const whole = options.wholeSha256 === true ? createHash('sha256') : undefined;
  const ids = new IdBuffer();
  const free = chunkBuffers(concurrency + 1);
  const jobs = new Jobs();
  const tally = new StoreTally(store, signal);
  let bytesRead = 0;
  let chunks = 0;
  const report = progressReporter(onProgress, () => ({
    phase: 'store',
    bytesDone: bytesRead,
    bytesTotal: options.size,
    chunksDone: tally.chunksNew + tally.chunksReused,
  }));

  try {
    for (;;) {
      if (signal?.aborted) throw new AbortError('The operation was aborted', { cause: signal.reason });
      jobs.throwIfFailed();
      while (free.length === 0) await jobs.one();
      jobs.throwIfFailed();
      const buf = free.pop() as Buffer;
      let n: number;
      try {
        n = await read(buf);
      } catch (e) {
        free.push(buf);
        throw new ChunkError(
          `cannot read the disk at byte ${bytesRead}: ${(e as Error).message}`,
          'KVMBAK_CHUNK_STORE_IO',
          typeof source === 'string' ? { path: source } : {},
          { cause: e },
        );
      }
      if (n === 0) {
        free.push(buf);
        break;
      }
      const index = chunks++;
      bytesRead += n;
      const view = buf.subarray(0, n);
      whole?.update(view);
      jobs.start(async () => {
        try {
          ids.set(index, await tally.put(view));
          report(false);
        } finally {
          free.push(buf);
        }
      });
      if (n < CHUNK_SIZE) break;
    }
    await jobs.all();
    await store.flush();
  } catch (e) {
    await jobs.settle();
    throw e;
  } finally {
    await ownHandle?.close().catch(() => undefined);
  }
  report(true);
  const list: ChunkList = { rawSize: bytesRead, chunkSize: CHUNK_SIZE, rawSha256: whole?.digest('hex'), ids: ids.take(chunks) };
  const { chunksNew, chunksReused, zeroChunks, bytesAdded } = tally;
  return { list, rawSha256: list.rawSha256, bytesRead, chunks, chunksNew, chunksReused, zeroChunks, bytesAdded };
}

export interface ReadDiskOptions {
  signal?: AbortSignal;
  onProgress?: (event: ChunkDiskProgress) => void;
  /** Chunks fetched ahead (default: the number of cores, at least 2). */
  concurrency?: number;
  /**
   * Do not write all-zero chunks. Only for a destination that reads as zeros where nothing is
   * written: a regular file (it is truncated first, so it stays sparse) or a new thin LV.
   */
  sparse?: boolean;
  /**
   * Hash the whole rebuilt data (one serial hash on the JS thread) even when the list has no
   * raw-sha256; a list that has one is always checked against it. Every chunk is checked against
   * its id either way.
   */
  wholeSha256?: boolean;
}

export interface ReadDiskResult {
  /** sha256 of the whole rebuilt data; undefined when not computed (see ReadDiskOptions.wholeSha256). */
  rawSha256: string | undefined;
  bytesWritten: number;
  /** All-zero chunks left unwritten (sparse). */
  zeroChunksSkipped: number;
}

/**
 * Rebuilds a disk from its chunk list into `dest` (a file path, created 0600 when missing, or a
 * device path; or an open FileHandle). Every chunk is checked against its id (decompressed, its
 * sha256 compared) and its length against the list; the whole disk against the list's raw-sha256
 * when the list has one. A mismatch is a ChunkError. The data is fsynced before it returns.
 */
export async function readDiskFromStore(
  list: ChunkList,
  store: ChunkStore,
  dest: string | FileHandle,
  options: ReadDiskOptions = {},
): Promise<ReadDiskResult> {
  validateChunkList(list);
  const concurrency = checkConcurrency(options.concurrency);
  const { signal, onProgress } = options;
  throwIfAborted(signal);
  let fh: FileHandle;
  let own = false;
  if (typeof dest === 'string') {
    try {
      fh = await open(dest, 'r+').catch((e: NodeJS.ErrnoException) => {
        if (e.code === 'ENOENT') return open(dest, 'wx', 0o600);
        throw e;
      });
    } catch (e) {
      throw new ChunkError(`cannot open ${dest} for writing: ${(e as Error).message}`, 'KVMBAK_CHUNK_STORE_IO', { path: dest }, { cause: e });
    }
    own = true;
  } else {
    fh = dest;
  }
  const n = chunkCount(list);
  const whole = options.wholeSha256 === true || list.rawSha256 !== undefined ? createHash('sha256') : undefined;
  let bytesWritten = 0;
  let zeroChunksSkipped = 0;
  const ahead = new Map<number, Promise<Buffer | null>>();
  try {
    const st = await fh.stat();
    const regular = st.isFile();
    if (regular) {
      await fh.truncate(0);
      await fh.truncate(list.rawSize);
    }
    const zeroIds = new Map<number, string>();
    const zeroIdOf = async (len: number): Promise<string> => {
      let id = zeroIds.get(len);
      if (id === undefined) zeroIds.set(len, (id = (await zeroChunk(len)).id));
      return id;
    };
    const fetch = async (i: number): Promise<Buffer | null> => {
      const len = chunkLength(list, i);
      const id = chunkIdAt(list, i);
      if (id === (await zeroIdOf(len))) return null;
      const raw = await store.get(id, { signal, maxBytes: len });
      if (raw.byteLength !== len) {
        throw new ChunkError(
          `chunk ${i} (${id}) holds ${raw.byteLength} bytes, the list expects ${len}: the list does not match the store`,
          'KVMBAK_CHUNK_DISK_MISMATCH',
          { chunkId: id },
        );
      }
      return raw;
    };
    let next = 0;
    const fill = (): void => {
      while (next < n && ahead.size < concurrency) {
        const p = fetch(next);
        p.catch(() => undefined);
        ahead.set(next++, p);
      }
    };
    let zeroBuf: Buffer | undefined;
    let lastReport = 0;
    for (let i = 0; i < n; i++) {
      throwIfAborted(signal);
      fill();
      const raw = await (ahead.get(i) as Promise<Buffer | null>);
      ahead.delete(i);
      const len = chunkLength(list, i);
      const pos = i * list.chunkSize;
      if (raw === null) {
        if (whole) hashZeros(whole, len);
        if (options.sparse === true || regular) {
          // A regular file was truncated to the size: its holes read as zeros already.
          zeroChunksSkipped++;
        } else {
          zeroBuf ??= Buffer.alloc(list.chunkSize);
          await writeAll(fh, zeroBuf.subarray(0, len), pos);
          bytesWritten += len;
        }
      } else {
        whole?.update(raw);
        await writeAll(fh, raw, pos);
        bytesWritten += len;
      }
      if (onProgress && (Date.now() - lastReport >= 200 || i === n - 1)) {
        lastReport = Date.now();
        onProgress({ phase: 'restore', bytesDone: Math.min(list.rawSize, (i + 1) * list.chunkSize), bytesTotal: list.rawSize, chunksDone: i + 1 });
      }
    }
    await fh.sync();
  } catch (e) {
    await Promise.allSettled(ahead.values());
    throw e;
  } finally {
    if (own) await fh.close().catch(() => undefined);
  }
  const rawSha256 = whole?.digest('hex');
  if (list.rawSha256 !== undefined && rawSha256 !== undefined && rawSha256 !== list.rawSha256) {
    throw new ChunkError(
      `the rebuilt disk hashes to ${rawSha256}, its chunk list says ${list.rawSha256}: the list or the store is damaged`,
      'KVMBAK_CHUNK_DISK_MISMATCH',
    );
  }
  return { rawSha256, bytesWritten, zeroChunksSkipped };
}

async function writeAll(fh: FileHandle, buf: Buffer, pos: number): Promise<void> {
  let done = 0;
  while (done < buf.byteLength) {
    const { bytesWritten } = await fh.write(buf, done, buf.byteLength - done, pos + done);
    done += bytesWritten;
  }
}

export interface WriteDiskDeltaOptions {
  /**
   * The disk's list from the previous run: a ChunkList, or the path of its list file (read here,
   * after the store is announced as in use). A ChunkList value must have been read after
   * `store.beginWriting()` on this store: a garbage collection that ran between reading it and
   * announcing the writer could have removed its chunks.
   */
  previous: ChunkList | string;
  /** Indexes of the chunks that changed since `previous` (ascending, each once), e.g. from thin_delta. */
  changed: readonly number[];
  /** Bytes of the disk now: must be the previous list's size (a resized disk needs a full read). */
  size: number;
  signal?: AbortSignal;
  onProgress?: (event: ChunkDiskProgress) => void;
  /** Chunks in flight at once (default: the number of cores, at least 2). */
  concurrency?: number;
}

export interface WriteDiskDeltaResult extends WriteDiskResult {
  /** Always undefined: the whole-disk sha256 needs every byte; the chunk ids identify the disk. */
  rawSha256: undefined;
  /** Chunks read from the source (the changed ones). */
  chunksRead: number;
  /** Chunks whose ids were taken from the previous list (checked present in the store and touched). */
  chunksFromPrevious: number;
}

/**
 * Stores a disk of which only `changed` chunks differ from `previous` (a thin LV, the changed
 * chunks from thin_delta): reads ONLY those chunks from `source` (positional reads at
 * index × chunk size; a path, a descriptor or a FileHandle, not a stream), stores them, and builds
 * the new list with every other id taken from `previous`, each checked present in the store and
 * touched (ChunkStore.reuse). The store is announced as in use (beginWriting) before anything else,
 * so no garbage collection can remove a chunk the new list takes over.
 *
 * The list it returns has no raw-sha256 (the result's `rawSha256` is undefined): hashing the whole
 * disk would mean reading the unchanged chunks too, which is what this function exists to avoid.
 * Such a disk is identified by its chunk list: each id is the sha256 of its chunk, checked on every
 * read (readDiskFromStore, verify), and the by-hand check hashes each chunk file against its name.
 *
 * A previous list of another size or chunk size, a changed index outside it, a source shorter or
 * longer than `size`, or a reused chunk the store lacks: a ChunkError (KVMBAK_CHUNK_DISK_MISMATCH
 * or KVMBAK_CHUNK_MISSING), after which the caller reads the whole disk instead.
 */
export async function writeDiskDelta(
  source: string | number | FileHandle,
  store: ChunkStore,
  options: WriteDiskDeltaOptions,
): Promise<WriteDiskDeltaResult> {
  if (typeof options !== 'object' || options === null)
    throw new ConfigError('writeDiskDelta needs options with previous, changed and size', 'options');
  const concurrency = checkConcurrency(options.concurrency);
  const { signal, onProgress, size } = options;
  if (!Number.isSafeInteger(size) || size <= 0) throw new ConfigError(`size must be a positive whole number of bytes, got ${String(size)}`, 'size');
  if (!Array.isArray(options.changed)) throw new ConfigError('changed must be an array of chunk indexes', 'changed');
  throwIfAborted(signal);
  // First: from here no garbage collection runs until the store is closed.
  await store.beginWriting(signal);
  const previous = typeof options.previous === 'string' ? await readChunkList(options.previous, signal) : options.previous;
  validateChunkList(previous);
  const mismatch = (what: string): ChunkError =>
    new ChunkError(`the previous chunk list does not fit this disk: ${what}; read the whole disk instead`, 'KVMBAK_CHUNK_DISK_MISMATCH');
  if (previous.chunkSize !== CHUNK_SIZE) throw mismatch(`its chunk size is ${previous.chunkSize} bytes, not ${CHUNK_SIZE}`);
  if (previous.rawSize !== size) throw mismatch(`it holds ${previous.rawSize} bytes, the disk ${size}`);
  const n = chunkCount(previous);
  let last = -1;
  for (const c of options.changed) {
    if (!Number.isSafeInteger(c) || c <= last || c >= n) {
      throw new ConfigError(
        `changed must hold chunk indexes from 0 to ${n - 1} in ascending order, each once; got ${String(c)} after ${last}`,
        'changed',
      );
    }
    last = c;
  }

  let ownHandle: FileHandle | undefined;
  let pread: (buf: Buffer, offset: number, length: number, position: number) => Promise<number>;
  if (typeof source === 'string') {
    try {
      ownHandle = await open(source, 'r');
    } catch (e) {
      throw new ChunkError(`cannot read the disk ${source}: ${(e as Error).message}`, 'KVMBAK_CHUNK_STORE_IO', { path: source }, { cause: e });
    }
    const fh = ownHandle;
    pread = async (buf, offset, length, position) => (await fh.read(buf, offset, length, position)).bytesRead;
  } else if (typeof source === 'number') {
    const fd = source;
    pread = (buf, offset, length, position) =>
      new Promise((resolve, reject) => fsRead(fd, buf, offset, length, position, (err, n) => (err ? reject(err) : resolve(n))));
  } else {
    const fh = source;
    pread = async (buf, offset, length, position) => (await fh.read(buf, offset, length, position)).bytesRead;
  }
  const where = typeof source === 'string' ? { path: source } : {};
  const readAt = async (buf: Buffer, pos: number): Promise<number> => {
    let filled = 0;
    while (filled < buf.byteLength) {
      let n: number;
      try {
        n = await pread(buf, filled, buf.byteLength - filled, pos + filled);
      } catch (e) {
        throw new ChunkError(`cannot read the disk at byte ${pos + filled}: ${(e as Error).message}`, 'KVMBAK_CHUNK_STORE_IO', where, { cause: e });
      }
      if (n === 0) break;
      filled += n;
    }
    return filled;
  };

  const ids = Buffer.from(previous.ids);
  const changed = new Set(options.changed);
  const free = chunkBuffers(Math.min(concurrency, options.changed.length) + 1);
  const jobs = new Jobs();
  const tally = new StoreTally(store, signal);
  let bytesRead = 0;
  let chunksFromPrevious = 0;
  let done = 0;
  const report = progressReporter(onProgress, () => ({
    phase: 'store',
    bytesDone: Math.min(size, done * CHUNK_SIZE),
    bytesTotal: size,
    chunksDone: done,
  }));
  let zeroId: string | undefined;
  const zeroIdOf = async (len: number): Promise<string> => (len === CHUNK_SIZE ? (zeroId ??= (await zeroChunk(len)).id) : (await zeroChunk(len)).id);

  try {
    // The source must be exactly `size` bytes: its last byte readable, nothing after it.
    const probe = Buffer.alloc(1);
    if ((await readAt(probe, size - 1)) !== 1 || (await readAt(probe, size)) !== 0) {
      throw mismatch(`the source is not ${size} bytes long`);
    }
    for (let i = 0; i < n; i++) {
      if (signal?.aborted) throw new AbortError('The operation was aborted', { cause: signal.reason });
      jobs.throwIfFailed();
      while (jobs.size >= concurrency) await jobs.one();
      jobs.throwIfFailed();
      const index = i;
      const len = chunkLength(previous, index);
      if (!changed.has(index)) {
        const id = chunkIdAt(previous, index);
        jobs.start(async () => {
          if (!(await store.reuse(id, signal))) {
            throw new ChunkError(
              `chunk ${index} of the previous list (${id}) is not in the store: read the whole disk instead`,
              'KVMBAK_CHUNK_MISSING',
              { chunkId: id },
            );
          }
          chunksFromPrevious++;
          tally.chunksReused++;
          if (id === (await zeroIdOf(len))) tally.zeroChunks++;
          done++;
          report(false);
        });
        continue;
      }
      while (free.length === 0) await jobs.one();
      const buf = free.pop() as Buffer;
      const view = buf.subarray(0, len);
      let got: number;
      try {
        got = await readAt(view, index * CHUNK_SIZE);
      } catch (e) {
        free.push(buf);
        throw e;
      }
      if (got !== len) {
        free.push(buf);
        throw mismatch(`chunk ${index} ends early (${got} of ${len} bytes)`);
      }
      bytesRead += len;
      jobs.start(async () => {
        try {
          ids.write(await tally.put(view), index * 32, 'hex');
          done++;
          report(false);
        } finally {
          free.push(buf);
        }
      });
    }
    await jobs.all();
    await store.flush();
  } catch (e) {
    await jobs.settle();
    throw e;
  } finally {
    await ownHandle?.close().catch(() => undefined);
  }
  report(true);
  const list: ChunkList = { rawSize: size, chunkSize: CHUNK_SIZE, rawSha256: undefined, ids };
  const { chunksNew, chunksReused, zeroChunks, bytesAdded } = tally;
  return {
    list,
    rawSha256: undefined,
    bytesRead,
    chunks: n,
    chunksNew,
    chunksReused,
    zeroChunks,
    bytesAdded,
    chunksRead: options.changed.length,
    chunksFromPrevious,
  };
}
