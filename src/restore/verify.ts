/**
 * verifySet(): a set checked end to end. The file level (store's
 * verifySetFiles: every file there with its size and sha256, SHA256SUMS in
 * agreement, nothing extra) plus, unless `quick`, every image decompressed
 * (in parallel, with the member index) and its raw size and sha256 compared
 * with the manifest. Each image is read once: its file sha256 comes from the
 * same pass.
 */
import { hashImage, isArchiveError } from '../archive/index.js';
import { isAbortError, throwIfAborted } from '../errors.js';
import type { BackupMode } from '../manifest/index.js';
import { type FileCheck, verifySetFiles } from '../store/index.js';
import { resolve } from 'node:path';

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
  /** One line per problem, each naming its file. */
  problems: string[];
  /** Not problems: permissions wider than 0600/0700. */
  warnings: string[];
  /** Compressed bytes read. */
  bytesRead: number;
  seconds: number;
}

export interface VerifySetProgress {
  /** 'verify': hashing a file; 'hash': decompressing an image (bytes are raw bytes). */
  phase: 'verify' | 'hash';
  file: string;
  bytesDone: number;
  bytesTotal: number;
  rate?: number;
}

export interface VerifySetOptions {
  /** File checksums only; no decompression. */
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
  return {
    path,
    domain: v.manifest.domain.name,
    createdAt: v.manifest.createdAt,
    mode: v.manifest.mode,
    quick,
    ok: problems.length === 0,
    files: v.files,
    images,
    problems,
    warnings: v.warnings,
    bytesRead,
    seconds: (performance.now() - t0) / 1000,
  };
}
