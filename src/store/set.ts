/**
 * Creating, filling, committing and deleting backup sets.
 *
 *   DEST/DOMAIN/20261126T031500Z/   folder 0700, every file 0600
 *
 * A set is complete exactly when manifest.json exists: commitSet writes
 * SHA256SUMS, then the manifest, last and atomically. Until then the set is
 * "incomplete" for listSets, and prune removes it once it is a day old.
 */
import { createHash } from 'node:crypto';
import { type FileHandle, chmod, lstat, mkdir, open, readdir, rename, rm, stat, unlink } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { Writable } from 'node:stream';
import { ConfigError } from '../errors.js';
import { MANIFEST_FILE, ManifestError, type Manifest, isManifestError, readManifest, validateManifest, writeManifest } from '../manifest/index.js';
import { DIR_MODE, FILE_MODE, ensurePrivateDir, errnoCode, fsyncDir, withPath, relativePathProblem, writeFileAtomic } from '../util/fs.js';
import { type ChecksumEntry, formatChecksums } from './checksums.js';
import { StoreError } from './errors.js';
import { CHECKSUMS_FILE, PARTIAL_SUFFIX, RESERVED_FILES, expectedFiles, isUnfinishedName, walkSet } from './layout.js';
import { assertDomainName, formatSetId, isValidDomainName, parseSetId } from './naming.js';

/** A backup set folder being written (from createSet) or found (from parseSetPath). */
export interface BackupSet {
  /** The destination root, absolute. */
  readonly dest: string;
  readonly domain: string;
  /** The set folder's name, e.g. '20261126T031500Z' or '20261126T031500Z-1'. */
  readonly id: string;
  /** DEST/DOMAIN/ID, absolute. */
  readonly path: string;
  /** The start time the id encodes (to the second). */
  readonly time: Date;
}

/** Most sets one domain can start within one second ('-1' ... '-999'). */
const MAX_SEQ = 999;

/** Checks that the destination exists and is a folder; returns its absolute path. */
export async function assertDest(dest: string): Promise<string> {
  const root = resolve(dest);
  let isDir: boolean;
  try {
    isDir = (await stat(root)).isDirectory();
  } catch (e) {
    if (errnoCode(e) !== 'ENOENT') throw e;
    throw new StoreError(
      `backup destination ${root} does not exist; create it (mkdir -m 700 ${root}) or mount the backup disk there`,
      'KVMBAK_DEST_NOT_FOUND',
      root,
      { cause: e },
    );
  }
  if (!isDir) {
    throw new StoreError(`backup destination ${root} is not a folder; give a folder`, 'KVMBAK_DEST_NOT_FOUND', root);
  }
  return root;
}

/**
 * The domain folder names to look at under the destination `root`: `[domain]`
 * (validated) when given, else every entry that can be a domain name, except
 * lost+found. Entries that are not folders are the caller's to skip.
 */
export async function domainNames(root: string, domain?: string): Promise<string[]> {
  if (domain !== undefined) {
    assertDomainName(domain);
    return [domain];
  }
  return (await readdir(root)).filter((n) => n !== 'lost+found' && isValidDomainName(n)).sort();
}

/**
 * Why another user could change what is inside the folder `path` (so swap a
 * set under a process that trusts it), or null when only this user (or root)
 * can: it must be a real folder (not a symbolic link), owned by this user or
 * root, and not writable by group or others.
 */
export async function unsafeDirProblem(path: string): Promise<string | null> {
  const st = await lstat(path);
  if (!st.isDirectory()) return st.isSymbolicLink() ? 'it is a symbolic link' : 'it is not a folder';
  const me = typeof process.geteuid === 'function' ? process.geteuid() : null;
  if (me !== null && st.uid !== me && st.uid !== 0) return `it belongs to user id ${st.uid}, not to this user (${me}) or root`;
  if ((st.mode & 0o022) !== 0)
    return `it is writable by ${(st.mode & 0o020) !== 0 ? 'its group' : 'others'} (mode ${(st.mode & 0o7777).toString(8)})`;
  return null;
}

/** Throws StoreError KVMBAK_UNSAFE_DIR when unsafeDirProblem finds one; `what` names the folder ('backup folder'). */
export async function assertPrivateFolder(path: string, what: string): Promise<void> {
  const problem = await unsafeDirProblem(path);
  if (problem === null) return;
  throw new StoreError(
    `${what} ${path} is not safe to use: ${problem}, so another user could change the backups in it; ` +
      `make it yours and private (chown, chmod 700 ${path})`,
    'KVMBAK_UNSAFE_DIR',
    path,
  );
}

/**
 * Creates DEST/DOMAIN (0700) if needed; DEST must exist. An existing
 * DEST/DOMAIN must be private (assertPrivateFolder). Returns its absolute path.
 */
