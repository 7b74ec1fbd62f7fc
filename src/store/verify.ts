/**
 * File-level verification of a backup set: every data file the manifest
 * names is there with its size and sha256, SHA256SUMS agrees with the
 * manifest, nothing unexpected lies around. Hashing streams each file once.
 *
 * Decompressing the images and checking their raw sha256 is the archive
 * module's job: the result lists every image with what it must decompress
 * to (rawBytes, rawSha256, chunkSize, member offsets) for that next step,
 * and every chunk list (kvmbak/2): a chunked disk's identity is its list,
 * checked here like any file, and each chunk's id, checked by restore/.
 */
import { stat } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { throwIfAborted } from '../errors.js';
import { MANIFEST_FILE, type Manifest, type ManifestChunks, isChunkedMemory } from '../manifest/index.js';
import {
  DIR_MODE,
  FILE_MODE,
  errnoCode,
  isNotRegularFileError,
  openRegularFile,
  openRegularFileIn,
  readRegularFile,
  sha256Handle,
} from '../util/fs.js';
import { parseChecksums } from './checksums.js';
import { CHECKSUMS_FILE, type ExpectedFile, expectedFiles, isUnfinishedName, walkSet } from './layout.js';
import { parseSetId } from './naming.js';
import { readSetManifest, unsafeDirProblem } from './set.js';

export type FileCheckStatus = 'ok' | 'missing' | 'not-a-file' | 'size-mismatch' | 'checksum-mismatch' | 'extra' | 'unfinished' | 'not-checked';

export interface FileCheck {
  /** Path relative to the set folder. */
  file: string;
  kind: ExpectedFile['kind'] | 'extra';
  status: FileCheckStatus;
  expectedBytes: number | null;
  actualBytes: number | null;
  expectedSha256: string | null;
  /** Computed only when the size matched (a wrong size already condemns the file). */
  actualSha256: string | null;
}

/**
 * A chunk list (kvmbak/2) for the next verification step: the chunks it names, in the
 * destination's chunk store, each checked against its id (restore/ does that).
 */
export interface ChunkListToVerify {
  /** The disk target; null for the memory state's list. */
  target: string | null;
  /** Relative path in the set, e.g. 'disks/vda.chunks' or 'memory.chunks'. */
  file: string;
  /** Absolute path. */
  path: string;
  /** The list file passed the file-level checks (size, sha256). */
  fileOk: boolean;
  rawBytes: number;
  /** The whole data's sha256: the memory state's, and a disk's in sets of older kvmbak; else undefined. */
  rawSha256: string | undefined;
  chunkSize: number;
  chunks: number;
}

/** An image for the next verification step (decompress, check raw sha256 and members). */
export interface ImageToVerify {
  target: string;
  file: string;
  /** Absolute path. */
  path: string;
  /** The compressed file passed the file-level checks. */
  fileOk: boolean;
  storedBytes: number;
  rawBytes: number;
  rawSha256: string;
  chunkSize: number;
  members: number[];
  zeroChunks: number;
}

export interface SetVerification {
  path: string;
  manifest: Manifest;
  /** No problem found (warnings do not count). */
  ok: boolean;
  files: FileCheck[];
  /** One line per problem: what is wrong with which file. */
  problems: string[];
  /**
   * The problems that are only files the set should not hold (extra or
   * left over from an unfinished write): also in `problems`. The set's own
   * files can be fine all the same (restore goes on, with a warning).
   */
  strays: string[];
  /** Things that do not make the set unusable (permissions wider than 0600/0700). */
  warnings: string[];
  images: ImageToVerify[];
  /** The chunk lists of chunked disks and of a chunked memory state (kvmbak/2), for the chunk check. */
  chunkLists: ChunkListToVerify[];
  /** Bytes read and hashed. */
  bytesHashed: number;
}

export interface VerifyProgress {
  phase: 'verify';
  /** The file being hashed. */
  file: string;
  /** Bytes hashed so far, over all files. */
  bytesDone: number;
  bytesTotal: number;
}

export interface VerifyOptions {
  signal?: AbortSignal;
  /** Called at most every `progressIntervalMs` and at the end of each file. */
  onProgress?: (p: VerifyProgress) => void;
  progressIntervalMs?: number;
  /**
   * Leave the sha256 of the image files to the caller, who decompresses them
   * anyway and gets the compressed file's sha256 there (one read instead of
   * two): images pass the size check here with `actualSha256` null.
   */
  skipImageHashes?: boolean;
  /**
   * Data files (relative paths) not to check at all, e.g. the memory state
   * of a restore that does not use it: status 'not-checked', no problem.
   */
  skipFiles?: readonly string[];
}

