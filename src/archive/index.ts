/** archive/: block device or file ⇄ multi-member gzip image, in parallel, with sha256 and a member index. */
export { packImage } from './pack.js';
export { unpackImage, hashImage } from './unpack.js';
export { ArchiveError, isArchiveError, ARCHIVE_ERROR_CODES, type ArchiveErrorCode, type ArchiveErrorDetails } from './errors.js';
export { archiveCounters, type ArchiveCounters } from './counters.js';
export { DEFAULT_CHUNK_SIZE, DEFAULT_LEVEL, chunkWindow, codecLevel } from './options.js';
export type {
  ArchiveProgress,
  ProgressCallback,
  PackOptions,
  PackResult,
  ImageIndex,
  UnpackOptions,
  UnpackResult,
  HashOptions,
  HashResult,
} from './types.js';
export { ReadThrottle } from './throttle.js';
export { checkChunkSize, checkLevel, checkThreads } from './options.js';
export { MemberCodec, type MemberCodecOptions, type CompressMemberOptions } from './member.js';
