import { randomBytes } from 'node:crypto';
import { constants as C } from 'node:fs';
import { open, readFile, rename, stat, lstat, unlink, type FileHandle } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import { errnoCode } from '../util/errno.js';
import { ArchiveError, destError, sourceError } from './errors.js';

export interface Source {
  fh: FileHandle;
  path: string;
  kind: 'file' | 'block' | 'other';
  /** Byte size when known (regular file, block device). */
  size: number | undefined;
  /** Positional reads possible (file, block device): reads may run concurrently. */
  seekable: boolean;
}

/** Opens something to read: a regular file, a block device, or (sequentially) a pipe or character device. */
export async function openSource(path: string, what = 'source'): Promise<Source> {
  let fh: FileHandle;
  try {
    fh = await open(path, 'r');
  } catch (e) {
    throw sourceError(path, e, what);
  }
  try {
    const st = await fh.stat({ bigint: true });
    if (st.isDirectory()) throw sourceError(path, Object.assign(new Error('is a directory'), { code: 'EISDIR' }), what);
    if (st.isFile()) return { fh, path, kind: 'file', size: Number(st.size), seekable: true };
    if (st.isBlockDevice()) return { fh, path, kind: 'block', size: await blockDeviceSize(fh, st.rdev), seekable: true };
    return { fh, path, kind: 'other', size: undefined, seekable: false };
  } catch (e) {
    await fh.close().catch(() => undefined);
    throw sourceError(path, e, what);
  }
}

/** Linux's major/minor split of a dev_t (glibc gnu_dev_major/minor). */
export function devMajorMinor(rdev: bigint): [number, number] {
  const major = ((rdev >> 8n) & 0xfffn) | ((rdev >> 32n) & ~0xfffn);
  const minor = (rdev & 0xffn) | ((rdev >> 12n) & ~0xffn);
  return [Number(major), Number(minor)];
}

/**
 * Size of a block device in bytes. Node has no BLKGETSIZE64 ioctl and no
 * seek-to-end, so: /sys/dev/block/MAJ:MIN/size (512-byte sectors), and where
 * sysfs is missing, a binary search for the last readable byte.
 */
export async function blockDeviceSize(fh: FileHandle, rdev: bigint): Promise<number> {
  const [major, minor] = devMajorMinor(rdev);
  try {
    const text = await readFile(`/sys/dev/block/${major}:${minor}/size`, 'utf8');
    const sectors = Number(text.trim());
    if (Number.isSafeInteger(sectors) && sectors >= 0) return sectors * 512;
  } catch {
    // fall through to probing
  }
  return probeSize(fh);
}

async function probeSize(fh: FileHandle): Promise<number> {
  const one = Buffer.alloc(1);
  const readable = async (pos: number) => (await fh.read(one, 0, 1, pos)).bytesRead === 1;
  if (!(await readable(0))) return 0;
  let lo = 0; // readable
  let hi = 1 << 20; // candidate unreadable
  while (await readable(hi)) {
    lo = hi;
    hi *= 2;
  }
  while (hi - lo > 1) {
    const mid = lo + Math.floor((hi - lo) / 2);
    if (await readable(mid)) lo = mid;
    else hi = mid;
  }
  return lo + 1;
}

/** A new file written as `<dest>.<random>.partial` (0600) and renamed into place by commit(). */
export interface PartialFile {
  kind: 'file';
  fh: FileHandle;
  dest: string;
  partial: string;
  /** fsync, close, rename over dest, fsync the folder. */
  commit(): Promise<void>;
  /** Close and delete the partial file (never throws). */
  discard(): Promise<void>;
}

async function checkDestFolder(dest: string): Promise<void> {
  const dir = dirname(resolve(dest));
  let st;
  try {
    st = await stat(dir);
  } catch (e) {
    const code = errnoCode(e);
    if (code === 'ENOENT' || code === 'ENOTDIR') {
      throw new ArchiveError(
        `destination folder ${dir} does not exist; create it first (mkdir -p ${dir})`,
        'KVMBAK_DEST_DIR_MISSING',
        { path: dest },
        { cause: e },
      );
    }
    throw destError(dest, e);
  }
  if (!st.isDirectory()) {
    throw new ArchiveError(`destination folder ${dir} is not a folder; choose another destination`, 'KVMBAK_DEST_DIR_MISSING', {
      path: dest,
    });
  }
}

/**
 * Prepares a temporary file beside `dest` for a new file. Refuses an existing
 * `dest` unless `overwrite`. The temporary name is new for every run
 * (`<dest>.<random>.partial`) and created exclusively, so nothing that
 * exists is ever removed or followed: not a planted symlink, not the source
 * itself when it happens to be named like a partial file, not a leftover of
 * a crashed run (which keeps the .partial suffix that marks it unfinished).
 */
