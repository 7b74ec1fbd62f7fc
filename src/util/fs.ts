/**
 * Small file-system (and JSON) helpers shared by manifest/, store/ and restore/
 * (internal: not exported from the package). Backup data is private: files 0600, folders
 * 0700, set with an explicit chmod so the process umask never matters.
 */
import { createHash, randomBytes } from 'node:crypto';
import { type Stats, constants as fsConstants } from 'node:fs';
import { type FileHandle, chmod, lstat, mkdir, open, rename, unlink } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { KvmbakError, isKvmbakError, throwIfAborted } from '../errors.js';

export const FILE_MODE = 0o600;
export const DIR_MODE = 0o700;

/** A JSON object (not null, not an array). */
export function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

import { errnoCode } from './errno.js';

export { errnoCode };

/**
 * Names `path` in a file-system error that does not (a failed write or
 * fsync on an open handle says only "ENOSPC: no space left on device,
 * write"): the message gets Node's own form, `..., write '/backup/x'`, and
 * the error a `path`. Returns the same error.
 */
export function withPath<E>(e: E, path: string): E {
  if (e instanceof Error && errnoCode(e) !== undefined) {
    const err = e as Error & { path?: string };
    if (!err.message.includes(path)) err.message = `${err.message} '${path}'`;
    err.path ??= path;
  }
  return e;
}

/** fsync a folder so the names created, renamed or removed in it are durable. */
/** True when `path` is a folder (not following a final symbolic link); false when it does not exist. */
export async function isRealDir(path: string): Promise<boolean> {
  try {
    return (await lstat(path)).isDirectory();
  } catch (e) {
    if (errnoCode(e) === 'ENOENT') return false;
    throw e;
  }
}

export async function fsyncDir(dir: string): Promise<void> {
  const h = await open(dir, 'r');
  try {
    await h.sync();
  } finally {
    await h.close();
  }
}

const TMP_RE = /^\..+\.tmp-\d+-[0-9a-f]{12}$/;

/** A unique temporary name next to `path` (hidden, recognisable by isTempName). */
export function tempPathFor(path: string): string {
  return join(dirname(path), `.${basename(path)}.tmp-${process.pid}-${randomBytes(6).toString('hex')}`);
}

/** True for names made by tempPathFor: leftovers of an interrupted atomic write. */
export function isTempName(name: string): boolean {
  return TMP_RE.test(name);
}

/**
 * Creates `path` exclusively (O_EXCL: EEXIST when it exists) with `mode`
 * (chmod'ed, whatever the umask), writes `data` and fsyncs it. On a failure
 * after the create, the file is removed again.
 */
export async function writeNewFile(path: string, data: string | Uint8Array, mode = FILE_MODE): Promise<void> {
  const h = await open(path, 'wx', mode);
  try {
    await h.chmod(mode);
    await h.writeFile(data);
    await h.sync();
  } catch (e) {
    await h.close().catch(() => undefined);
    await unlink(path).catch(() => undefined);
    throw withPath(e, path);
  }
  await h.close().catch((e: unknown) => Promise.reject(withPath(e, path)));
}

/**
 * Writes `data` to `path` atomically: a temporary file (mode 0600) in the
 * same folder, fsync, rename over `path`, fsync of the folder. Readers see the
 * old file or the new one, never a part; after a crash only a hidden
 * temporary file can be left behind.
 */
export async function writeFileAtomic(path: string, data: string | Uint8Array, mode = FILE_MODE): Promise<void> {
  const tmp = tempPathFor(path);
  await writeNewFile(tmp, data, mode);
  try {
    await rename(tmp, path);
  } catch (e) {
    await unlink(tmp).catch(() => undefined);
    throw e;
  }
  await fsyncDir(dirname(path));
}

/**
 * Creates a folder with mode 0700 (chmod'ed, whatever the umask).
 * Returns false when it already existed as a folder (left as it is).
 */
export async function ensurePrivateDir(path: string): Promise<boolean> {
  try {
    await mkdir(path, { mode: DIR_MODE });
  } catch (e) {
    if (errnoCode(e) === 'EEXIST') return false;
    throw e;
  }
  await chmod(path, DIR_MODE);
  return true;
}

/**
 * Checks a path relative to a set folder: forward slashes, no empty, '.' or
 * '..' segments, no leading dot (hidden names are kvmbak's temporary files),
 * nothing `sha256sum -c` would have to escape (backslash, newline). Returns
 * what is wrong, or null when the path is fine.
 */
export function relativePathProblem(rel: string): string | null {
  if (rel.length === 0) return 'is empty';
  if (rel.startsWith('/')) return 'must be relative to the set folder, not absolute';
  if (/[\0\n\r\\]/.test(rel)) return 'must not contain NUL, newline or backslash characters';
  for (const seg of rel.split('/')) {
    if (seg === '' || seg === '.' || seg === '..') return "must not contain empty, '.' or '..' segments";
    if (seg.startsWith('.')) return "must not have a segment starting with '.'";
    if (Buffer.byteLength(seg) > 255) return 'has a segment longer than 255 bytes';
  }
  return null;
}

