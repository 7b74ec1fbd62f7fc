/**
 * verifySet()/verifySets(): sets checked end to end. The file level (store's
 * verifySetFiles: every file there with its size and sha256, SHA256SUMS in
 * agreement, nothing extra) plus, unless `quick`, every image decompressed
 * (in parallel, with the member index) and its raw size and sha256 compared
 * with the manifest. Each image is read once: its file sha256 comes from the
 * same pass.
 *
 * Chunked sets (kvmbak/2): every chunk list is read and checked against the
 * manifest, and every chunk it names is decompressed and its sha256 compared
 * with its id (`quick`: the chunk file exists and is not empty). Sets verified
 * in one call share the check: a chunk many of them use is checked once (see
 * chunks.ts for the memory this takes). A missing or damaged chunk is one
 * problem line naming the chunk and every set of the destination that uses it.
 */
import { hashImage, isArchiveError } from '../archive/index.js';
import { isAbortError, throwIfAborted } from '../errors.js';
import type { BackupMode } from '../manifest/index.js';
import { type FileCheck, type SetVerification, verifySetFiles } from '../store/index.js';
import { resolve } from 'node:path';
import { type ChunkCheckResult, type ChunkListRef, type ChunkProblem, checkChunkLists, chunkStoreOfSet } from './chunks.js';

export type ChunkListCheckStatus = 'ok' | 'damaged' | 'unreadable' | 'not-checked';

/** The chunk-level check of one chunk list of a set (kvmbak/2). */
export interface ChunkListCheck {
  /** The disk target; null for the memory state's list. */
  target: string | null;
  /** Relative path of the list in the set. */
  file: string;
  /**
   * ok: the list matches the manifest and every chunk it names checked out. damaged: some of
   * its chunks are missing or damaged (see chunkProblems). unreadable: the list itself cannot be
   * used (malformed, truncated, not the manifest's, no chunk store): see `error`. not-checked:
   * the list failed the file-level check already.
   */
  status: ChunkListCheckStatus;
  chunks: number;
  rawBytes: number;
  error?: string;
}

export type ImageCheckStatus = 'ok' | 'raw-mismatch' | 'damaged' | 'unreadable' | 'not-checked';

/** The decompression check of one image. */
export interface ImageCheck {
  target: string;
  /** Relative path in the set. */
  file: string;
  /**
   * ok: decompresses to the recorded raw size and sha256. raw-mismatch: it
   * decompresses, to other data. damaged: truncated or corrupt gzip (see
   * `error`). unreadable: missing or not a file. not-checked: `quick`.
   */
  status: ImageCheckStatus;
  expectedRawBytes: number;
  rawBytes: number | null;
  expectedRawSha256: string;
  rawSha256: string | null;
  /** What went wrong, for damaged and unreadable images. */
  error?: string;
  /** The ArchiveError code, when there is one. */
  code?: string;
  seconds: number;
}

export interface SetVerifyResult {
  path: string;
  domain: string;
  createdAt: string;
  mode: BackupMode;
  quick: boolean;
  /** No problem at all. */
  ok: boolean;
  /** File level: one entry per file (data files, then extra ones). */
  files: FileCheck[];
  /** Image level (status not-checked with `quick`). */
  images: ImageCheck[];
  /** Chunk level, one entry per chunk list (kvmbak/2; empty for image sets). */
  chunkLists: ChunkListCheck[];
  /** The missing or damaged chunks this set uses, each with every set of the destination that uses it. */
  chunkProblems: ChunkProblem[];
  /** One line per problem, each naming its file. */
  problems: string[];
  /** Not problems: permissions wider than 0600/0700. */
  warnings: string[];
  /** Compressed bytes read. */
  bytesRead: number;
  seconds: number;
}

export interface VerifySetProgress {
  /**
   * 'verify': hashing a file; 'hash': decompressing an image (bytes are raw bytes); 'chunks':
   * checking the chunks of a chunk list (`file`): bytesDone is the raw bytes checked so far over
   * all lists, chunksDone/chunksTotal count chunks (chunksTotal counts shared chunks once per
   * list that names them, so the distinct chunks checked end below it).
   */
  phase: 'verify' | 'hash' | 'chunks';
  file: string;
  bytesDone: number;
  bytesTotal: number;
  rate?: number;
  chunksDone?: number;
  chunksTotal?: number;
}

