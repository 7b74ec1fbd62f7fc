/**
 * ChunkStore: one content-addressed store of compressed chunks per backup destination
 * (DEST/.chunks/).
 *
 * Layout (like Proxmox Backup Server's datastore `.chunks`, 4 hex digits of fan-out):
 *
 *     DEST/.chunks/                 0700
 *       3b7a/                       0700, made on first use (at most 65536 folders)
 *         3b7a0c…(64 hex)           0600: ONE gzip member of the raw chunk; name = sha256 of the raw chunk
 *       .writers/NONCE, .gc/NONCE   presence files (see presence.ts)
 *
 * Because each file is one gzip member, the chunk files of a disk concatenated in order are a
 * multi-member gzip of the whole disk (`xargs cat | zcat`, see list.ts).
 *
 * Lookups go by path (a stat), never through an in-memory index, so a store of 10^6 chunks costs
 * the same memory as an empty one. A chunk is written atomically: an exclusive temporary name in
 * its folder, fsync, rename, then the folder fsynced; a reader never sees a partial chunk, and a
 * crash leaves at most a `.tmp-*` file that garbage collection removes.
 *
 * Writing (put, reuse, beginWriting) announces the store as in use by a writer, once per ChunkStore
 * instance, until close(): garbage collection never runs while a writer is announced (see gc.ts). An existing
 * chunk that put() finds is touched (mtime set to now), so a grace period, if one is configured,
 * counts from its last use.
 */
import { constants as fsConstants } from 'node:fs';
import { mkdir, open, readFile, rename, stat, unlink, utimes } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { ConfigError, throwIfAborted } from '../errors.js';
import { checkThreads, isArchiveError, MemberCodec } from '../archive/index.js';
import { ChunkError } from './errors.js';
import { expectedChunkBytes, isAllZero, isChunkId, MAX_CHUNK_SIZE, zeroChunk } from './codec.js';
import { enterAsWriter, type Presence, type PresenceEntry } from './presence.js';
import { chunkRelativePath } from './list.js';
import { collectGarbage, type CollectGarbageOptions, type GcResult } from './gc.js';

/** Default gzip level of the chunks (as `kvmbak image pack`: the same libdeflate level for each level). */
export const DEFAULT_CHUNK_LEVEL = 3;

export interface ChunkStoreOptions {
  /** gzip level 1-9 for new chunks (default 3). */
  level?: number;
  /** Called once when a writer has to wait for a running garbage collection. */
  onWaitForGc?: (gcs: PresenceEntry[]) => void;
  /** Codec worker threads (default: the number of cores, as `kvmbak image pack`). */
  threads?: number;
}

export interface PutOptions {
  /** The chunk's id when the caller has hashed it already (it is trusted: the caller hashed `raw`). */
  id?: string;
  signal?: AbortSignal;
  /**
   * Leave the folder fsync to flush(): the chunk is renamed into place but the rename is durable
   * only once flush() returns. For bulk writers that flush once before committing what refers to
   * the chunks (writeDiskToStore does).
   */
  deferDirSync?: boolean;
}

export interface PutResult {
  id: string;
  /** True when the chunk was written now, false when the store had it. */
  added: boolean;
  /** Bytes of the chunk file written now (0 when the store had it). */
  bytesAdded: number;
  /** True for an all-zero chunk (neither hashed nor compressed). */
  zero: boolean;
}

function checkId(id: string): string {
  if (typeof id !== 'string' || !isChunkId(id)) {
    throw new ChunkError(`chunk id ${JSON.stringify(id)} is not a sha256 (64 lowercase hex digits)`, 'KVMBAK_CHUNK_ID');
  }
  return id;
}

function ioError(what: string, path: string, e: unknown): ChunkError {
  return new ChunkError(`${what} ${path}: ${(e as Error).message}`, 'KVMBAK_CHUNK_STORE_IO', { path }, { cause: e });
}