export async function ensureDomainDir(dest: string, domain: string): Promise<string> {
  assertDomainName(domain);
  const root = await assertDest(dest);
  const dir = join(root, domain);
  if (await ensurePrivateDir(dir)) {
    await fsyncDir(root);
  } else if (!(await lstat(dir)).isDirectory()) {
    throw new StoreError(`${dir} is not a folder; move it away so kvmbak can keep ${domain}'s backups there`, 'KVMBAK_DEST_NOT_FOUND', dir);
  } else {
    await assertPrivateFolder(dir, 'backup folder');
  }
  return dir;
}

export interface CreateSetOptions {
  /** The start time to name the set after (default: now). */
  now?: Date;
}

/**
 * Creates a new, empty set folder DEST/DOMAIN/<UTC time> (0700), exclusively:
 * when a set of that second exists, the next free '-1', '-2', ... is taken.
 * DEST must exist (a missing destination usually means an unmounted disk).
 */
export async function createSet(dest: string, domain: string, options: CreateSetOptions = {}): Promise<BackupSet> {
  const domainDir = await ensureDomainDir(dest, domain);
  const now = options.now ?? new Date();
  for (let seq = 0; seq <= MAX_SEQ; seq++) {
    const id = formatSetId(now, seq);
    const path = join(domainDir, id);
    try {
      await mkdir(path, { mode: DIR_MODE });
    } catch (e) {
      if (errnoCode(e) === 'EEXIST') continue;
      throw e;
    }
    await chmod(path, DIR_MODE);
    await fsyncDir(domainDir);
    const parsed = parseSetId(id);
    return { dest: dirname(domainDir), domain, id, path, time: parsed!.time };
  }
  throw new StoreError(
    `cannot create a backup set for ${domain}: ${MAX_SEQ + 1} sets already exist for ${formatSetId(now)}`,
    'KVMBAK_SET_EXISTS',
    domainDir,
  );
}

/**
 * Reads DEST, DOMAIN and the id back from a set folder's path. Throws
 * StoreError KVMBAK_NOT_A_SET when the path does not end in DOMAIN/<set id>,
 * or (with `dest`) is not directly under DEST/DOMAIN.
 */
export function parseSetPath(setPath: string, dest?: string): BackupSet {
  const path = resolve(setPath);
  const id = basename(path);
  const domainDir = dirname(path);
  const domain = basename(domainDir);
  const parsed = parseSetId(id);
  const why =
    parsed === null
      ? `its name ${JSON.stringify(id)} is not a set name (YYYYMMDDTHHMMSSZ)`
      : !isValidDomainName(domain) || domainDir === dirname(domainDir)
        ? 'it is not inside a domain folder'
        : dest !== undefined && dirname(domainDir) !== resolve(dest)
          ? `it is not under the destination ${resolve(dest)}`
          : null;
  if (why !== null) {
    throw new StoreError(`${path} is not a kvmbak backup set: ${why}`, 'KVMBAK_NOT_A_SET', path);
  }
  return { dest: dirname(domainDir), domain, id, path, time: parsed!.time };
}

/**
 * Reads a set's manifest as readManifest does (never following a link,
 * never waiting on a FIFO), and names what a folder without one is: an
 * incomplete backup when its name is a set id, otherwise not a backup set
 * folder at all (DEST, DEST/DOMAIN or any other folder must never be called
 * an incomplete backup to delete). Throws ManifestError, or StoreError
 * KVMBAK_NOT_A_SET.
 */
export async function readSetManifest(setPath: string): Promise<Manifest> {
  const path = resolve(setPath);
  try {
    return await readManifest(path);
  } catch (e) {
    if (!isManifestError(e, 'KVMBAK_MANIFEST_MISSING')) throw e;
    const isDir = await stat(path).then(
      (st) => st.isDirectory(),
      () => false,
    );
    if (!isDir) throw e;
    if (parseSetId(basename(path)) === null) {
      throw new StoreError(
        `${path} is not a backup set folder (DEST/DOMAIN/<set id>, e.g. /backup/web01/20261126T031500Z); kvmbak list DEST shows the sets`,
        'KVMBAK_NOT_A_SET',
        path,
        { cause: e },
      );
    }
    throw new ManifestError(
      `incomplete backup: no ${MANIFEST_FILE} in ${path} (the backup did not finish, or is still running); kvmbak prune removes it once it is a day old`,
      'KVMBAK_MANIFEST_MISSING',
      { path },
      { cause: e },
    );
  }
}