export async function createPartial(dest: string, overwrite: boolean): Promise<PartialFile> {
  await checkDestFolder(dest);
  let existing;
  try {
    existing = await lstat(dest);
  } catch (e) {
    if (errnoCode(e) !== 'ENOENT') throw destError(dest, e);
  }
  if (existing) {
    if (existing.isDirectory()) {
      throw new ArchiveError(`destination ${dest} is a folder; give a file name`, 'KVMBAK_DEST_UNWRITABLE', { path: dest });
    }
    if (!overwrite) {
      throw new ArchiveError(`destination ${dest} already exists; remove it or allow overwriting (--force)`, 'KVMBAK_DEST_EXISTS', {
        path: dest,
      });
    }
    if (!existing.isFile() && !existing.isSymbolicLink()) {
      throw new ArchiveError(`destination ${dest} is not a regular file; choose a file name`, 'KVMBAK_DEST_UNWRITABLE', { path: dest });
    }
  }
  let partial = '';
  let fh: FileHandle | undefined;
  for (let attempt = 0; fh === undefined; attempt++) {
    partial = `${dest}.${randomBytes(4).toString('hex')}.partial`;
    try {
      fh = await open(partial, C.O_WRONLY | C.O_CREAT | C.O_EXCL | C.O_NOFOLLOW, 0o600);
    } catch (e) {
      if (errnoCode(e) !== 'EEXIST' || attempt >= 8) throw destError(partial, e);
    }
  }
  try {
    await fh.chmod(0o600);
  } catch (e) {
    await fh.close().catch(() => undefined);
    await unlink(partial).catch(() => undefined);
    throw destError(partial, e);
  }
  let closed = false;
  return {
    kind: 'file',
    fh,
    dest,
    partial,
    async commit() {
      try {
        await fh.sync();
        closed = true;
        await fh.close();
        await rename(partial, dest);
      } catch (e) {
        throw destError(dest, e);
      }
      await syncFolder(dirname(resolve(dest)));
    },
    async discard() {
      if (!closed) {
        closed = true;
        await fh.close().catch(() => undefined);
      }
      await unlink(partial).catch(() => undefined);
    },
  };
}

/** fsync a folder so a rename in it survives a power loss (best effort). */
export async function syncFolder(dir: string): Promise<void> {
  let fh: FileHandle | undefined;
  try {
    fh = await open(dir, 'r');
    await fh.sync();
  } catch {
    // some file systems refuse fsync on folders; the data itself was synced
  } finally {
    await fh?.close().catch(() => undefined);
  }
}

/** A block device opened for writing in place. */
export interface BlockDest {
  kind: 'block';
  fh: FileHandle;
  dest: string;
  size: number;
  commit(): Promise<void>;
  discard(): Promise<void>;
}

/**
 * Opens the destination of an unpack: a block device is opened in place
 * (O_EXCL: refused while mounted or held by device-mapper); a regular file is
 * created as `<dest>.partial` (an existing one only with `overwrite`).
 */
export async function openUnpackDest(dest: string, overwrite: boolean): Promise<BlockDest | PartialFile> {
  let st;
  try {
    st = await stat(dest, { bigint: true });
  } catch (e) {
    const code = errnoCode(e);
    if (code !== 'ENOENT' && code !== 'ENOTDIR') throw destError(dest, e);
  }
  if (!st || st.isFile()) return createPartial(dest, overwrite);
  if (!st.isBlockDevice()) {
    throw new ArchiveError(
      `destination ${dest} is neither a regular file nor a block device; give a file name or a block device`,
      'KVMBAK_DEST_UNWRITABLE',
      { path: dest },
    );
  }
  let fh: FileHandle;
  try {
    fh = await open(dest, C.O_WRONLY | C.O_EXCL);
  } catch (e) {
    throw destError(dest, e);
  }
  try {
    const size = await blockDeviceSize(fh, st.rdev).catch(async () => {
      // a write-only handle cannot probe; use a read handle for the fallback
      const r = await open(dest, 'r');
      try {
        return await probeSize(r);
      } finally {
        await r.close();
      }
    });
    let closed = false;
    return {
      kind: 'block',
      fh,
      dest,
      size,
      async commit() {
        try {
          await fh.sync();
          closed = true;
          await fh.close();
        } catch (e) {
          throw destError(dest, e);
        }
      },
      async discard() {
        if (!closed) {
          closed = true;
          await fh.close().catch(() => undefined);
        }
      },
    };
  } catch (e) {
    await fh.close().catch(() => undefined);
    throw destError(dest, e);
  }
}

/** Reads exactly `len` bytes at `pos` (or sequentially when pos is null) unless EOF comes first. */
export async function readFully(fh: FileHandle, buf: Uint8Array, len: number, pos: number | null): Promise<number> {
  let done = 0;
  while (done < len) {
    const { bytesRead } = await fh.read(buf, done, len - done, pos === null ? null : pos + done);
    if (bytesRead === 0) break;
    done += bytesRead;
  }
  return done;
}

/** Writes all of `buf` at `pos`. */
export async function writeFully(fh: FileHandle, buf: Uint8Array, pos: number): Promise<void> {
  let done = 0;
  while (done < buf.byteLength) {
    const { bytesWritten } = await fh.write(buf, done, buf.byteLength - done, pos + done);
    if (bytesWritten === 0) throw Object.assign(new Error('write returned 0 bytes'), { code: 'EIO' });
    done += bytesWritten;
  }
}

/**
 * Flushes a file being written to the disk as the run goes: each time
 * `every` more bytes have been written, a datasync starts in the background
 * (one at a time, on libuv's pool, tracked so the file is never closed under
 * it). The disk then writes while the CPUs compress or inflate, and the
 * fsync of commit() has only the last stretch left instead of the whole
 * output. A failed datasync fails the run through `onError`.
 */
export class BackgroundSync {
  #since = 0;
  #running = false;

  constructor(
    private readonly fh: FileHandle,
    private readonly every: number,
    private readonly track: <T>(p: Promise<T>) => Promise<T>,
    private readonly onError: (e: unknown) => void,
  ) {}

  /** Counts `bytes` just written; starts a datasync when due and none is running. */
  wrote(bytes: number): void {
    this.#since += bytes;
    if (this.#running || this.#since < this.every) return;
    this.#since = 0;
    this.#running = true;
    void this.track(this.fh.datasync()).then(
      () => {
        this.#running = false;
      },
      (e: unknown) => {
        this.#running = false;
        this.onError(e);
      },
    );
  }
}

/** How much output BackgroundSync lets pile up in the page cache between two datasyncs. */
export const SYNC_EVERY = 32 * 1024 * 1024;
