/**
 * Small file-system (and JSON) helpers shared by manifest/, store/ and restore/
 * (internal: not exported from the package). Backup data is private: files 0600, folders
 * 0700, set with an explicit chmod so the process umask never matters.
 */
import { randomBytes } from 'node:crypto';
import { chmod, mkdir, open, rename, unlink } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';

export const FILE_MODE = 0o600;
export const DIR_MODE = 0o700;

/** A JSON object (not null, not an array). */
export function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** The errno code of a Node fs error, if any. */
export function errnoCode(e: unknown): string | undefined {
  const code = (e as { code?: unknown } | null)?.code;
  return typeof code === 'string' ? code : undefined;
}

/** fsync a folder so the names created, renamed or removed in it are durable. */
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
    throw e;
  }
  await h.close();
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