export interface VerifySetOptions {
  /** File checksums only; no decompression (for chunks: each chunk file present and not empty). */
  quick?: boolean;
  /** Decompression threads (default: available parallelism). */
  threads?: number;
  signal?: AbortSignal;
  onProgress?: (event: VerifySetProgress) => void;
}

/**
 * Verifies a set. Throws ManifestError when it has no usable manifest
 * (incomplete, damaged, foreign, newer); every other problem is reported in
 * the result (`ok` false), each line naming the file.
 */
export async function verifySet(setPath: string, options: VerifySetOptions = {}): Promise<SetVerifyResult> {
  return (await verifySets([setPath], options)).sets[0]!;
}

/** Several sets verified in one call (see the module comment). */
export interface VerifySetsResult {
  quick: boolean;
  /** Every set without a problem, and every chunk good. */
  ok: boolean;
  /** One result per set, in the order given. */
  sets: SetVerifyResult[];
  /** The chunk stores checked: distinct chunks and raw bytes checked in each. */
  stores: { store: string; chunksChecked: number; bytesChecked: number }[];
  /** Every missing or damaged chunk, once, with every set of its destination that uses it. */
  chunkProblems: ChunkProblem[];
  seconds: number;
}

/**
 * Verifies sets, sharing the chunk check: each distinct chunk of a store is checked once for all
 * the sets given. Throws ManifestError for a set without a usable manifest (before checking any
 * chunk); every other problem is reported in the results.
 */
export async function verifySets(setPaths: readonly string[], options: VerifySetOptions = {}): Promise<VerifySetsResult> {
  const t0 = performance.now();
  const quick = options.quick ?? false;
  const sets: SetVerifyResult[] = [];
  const files: SetVerification[] = [];
  for (const p of setPaths) {
    const r = await verifyOne(p, options);
    sets.push(r.result);
    files.push(r.files);
  }
  // the chunk lists that passed the file level, grouped by store
  const byStore = new Map<string, ChunkListRef[]>();
  for (const [i, v] of files.entries()) {
    for (const l of v.chunkLists) {
      const check = sets[i]!.chunkLists.find((c) => c.file === l.file)!;
      if (!l.fileOk) {
        check.status = 'not-checked';
        check.error = `${l.file} failed the file check`;
        continue;
      }
      check.status = 'ok'; // until the chunk check finds otherwise
      const store = chunkStoreOfSet(v.path);
      const refs = byStore.get(store) ?? [];
      refs.push({ set: v.path, file: l.file, path: l.path, rawBytes: l.rawBytes, rawSha256: l.rawSha256, chunkSize: l.chunkSize, chunks: l.chunks });
      byStore.set(store, refs);
    }
  }
  const stores: VerifySetsResult['stores'] = [];
  const chunkProblems: ChunkProblem[] = [];
  for (const [store, refs] of byStore) {
    throwIfAborted(options.signal);
    const tc = performance.now();
    const c: ChunkCheckResult = await checkChunkLists(store, refs, {
      quick,
      ...(options.signal ? { signal: options.signal } : {}),
      onProgress: (p) => {
        const s = (performance.now() - tc) / 1000;
        options.onProgress?.({
          phase: 'chunks',
          file: p.file,
          bytesDone: p.bytesDone,
          bytesTotal: p.bytesDone,
          ...(s > 0 ? { rate: p.bytesDone / s } : {}),
          chunksDone: p.chunksDone,
          chunksTotal: p.chunksTotal,
        });
      },
    });
    stores.push({ store, chunksChecked: c.chunksChecked, bytesChecked: c.bytesChecked });
    chunkProblems.push(...c.chunkProblems);
    for (const [i, r] of sets.entries()) {
      if (!refs.some((x) => x.set === files[i]!.path)) continue;
      for (const lp of c.listProblems.filter((x) => x.set === r.path)) {
        const check = r.chunkLists.find((x) => x.file === lp.file)!;
        check.status = 'unreadable';
        check.error = lp.message;
        r.problems.push(lp.message);
      }
      const mine = c.chunkProblems.filter((cp) => cp.sets.includes(r.path));
      for (const cp of mine) {
        r.chunkProblems.push(cp);
        r.problems.push(cp.message);
      }
      for (const check of r.chunkLists) {
        if (check.status === 'ok' && mine.some((cp) => cp.files.includes(resolve(r.path, check.file)))) check.status = 'damaged';
      }
      r.ok = r.problems.length === 0;
    }
  }
  const seconds = (performance.now() - t0) / 1000;
  return { quick, ok: sets.every((r) => r.ok) && chunkProblems.length === 0, sets, stores, chunkProblems, seconds };
}