async function fsyncDir(path: string): Promise<void> {
  const fh = await open(path, fsConstants.O_RDONLY | fsConstants.O_DIRECTORY);
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

export class ChunkStore {
  /** The store folder (DEST/.chunks). */
  readonly root: string;
  readonly level: number;
  private readonly onWaitForGc: ((gcs: PresenceEntry[]) => void) | undefined;
  private writer: Promise<Presence> | undefined;
  private readonly knownDirs = new Set<string>();
  private readonly dirtyDirs = new Set<string>();
  private inflight = 0;
  /** Chunks being written by this instance: a second put of the same id waits for the first. */
  private readonly writing_ = new Map<string, Promise<void>>();
  private closed = false;
  private readonly threads: number | undefined;
  private codec_: MemberCodec | undefined;

  private constructor(root: string, options: ChunkStoreOptions) {
    this.root = root;
    this.threads = options.threads;
    const level = options.level ?? DEFAULT_CHUNK_LEVEL;
    if (!Number.isInteger(level) || level < 1 || level > 9)
      throw new ConfigError(`level must be a whole number from 1 to 9, got ${String(level)}`, 'level');
    this.level = level;
    this.onWaitForGc = options.onWaitForGc;
    // checks `threads` now; the threads themselves start with the first chunk compressed or read
    if (options.threads !== undefined) checkThreads(options.threads);
  }

  /** This store's codec threads, started on first use and ended by close(); idle, they never keep the process alive. */
  private get codec(): MemberCodec {
    return (this.codec_ ??= new MemberCodec(this.threads === undefined ? {} : { threads: this.threads }));
  }

  /** Opens (and creates, 0700, when missing) the store folder `root`. */
  static async open(root: string, options: ChunkStoreOptions = {}): Promise<ChunkStore> {
    const store = new ChunkStore(root, options);
    try {
      const made = await mkdir(root, { recursive: true, mode: 0o700 });
      if (made !== undefined) await fsyncDir(join(root, '..'));
      const st = await stat(root);
      if (!st.isDirectory()) throw new Error('not a folder');
    } catch (e) {
      throw ioError('cannot open the chunk store', root, e);
    }
    return store;
  }

  /** The store of a backup destination: DEST/.chunks. */
  static forDestination(dest: string, options: ChunkStoreOptions = {}): Promise<ChunkStore> {
    return ChunkStore.open(join(dest, '.chunks'), options);
  }

  /** sha256 (hex) of a raw chunk, its id: hashed by this store's codec threads, off the JS thread. */
  sha256(raw: Uint8Array): Promise<string> {
    return this.codec.sha256(raw);
  }

  /** Absolute path of a chunk's file. */
  pathOf(id: string): string {
    return join(this.root, chunkRelativePath(checkId(id)));
  }

  /** True when the store holds the chunk (one stat, no index). */
  async has(id: string): Promise<boolean> {
    try {
      return (await stat(this.pathOf(id))).isFile();
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return false;
      throw ioError('cannot look up chunk', this.pathOf(id), e);
    }
  }

  /** Bytes of a chunk's file, or undefined when the store lacks it. */
  async storedSize(id: string): Promise<number | undefined> {
    try {
      return (await stat(this.pathOf(id))).size;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw ioError('cannot look up chunk', this.pathOf(id), e);
    }
  }

  /**
   * Stores a raw chunk unless the store has it: an all-zero chunk is recognised without hashing or
   * compressing (its member is made once); any other is hashed, and compressed only when new.
   */
  async put(raw: Uint8Array, options: PutOptions = {}): Promise<PutResult> {
    if (this.closed) throw new ChunkError(`the chunk store ${this.root} is closed`, 'KVMBAK_CHUNK_STORE_IO', { path: this.root });
    if (raw.byteLength > MAX_CHUNK_SIZE) throw new ConfigError(`a chunk holds at most ${MAX_CHUNK_SIZE} bytes, got ${raw.byteLength}`, 'raw');
    throwIfAborted(options.signal);
    this.inflight++;
    try {
      await this.enterAsWriter(options.signal);
      const zero = isAllZero(raw);
      const zc = zero ? await zeroChunk(raw.byteLength) : undefined;
      const id = zc?.id ?? (options.id === undefined ? await this.sha256(raw) : checkId(options.id));
      const pending = this.writing_.get(id);
      if (pending) {
        await pending;
        return { id, added: false, bytesAdded: 0, zero };
      }
      if (await this.touch(id)) return { id, added: false, bytesAdded: 0, zero };
      throwIfAborted(options.signal);
      const again = this.writing_.get(id); // another put of it started while this one looked
      if (again) {
        await again;
        return { id, added: false, bytesAdded: 0, zero };
      }
      let bytesAdded = 0;
      const deferDirSync = options.deferDirSync === true;
      const write = (async () => {
        // a new chunk's member is written from the codec's own buffer (no copy), which it then recycles
        const writeMember = async (member: Uint8Array): Promise<void> => {
          await this.writeFile(id, member, deferDirSync);
          bytesAdded = member.byteLength;
        };
        await (zc ? writeMember(zc.member) : this.codec.compressTo(raw, this.level, writeMember));
      })();
      this.writing_.set(id, write);
      try {
        await write;
      } finally {
        this.writing_.delete(id);
      }
      return { id, added: true, bytesAdded, zero };
    } finally {
      this.inflight--;
    }
  }

  /**
   * Announces this instance as a writer now (waiting while a garbage collection runs), without
   * writing anything. A backup calls it before it relies on chunks the store already has, e.g. ids
   * taken from the previous set's list: from then until close(), no GC removes anything.
   */
  async beginWriting(signal?: AbortSignal): Promise<void> {
    if (this.closed) throw new ChunkError(`the chunk store ${this.root} is closed`, 'KVMBAK_CHUNK_STORE_IO', { path: this.root });
    await this.enterAsWriter(signal);
  }

  /**
   * Uses a chunk the store has without its data (an id from an earlier list): announces the writer
   * (beginWriting), touches the chunk and returns true; false when the store lacks it (then the
   * caller must put() the data).
   */
  async reuse(id: string, signal?: AbortSignal): Promise<boolean> {
    await this.beginWriting(signal);
    return this.touch(checkId(id));
  }

  /** Sets a present chunk's times to now; false when the store lacks it. */
  private async touch(id: string): Promise<boolean> {
    const path = this.pathOf(id);
    const now = new Date();
    try {
      await utimes(path, now, now);
      return true;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return false;
      throw ioError('cannot touch chunk', path, e);
    }
  }

  private async writeFile(id: string, member: Uint8Array, deferDirSync: boolean): Promise<void> {
    const rel = chunkRelativePath(id);
    const dir = join(this.root, rel.slice(0, 4));
    const path = join(this.root, rel);
    if (!this.knownDirs.has(dir)) {
      try {
        const made = await mkdir(dir, { mode: 0o700 }).then(
          () => true,
          (e: NodeJS.ErrnoException) => {
            if (e.code === 'EEXIST') return false;
            throw e;
          },
        );
        if (made) await fsyncDir(this.root);
      } catch (e) {
        throw ioError('cannot create chunk folder', dir, e);
      }
      this.knownDirs.add(dir);
    }
    const tmp = join(dir, `.tmp-${id.slice(0, 16)}-${process.pid}-${randomBytes(6).toString('hex')}`);
    try {
      const fh = await open(tmp, 'wx', 0o600);
      try {
        await fh.writeFile(member);
        await fh.sync();
      } finally {
        await fh.close();
      }
      await rename(tmp, path);
      if (deferDirSync) this.dirtyDirs.add(dir);
      else await fsyncDir(dir);
    } catch (e) {
      await unlink(tmp).catch(() => undefined);
      throw ioError('cannot write chunk', path, e);
    }
  }

  /** Makes every chunk put with `deferDirSync` durable (fsyncs the folders they were renamed into). */
  async flush(): Promise<void> {
    const dirs = [...this.dirtyDirs];
    this.dirtyDirs.clear();
    for (const dir of dirs) {
      try {
        await fsyncDir(dir);
      } catch (e) {
        throw ioError('cannot sync chunk folder', dir, e);
      }
    }
  }

  /** The chunk file's bytes (one gzip member), unverified. */
  async readMember(id: string): Promise<Buffer> {
    const path = this.pathOf(id);
    try {
      return await readFile(path);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') {
        throw new ChunkError(
          `chunk ${id} is missing from the store (${path}): a set that uses it cannot be restored in full`,
          'KVMBAK_CHUNK_MISSING',
          { chunkId: id, path },
          { cause: e },
        );
      }
      throw ioError('cannot read chunk', path, e);
    }
  }

  /**
   * The raw chunk, decompressed and hashed off the JS thread (a codec thread) and checked: its
   * sha256 must be its id, else a ChunkError (KVMBAK_CHUNK_CORRUPT) names the chunk and its file.
   * A chunk is one gzip member holding at most `maxBytes` (its trailer's length is checked first).
   */
  async get(id: string, options: { signal?: AbortSignal; maxBytes?: number } = {}): Promise<Buffer> {
    throwIfAborted(options.signal);
    const member = await this.readMember(checkId(id));
    const path = this.pathOf(id);
    let raw: Buffer;
    let got: string;
    try {
      ({ data: raw, sha256: got } = await this.codec.decompressHashed(member, expectedChunkBytes(member, options.maxBytes ?? MAX_CHUNK_SIZE)));
    } catch (e) {
      if (!isArchiveError(e) || e.code === 'KVMBAK_ARCHIVE_WORKER') throw e;
      throw new ChunkError(
        `chunk ${id} is damaged (${path}): it does not decompress (${(e as Error).message}); every set that uses it is damaged`,
        'KVMBAK_CHUNK_CORRUPT',
        { chunkId: id, path },
        { cause: e },
      );
    }
    if (got !== id) {
      throw new ChunkError(
        `chunk ${id} is damaged (${path}): its content hashes to ${got}; every set that uses it is damaged`,
        'KVMBAK_CHUNK_CORRUPT',
        { chunkId: id, path },
      );
    }
    return raw;
  }

  private enterAsWriter(signal?: AbortSignal): Promise<Presence> {
    if (!this.writer) {
      this.writer = enterAsWriter(this.root, signal, this.onWaitForGc);
      this.writer.catch(() => {
        this.writer = undefined;
      });
    }
    return this.writer;
  }

  /** True while this instance is announced as a writer (from its first put until close()). */
  get writing(): boolean {
    return this.writer !== undefined;
  }

  /**
   * Collects the chunks no list references (see gc.ts). Refused while this instance has a put in
   * flight; an instance that has written ends its writer announcement first.
   */
  async collectGarbage(options: CollectGarbageOptions): Promise<GcResult> {
    if (this.inflight > 0) throw new ConfigError('collectGarbage cannot run while this store has puts in flight', 'collectGarbage');
    await this.flush();
    await this.endWriting();
    return collectGarbage(this.root, options);
  }

  private async endWriting(): Promise<void> {
    const w = this.writer;
    this.writer = undefined;
    if (w) await (await w.catch(() => undefined))?.release();
  }

  /** Flushes, ends the writer announcement and the codec threads. Idempotent. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    try {
      await this.flush();
    } finally {
      try {
        await this.endWriting();
      } finally {
        await this.codec_?.destroy();
      }
    }
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}