/** What a file system entry is, in words ('a symbolic link', 'a FIFO', ...), from its stat. */
export function entryKind(st: Stats): string {
  if (st.isFile()) return 'a regular file';
  if (st.isDirectory()) return 'a folder';
  if (st.isSymbolicLink()) return 'a symbolic link';
  if (st.isFIFO()) return 'a FIFO (named pipe)';
  if (st.isSocket()) return 'a socket';
  if (st.isBlockDevice()) return 'a block device';
  if (st.isCharacterDevice()) return 'a character device';
  return 'not a regular file';
}

/** A file that must be a regular file is not one (or is reached through a link). */
export class NotRegularFileError extends KvmbakError {
  declare readonly code: 'KVMBAK_NOT_A_REGULAR_FILE';
  readonly path: string;
  /** What it is instead, in words: 'a symbolic link', 'a folder', 'a FIFO (named pipe)', ... */
  readonly kind: string;

  constructor(path: string, kind: string) {
    super(`${path} is ${kind}, not a regular file`, 'KVMBAK_NOT_A_REGULAR_FILE');
    this.path = path;
    this.kind = kind;
  }
}
Object.defineProperty(NotRegularFileError.prototype, 'name', {
  value: 'NotRegularFileError',
  enumerable: false,
  configurable: true,
  writable: true,
});

export function isNotRegularFileError(e: unknown): e is NotRegularFileError {
  return isKvmbakError(e) && e.code === 'KVMBAK_NOT_A_REGULAR_FILE';
}

/**
 * Opens a regular file for reading without following a symbolic link at its
 * last component (O_NOFOLLOW) and without blocking on a FIFO (O_NONBLOCK: a
 * FIFO with no writer opens at once, then fails the check below instead of
 * hanging). Throws NotRegularFileError for anything but a regular file; fs
 * errors (ENOENT, EACCES) pass through.
 */
export async function openRegularFile(path: string): Promise<FileHandle> {
  let h: FileHandle;
  try {
    h = await open(path, fsConstants.O_RDONLY | fsConstants.O_NOFOLLOW | fsConstants.O_NONBLOCK);
  } catch (e) {
    if (errnoCode(e) === 'ELOOP') throw new NotRegularFileError(path, 'a symbolic link');
    throw e;
  }
  try {
    const st = await h.stat();
    if (!st.isFile()) throw new NotRegularFileError(path, entryKind(st));
    return h;
  } catch (e) {
    await h.close().catch(() => undefined);
    throw e;
  }
}

/**
 * Opens `rel` inside the folder `root` as openRegularFile does, after
 * checking that every folder on the way (e.g. `disks` of 'disks/vda.img.gz')
 * is a real folder, not a symbolic link that could lead outside `root`.
 */
export async function openRegularFileIn(root: string, rel: string): Promise<FileHandle> {
  const segments = rel.split('/');
  let dir = root;
  for (const seg of segments.slice(0, -1)) {
    dir = join(dir, seg);
    const st = await lstat(dir);
    if (!st.isDirectory()) throw new NotRegularFileError(join(root, rel), `reached through ${dir}, which is ${entryKind(st)}`);
  }
  return openRegularFile(join(root, rel));
}

/**
 * Reads a whole regular file (see openRegularFile) of at most `maxBytes`;
 * a larger one is an error that says so, without reading it.
 */
export async function readRegularFile(path: string, maxBytes: number): Promise<Buffer> {
  const h = await openRegularFile(path);
  try {
    const { size } = await h.stat();
    if (size > maxBytes) {
      throw new KvmbakError(`${path} has ${size} bytes, more than the ${maxBytes} such a file can have`, 'KVMBAK_FILE_TOO_LARGE');
    }
    return await h.readFile();
  } finally {
    await h.close();
  }
}

/** Streams an open file from its start through sha256; `onBytes` gets each chunk's length. */
export async function sha256Handle(
  h: FileHandle,
  options: { signal?: AbortSignal | undefined; onBytes?: (n: number) => void } = {},
): Promise<{ sha256: string; bytes: number }> {
  const hash = createHash('sha256');
  const buf = Buffer.allocUnsafe(1 << 20);
  let bytes = 0;
  for (;;) {
    throwIfAborted(options.signal);
    const { bytesRead } = await h.read(buf, 0, buf.length, bytes);
    if (bytesRead === 0) break;
    hash.update(buf.subarray(0, bytesRead));
    bytes += bytesRead;
    options.onBytes?.(bytesRead);
  }
  return { sha256: hash.digest('hex'), bytes };
}