/** The largest SHA256SUMS read (one line per data file). */
const MAX_CHECKSUMS_BYTES = 1024 * 1024;

/**
 * Streams a regular file through sha256, never following a symbolic link or
 * waiting on a FIFO (NotRegularFileError); `onBytes` gets each chunk's length.
 */
export async function sha256File(
  path: string,
  options: { signal?: AbortSignal | undefined; onBytes?: (n: number) => void } = {},
): Promise<{ sha256: string; bytes: number }> {
  throwIfAborted(options.signal);
  const h = await openRegularFile(path);
  try {
    return await sha256Handle(h, options);
  } finally {
    await h.close();
  }
}

/**
 * Verifies a set at file level. Throws ManifestError when the set has no
 * usable manifest (incomplete, damaged, foreign, newer); everything else is
 * reported in the result.
 */
export async function verifySetFiles(setPath: string, options: VerifyOptions = {}): Promise<SetVerification> {
  setPath = resolve(setPath);
  const manifest = await readSetManifest(setPath);
  const expected = expectedFiles(manifest);
  const skip = new Set(options.skipFiles ?? []);
  const entries = new Map((await walkSet(setPath)).map((e) => [e.rel, e]));
  const problems: string[] = [];
  const strays: string[] = [];
  const warnings: string[] = [];
  const files: FileCheck[] = [];

  // SHA256SUMS must list exactly the manifest's data files, with the same hashes.
  let sumsText: string | null = null;
  try {
    sumsText = (await readRegularFile(join(setPath, CHECKSUMS_FILE), MAX_CHECKSUMS_BYTES)).toString('utf8');
  } catch (e) {
    const code = errnoCode(e);
    if (isNotRegularFileError(e)) problems.push(`${CHECKSUMS_FILE} is ${e.kind}, not a regular file`);
    else if (code === 'KVMBAK_FILE_TOO_LARGE') problems.push(`${CHECKSUMS_FILE} is larger than ${MAX_CHECKSUMS_BYTES} bytes`);
    else if (code === 'ENOENT') problems.push(`${CHECKSUMS_FILE} is missing`);
    else throw e;
  }
  if (sumsText !== null) {
    const sums = parseChecksums(sumsText);
    for (const p of sums.problems) problems.push(`${CHECKSUMS_FILE}: ${p}`);
    const listed = new Map(sums.entries.map((e) => [e.file, e.sha256]));
    for (const f of expected) {
      const sha = listed.get(f.file);
      if (sha === undefined) problems.push(`${CHECKSUMS_FILE} does not list ${f.file}`);
      else if (sha !== f.sha256) problems.push(`${CHECKSUMS_FILE} and the manifest disagree on the sha256 of ${f.file}`);
    }
    for (const e of sums.entries) {
      if (!expected.some((f) => f.file === e.file)) {
        problems.push(`${CHECKSUMS_FILE} lists ${e.file}, which the manifest does not`);
      }
    }
  }

  // Sizes first (cheap), then hashes of the files whose size is right.
  const toHash: { f: ExpectedFile; check: FileCheck }[] = [];
  for (const f of expected) {
    const e = entries.get(f.file);
    const check: FileCheck = {
      file: f.file,
      kind: f.kind,
      status: 'ok',
      expectedBytes: f.bytes,
      actualBytes: e?.type === 'file' ? e.size : null,
      expectedSha256: f.sha256,
      actualSha256: null,
    };
    files.push(check);
    if (skip.has(f.file)) {
      check.status = 'not-checked';
    } else if (e === undefined) {
      check.status = 'missing';
      problems.push(`${f.file} is missing`);
    } else if (e.type !== 'file') {
      check.status = 'not-a-file';
      problems.push(`${f.file} is not a regular file`);
    } else if (f.bytes !== null && e.size !== f.bytes) {
      check.status = 'size-mismatch';
      problems.push(`${f.file} has ${e.size} bytes, the manifest says ${f.bytes} (truncated or damaged)`);
    } else if (!(options.skipImageHashes && f.kind === 'image')) {
      toHash.push({ f, check });
    }
  }

  const bytesTotal = toHash.reduce((sum, { check }) => sum + (check.actualBytes ?? 0), 0);
  let bytesDone = 0;
  const interval = options.progressIntervalMs ?? 200;
  for (const { f, check } of toHash) {
    let last = 0;
    const report = (): void => options.onProgress?.({ phase: 'verify', file: f.file, bytesDone, bytesTotal });
    let sha256: string;
    try {
      // opened without following links, also on the way (disks/ must be a real folder)
      const h = await openRegularFileIn(setPath, f.file);
      try {
        ({ sha256 } = await sha256Handle(h, {
          signal: options.signal,
          onBytes: (n) => {
            bytesDone += n;
            const now = Date.now();
            if (options.onProgress && now - last >= interval) {
              last = now;
              report();
            }
          },
        }));
      } finally {
        await h.close();
      }
    } catch (e) {
      if (!isNotRegularFileError(e)) throw e;
      check.status = 'not-a-file';
      problems.push(`${f.file} is ${e.kind}, not a regular file`);
      continue;
    }
    report();
    check.actualSha256 = sha256;
    if (sha256 !== f.sha256) {
      check.status = 'checksum-mismatch';
      problems.push(`${f.file}: sha256 differs from the manifest (the file is damaged)`);
    }
  }

  const rootMode = (await stat(setPath)).mode & 0o7777;
  if (rootMode !== DIR_MODE) warnings.push(`the set folder has mode ${rootMode.toString(8)}, expected 700`);
  if (parseSetId(basename(setPath)) !== null) {
    const unsafe = await unsafeDirProblem(dirname(setPath)).catch(() => null);
    if (unsafe !== null) warnings.push(`the domain folder ${dirname(setPath)} is not private: ${unsafe}`);
  }
  const known = new Set([MANIFEST_FILE, CHECKSUMS_FILE, ...expected.map((f) => f.file)]);
  for (const e of entries.values()) {
    if (e.type === 'dir') {
      if (e.mode !== DIR_MODE) warnings.push(`${e.rel}/ has mode ${e.mode.toString(8)}, expected 700`);
      continue;
    }
    if (e.mode !== FILE_MODE) warnings.push(`${e.rel} has mode ${e.mode.toString(8)}, expected 600`);
    if (known.has(e.rel)) continue;
    const status = isUnfinishedName(e.rel) ? 'unfinished' : 'extra';
    files.push({
      file: e.rel,
      kind: 'extra',
      status,
      expectedBytes: null,
      actualBytes: e.type === 'file' ? e.size : null,
      expectedSha256: null,
      actualSha256: null,
    });
    const line = status === 'unfinished' ? `${e.rel} is left over from an unfinished write` : `${e.rel} is not part of the set`;
    problems.push(line);
    strays.push(line);
  }

  const images: ImageToVerify[] = [];
  const chunkLists: ChunkListToVerify[] = [];
  const listed = (target: string | null, c: ManifestChunks): ChunkListToVerify => ({
    target,
    file: c.file,
    path: join(setPath, c.file),
    fileOk: files.find((f) => f.file === c.file)?.status === 'ok',
    rawBytes: c.rawBytes,
    rawSha256: c.rawSha256,
    chunkSize: c.chunkSize,
    chunks: c.chunks,
  });
  if (manifest.memory !== null && isChunkedMemory(manifest.memory) && !skip.has(manifest.memory.chunks.file)) {
    chunkLists.push(listed(null, manifest.memory.chunks));
  }
  for (const d of manifest.disks) {
    if (d.chunks !== undefined) {
      chunkLists.push(listed(d.target, d.chunks));
      continue;
    }
    const image = d.image;
    if (image === undefined) continue; // the manifest validator requires one of the two
    images.push({
      target: d.target,
      file: image.file,
      path: join(setPath, image.file),
      fileOk: files.find((c) => c.file === image.file)?.status === 'ok',
      storedBytes: image.storedBytes,
      rawBytes: image.rawBytes,
      rawSha256: image.rawSha256,
      chunkSize: image.chunkSize,
      members: image.members,
      zeroChunks: image.zeroChunks,
    });
  }

  return { path: setPath, manifest, ok: problems.length === 0, files, problems, strays, warnings, images, chunkLists, bytesHashed: bytesDone };
}