async function verifyOne(setPath: string, options: VerifySetOptions): Promise<{ result: SetVerifyResult; files: SetVerification }> {
  const t0 = performance.now();
  const path = resolve(setPath);
  const quick = options.quick ?? false;
  const v = await verifySetFiles(path, {
    skipImageHashes: !quick,
    ...(options.signal ? { signal: options.signal } : {}),
    onProgress: (p) => options.onProgress?.({ phase: 'verify', file: p.file, bytesDone: p.bytesDone, bytesTotal: p.bytesTotal }),
  });
  const problems = [...v.problems];
  let bytesRead = v.bytesHashed;
  const images: ImageCheck[] = [];
  for (const img of v.images) {
    throwIfAborted(options.signal);
    const check: ImageCheck = {
      target: img.target,
      file: img.file,
      status: 'not-checked',
      expectedRawBytes: img.rawBytes,
      rawBytes: null,
      expectedRawSha256: img.rawSha256,
      rawSha256: null,
      seconds: 0,
    };
    images.push(check);
    if (quick) continue;
    const fileCheck = v.files.find((f) => f.file === img.file)!;
    if (fileCheck.status === 'missing' || fileCheck.status === 'not-a-file') {
      check.status = 'unreadable';
      check.error = `${img.file} is ${fileCheck.status === 'missing' ? 'missing' : 'not a regular file'}`;
      continue;
    }
    const ti = performance.now();
    try {
      const h = await hashImage(img.path, {
        index: { chunkSize: img.chunkSize, bytes: img.rawBytes, members: img.members, storedBytes: img.storedBytes },
        ...(options.threads !== undefined ? { threads: options.threads } : {}),
        ...(options.signal ? { signal: options.signal } : {}),
        onProgress: (p) => options.onProgress?.({ phase: 'hash', file: img.file, bytesDone: p.bytesDone, bytesTotal: img.rawBytes, rate: p.rate }),
      });
      bytesRead += h.storedBytes;
      check.rawBytes = h.bytes;
      check.rawSha256 = h.sha256;
      // the file-level sha256, from the same read
      if (fileCheck.status === 'ok') {
        fileCheck.actualSha256 = h.fileSha256;
        if (h.fileSha256 !== fileCheck.expectedSha256) {
          fileCheck.status = 'checksum-mismatch';
          problems.push(`${img.file}: sha256 differs from the manifest (the file is damaged)`);
        }
      }
      if (h.bytes !== img.rawBytes || h.sha256 !== img.rawSha256) {
        check.status = 'raw-mismatch';
        problems.push(
          h.bytes !== img.rawBytes
            ? `${img.file}: decompresses to ${h.bytes} bytes, the manifest says ${img.rawBytes}`
            : `${img.file}: the decompressed data's sha256 differs from the manifest (the disk image is damaged)`,
        );
      } else {
        check.status = 'ok';
      }
    } catch (e) {
      if (isAbortError(e) || !isArchiveError(e)) throw e;
      check.status = 'damaged';
      check.code = e.code;
      check.error = e.message;
      problems.push(`${img.file}: ${e.message}`);
      if (fileCheck.status === 'ok') {
        // the file could not be read to its end: its sha256 cannot match
        fileCheck.status = e.code === 'KVMBAK_ARCHIVE_TRUNCATED' ? 'size-mismatch' : 'checksum-mismatch';
      }
    } finally {
      check.seconds = (performance.now() - ti) / 1000;
    }
  }
  const result: SetVerifyResult = {
    path,
    domain: v.manifest.domain.name,
    createdAt: v.manifest.createdAt,
    mode: v.manifest.mode,
    quick,
    ok: problems.length === 0,
    files: v.files,
    images,
    chunkLists: v.chunkLists.map((l) => ({ target: l.target, file: l.file, status: 'not-checked', chunks: l.chunks, rawBytes: l.rawBytes })),
    chunkProblems: [],
    problems,
    warnings: v.warnings,
    bytesRead,
    seconds: (performance.now() - t0) / 1000,
  };
  return { result, files: v };
}
