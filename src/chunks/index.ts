/** chunks/: the deduplicating chunk store (content-addressed gzip members), chunk lists, GC, thin_delta. */
export { ChunkError, isChunkError, CHUNK_ERROR_CODES } from './errors.js';
export type { ChunkErrorCode, ChunkErrorDetails } from './errors.js';
export { CHUNK_SIZE, compressMember, decompressMember, isChunkId, zeroChunk } from './codec.js';
export type { ZeroChunk } from './codec.js';
export { ChunkStore, DEFAULT_CHUNK_LEVEL } from './store.js';
export type { ChunkStoreOptions, PutOptions, PutResult } from './store.js';
export type { PresenceEntry, PresenceOwner, PresenceKind } from './presence.js';
export type { CollectGarbageOptions, GcProgress, GcResult, MissingChunk } from './gc.js';
export {
  CHUNK_LIST_MAGIC,
  chunkCount,
  chunkIdAt,
  chunkLength,
  chunkRelativePath,
  formatChunkList,
  iterateChunkListFile,
  parseChunkList,
  readChunkList,
  validateChunkList,
  writeChunkList,
} from './list.js';
export type { ChunkList } from './list.js';
export { readDiskFromStore, writeDiskDelta, writeDiskToStore } from './disk.js';
export type {
  ChunkDiskProgress,
  DiskSource,
  ReadDiskOptions,
  ReadDiskResult,
  WriteDiskDeltaOptions,
  WriteDiskDeltaResult,
  WriteDiskOptions,
  WriteDiskResult,
} from './disk.js';
export { changedChunks, heldMetadataRoot, parseThinDelta, thinDeltaArgs } from './thin-delta.js';
export type { ChangedChunksOptions, ThinDelta, ThinDeltaKind, ThinDeltaRange } from './thin-delta.js';
