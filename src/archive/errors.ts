import { KvmbakError, isKvmbakError, type KvmbakErrorOptions } from '../errors.js';
import { errnoCode } from '../util/errno.js';

export const ARCHIVE_ERROR_CODES = [
  /** The source to pack (or the image to unpack) does not exist. */
  'KVMBAK_SOURCE_MISSING',
  /** The source exists but cannot be read (permissions, a folder, an I/O error). */
  'KVMBAK_SOURCE_UNREADABLE',
  /** The folder the destination should be created in does not exist. */
  'KVMBAK_DEST_DIR_MISSING',
  /** The destination file exists and overwriting was not asked for. */
  'KVMBAK_DEST_EXISTS',
  /** The destination cannot be written (permissions, wrong kind of file, full disk, I/O error). */
  'KVMBAK_DEST_UNWRITABLE',
  /** The destination block device is held exclusively (mounted, used by device-mapper). */
  'KVMBAK_DEST_BUSY',
  /** The destination block device is smaller than the image. */
  'KVMBAK_DEST_TOO_SMALL',
  /** The image ends in the middle of a gzip member. */
  'KVMBAK_ARCHIVE_TRUNCATED',
  /** The image does not decompress: bad header, bad data, bad CRC, trailing garbage. */
  'KVMBAK_ARCHIVE_CORRUPT',
  /** The member index given to unpack/hash does not describe this image. */
  'KVMBAK_ARCHIVE_INDEX',
  /** The image decompressed but its raw sha256 differs from the expected one. */
  'KVMBAK_ARCHIVE_CHECKSUM',
  /** The image decompressed but holds a different number of raw bytes than expected. */
  'KVMBAK_ARCHIVE_SIZE',
  /** A compression worker thread died. */
  'KVMBAK_ARCHIVE_WORKER',
] as const;
export type ArchiveErrorCode = (typeof ARCHIVE_ERROR_CODES)[number];

export interface ArchiveErrorDetails {
  /** The file or device concerned. */
  path?: string;
  /** Offset in the compressed image, when the problem is at a known place. */
  offset?: number;
  /** Offset in the raw data, when known. */
  rawOffset?: number;
}

/** A disk-image problem with a one-line message that says what is wrong and what to do. */
export class ArchiveError extends KvmbakError {
  declare readonly code: ArchiveErrorCode;
  readonly path: string | undefined;
  readonly offset: number | undefined;
  readonly rawOffset: number | undefined;

  constructor(message: string, code: ArchiveErrorCode, details: ArchiveErrorDetails = {}, options: KvmbakErrorOptions = {}) {
    super(message, code, options);
    this.path = details.path;
    this.offset = details.offset;
    this.rawOffset = details.rawOffset;
  }
}
Object.defineProperty(ArchiveError.prototype, 'name', {
  value: 'ArchiveError',
  enumerable: false,
  configurable: true,
  writable: true,
});

export function isArchiveError(e: unknown, code?: ArchiveErrorCode): e is ArchiveError {
  return isKvmbakError(e) && e.name === 'ArchiveError' && (code === undefined || e.code === code);
}

/** Maps a failed read of the source to an ArchiveError. */
export function sourceError(path: string, e: unknown, what = 'source'): ArchiveError {
  if (isKvmbakError(e)) return e as ArchiveError;
  const code = errnoCode(e);
  const detail = (e as Error)?.message ?? String(e);
  switch (code) {
    case 'ENOENT':
      return new ArchiveError(`${what} ${path} does not exist; check the path`, 'KVMBAK_SOURCE_MISSING', { path }, { cause: e });
    case 'ENOTDIR':
      return new ArchiveError(
        `${what} ${path} does not exist (a part of the path is not a folder); check the path`,
        'KVMBAK_SOURCE_MISSING',
        { path },
        { cause: e },
      );
    case 'EACCES':
    case 'EPERM':
      return new ArchiveError(
        `cannot read ${what} ${path}: permission denied; run as a user that can read it (root for block devices)`,
        'KVMBAK_SOURCE_UNREADABLE',
        { path },
        { cause: e },
      );
    case 'EISDIR':
      return new ArchiveError(`${what} ${path} is a folder; give a file or a block device`, 'KVMBAK_SOURCE_UNREADABLE', { path }, { cause: e });
    default:
      return new ArchiveError(`cannot read ${what} ${path}: ${detail}`, 'KVMBAK_SOURCE_UNREADABLE', { path }, { cause: e });
  }
}

/** Maps a failed open/write of the destination to an ArchiveError. */
export function destError(path: string, e: unknown): ArchiveError {
  if (isKvmbakError(e)) return e as ArchiveError;
  const code = errnoCode(e);
  const detail = (e as Error)?.message ?? String(e);
  switch (code) {
    case 'ENOSPC':
      return new ArchiveError(
        `no space left on the device while writing ${path}; free some space or choose another destination`,
        'KVMBAK_DEST_UNWRITABLE',
        { path },
        { cause: e },
      );
    case 'EDQUOT':
      return new ArchiveError(
        `disk quota exceeded while writing ${path}; free some space or raise the quota`,
        'KVMBAK_DEST_UNWRITABLE',
        { path },
        { cause: e },
      );
    case 'EACCES':
    case 'EPERM':
    case 'EROFS':
      return new ArchiveError(
        `cannot write ${path}: ${code === 'EROFS' ? 'read-only file system' : 'permission denied'}; choose a writable destination`,
        'KVMBAK_DEST_UNWRITABLE',
        { path },
        { cause: e },
      );
    case 'EBUSY':
      return new ArchiveError(
        `${path} is in use (mounted or held by another program); unmount or release it first`,
        'KVMBAK_DEST_BUSY',
        { path },
        { cause: e },
      );
    default:
      return new ArchiveError(`cannot write ${path}: ${detail}`, 'KVMBAK_DEST_UNWRITABLE', { path }, { cause: e });
  }
}