/** The absolute path of `rel` inside the set; throws ConfigError for unsafe or reserved names. */
export function setFilePath(set: BackupSet, rel: string): string {
  const problem = relativePathProblem(rel);
  if (problem !== null) throw new ConfigError(`file name ${JSON.stringify(rel)} in a backup set ${problem}`, 'file');
  if (RESERVED_FILES.includes(rel)) {
    throw new ConfigError(`${rel} is written by commitSet only, not as a set file`, 'file');
  }
  if (rel.endsWith(PARTIAL_SUFFIX)) throw new ConfigError(`file name ${rel} must not end in ${PARTIAL_SUFFIX}`, 'file');
  return join(set.path, rel);
}

/** Creates the folders leading to `rel` inside the set (0700). */
async function ensureParents(set: BackupSet, rel: string): Promise<void> {
  const segments = rel.split('/').slice(0, -1);
  let dir = set.path;
  for (const seg of segments) {
    const parent = dir;
    dir = join(dir, seg);
    if (await ensurePrivateDir(dir)) await fsyncDir(parent);
  }
}

export interface WrittenFile {
  /** Relative path in the set. */
  file: string;
  path: string;
  bytes: number;
  sha256: string;
}

/** Writes a whole file into the set atomically (0600) and returns its size and sha256. */
export async function writeSetFile(set: BackupSet, rel: string, data: string | Uint8Array): Promise<WrittenFile> {
  const path = setFilePath(set, rel);
  await ensureParents(set, rel);
  const buf = typeof data === 'string' ? Buffer.from(data, 'utf8') : data;
  await writeFileAtomic(path, buf);
  return { file: rel, path, bytes: buf.byteLength, sha256: createHash('sha256').update(buf).digest('hex') };
}

/**
 * A file being streamed into a set: bytes go to `<path>.partial` (0600);
 * commit() makes them durable and gives the file its name, abort() (or
 * disposal without commit) deletes them.
 */
export interface SetFileWriter extends AsyncDisposable {
  /** Relative path in the set. */
  readonly file: string;
  /** The final absolute path. */
  readonly path: string;
  /** Where the bytes are written until commit(). */
  readonly partialPath: string;
  /** Open for writing (positional writes allowed); closed by commit()/abort(). */
  readonly handle: FileHandle;
  /**
   * A stream writing sequentially through `handle` (from its current
   * position); finishing or destroying it leaves the handle open for commit().
   */
  createWriteStream(options?: { highWaterMark?: number }): Writable;
  /** fsync, close, rename to the final name, fsync the folder. Returns the file's size. */
  commit(): Promise<{ file: string; path: string; bytes: number }>;
  /** Closes and deletes the partial file. Safe to call twice, and after commit (then it does nothing). */
  abort(): Promise<void>;
}

/** Writes all of `buf` at the handle's current position (a write may be short, e.g. near ENOSPC). */
async function writeAll(handle: FileHandle, buf: Buffer): Promise<void> {
  let done = 0;
  while (done < buf.length) {
    const { bytesWritten } = await handle.write(buf, done, buf.length - done);
    if (bytesWritten === 0) throw new Error('write wrote 0 bytes');
    done += bytesWritten;
  }
}

/** Opens `rel` in the set for streaming; see SetFileWriter. */
export async function openSetFile(set: BackupSet, rel: string): Promise<SetFileWriter> {
  const path = setFilePath(set, rel);
  const partialPath = `${path}${PARTIAL_SUFFIX}`;
  await ensureParents(set, rel);
  const handle = await open(partialPath, 'wx', FILE_MODE);
  try {
    await handle.chmod(FILE_MODE);
  } catch (e) {
    await handle.close().catch(() => undefined);
    await unlink(partialPath).catch(() => undefined);
    throw e;
  }
  let state: 'open' | 'committed' | 'aborted' = 'open';
  const abort = async (): Promise<void> => {
    if (state !== 'open') return;
    state = 'aborted';
    await handle.close().catch(() => undefined);
    await unlink(partialPath).catch((e: unknown) => {
      if (errnoCode(e) !== 'ENOENT') throw e;
    });
  };
  return {
    file: rel,
    path,
    partialPath,
    handle,
    createWriteStream(options = {}) {
      // Not handle.createWriteStream(): with autoClose false it keeps a reference
      // on the FileHandle that makes handle.close() wait forever (Node 20).
      return new Writable({
        highWaterMark: options.highWaterMark ?? 1 << 20,
        write(chunk: Buffer, _encoding, callback) {
          writeAll(handle, chunk).then(() => callback(), callback);
        },
      });
    },
    async commit() {
      if (state !== 'open') throw new StoreError(`${rel} was already ${state}`, 'KVMBAK_SET_NOT_READY', path);
      try {
        await handle.sync();
        const { size } = await handle.stat();
        await handle.close();
        state = 'committed';
        await rename(partialPath, path);
        await fsyncDir(dirname(path));
        return { file: rel, path, bytes: size };
      } catch (e) {
        if (state === 'open') await abort();
        else await unlink(partialPath).catch(() => undefined);
        throw withPath(e, partialPath);
      }
    },
    abort,
    async [Symbol.asyncDispose]() {
      await abort();
    },
  };
}

/**
 * Writes SET/SHA256SUMS atomically from `entries` (see checksums.ts for the
 * format). Every listed file must exist in the set as a regular file.
 */
export async function writeChecksums(set: BackupSet, entries: readonly ChecksumEntry[]): Promise<string> {
  const text = formatChecksums(entries);
  for (const e of entries) {
    const st = await lstat(join(set.path, e.file)).catch(() => null);
    if (st === null || !st.isFile()) {
      throw new StoreError(
        `cannot list ${e.file} in ${CHECKSUMS_FILE}: it is not a file in ${set.path}`,
        'KVMBAK_SET_NOT_READY',
        join(set.path, e.file),
      );
    }
  }
  const path = join(set.path, CHECKSUMS_FILE);
  await writeFileAtomic(path, text);
  return path;
}

/**
 * Completes a set: checks that every file the manifest names is there with
 * the recorded size and that nothing unfinished or unexpected is left, sets
 * every file to 0600 and folder to 0700 (whoever wrote them), writes
 * SHA256SUMS from the manifest's checksums, then manifest.json last
 * (atomically, folder fsync'ed). After a crash before the rename the set has
 * no manifest: it is incomplete, never a good-looking broken set.
 */
export async function commitSet(set: BackupSet, manifest: Manifest): Promise<{ manifestPath: string; checksumsPath: string }> {
  const manifestPath = join(set.path, MANIFEST_FILE);
  if (
    await lstat(manifestPath).then(
      () => true,
      () => false,
    )
  ) {
    throw new StoreError(`backup set ${set.path} is already committed`, 'KVMBAK_SET_COMMITTED', manifestPath);
  }
  validateManifest(manifest, `the manifest for ${set.path}`);
  const problems: string[] = [];
  if (manifest.domain.name !== set.domain) {
    problems.push(`the manifest is for domain ${manifest.domain.name}, the set for ${set.domain}`);
  }
  const expected = expectedFiles(manifest);
  const entries = new Map((await walkSet(set.path)).map((e) => [e.rel, e]));
  for (const f of expected) {
    const e = entries.get(f.file);
    if (e === undefined) problems.push(`${f.file} is missing`);
    else if (e.type !== 'file') problems.push(`${f.file} is not a regular file`);
    else if (f.bytes !== null && e.size !== f.bytes) {
      problems.push(`${f.file} has ${e.size} bytes, the manifest says ${f.bytes}`);
    }
  }
  const known = new Set<string>([...expected.map((f) => f.file), CHECKSUMS_FILE]);
  for (const e of entries.values()) {
    if (e.type === 'dir' || known.has(e.rel)) continue;
    if (isUnfinishedName(e.rel)) problems.push(`${e.rel} is an unfinished write`);
    else problems.push(`${e.rel} is not part of the manifest`);
  }
  if (problems.length > 0) {
    throw new StoreError(`cannot commit backup set ${set.path}: ${problems.join('; ')}`, 'KVMBAK_SET_NOT_READY', set.path);
  }
  // Files written by others (libvirt's save image, the archiver) end up private too.
  for (const e of entries.values()) {
    const want = e.type === 'dir' ? DIR_MODE : FILE_MODE;
    if (e.mode !== want) await chmod(join(set.path, e.rel), want);
  }
  const checksumsPath = await writeChecksums(
    set,
    expected.map((f) => ({ file: f.file, sha256: f.sha256 })),
  );
  await writeManifest(set.path, manifest);
  return { manifestPath, checksumsPath };
}

/**
 * Deletes a set folder. Refuses (StoreError KVMBAK_NOT_A_SET) anything that
 * does not look like DEST/DOMAIN/<set id> (under `dest` when given) or is a
 * symbolic link. The manifest goes first, so an interrupted delete leaves an
 * incomplete set (pruned later), never a complete-looking set with files
 * missing. Returns false when the folder was already gone.
 */
export async function deleteSet(target: string | BackupSet, options: { dest?: string } = {}): Promise<boolean> {
  const set = parseSetPath(typeof target === 'string' ? target : target.path, options.dest);
  let st;
  try {
    st = await lstat(set.path);
  } catch (e) {
    if (errnoCode(e) === 'ENOENT') return false;
    throw e;
  }
  if (!st.isDirectory()) {
    throw new StoreError(`${set.path} is not a kvmbak backup set: it is not a folder`, 'KVMBAK_NOT_A_SET', set.path);
  }
  try {
    await unlink(join(set.path, MANIFEST_FILE));
    await fsyncDir(set.path);
  } catch (e) {
    if (errnoCode(e) !== 'ENOENT') throw e;
  }
  await rm(set.path, { recursive: true, force: true });
  await fsyncDir(dirname(set.path));
  return true;
}
