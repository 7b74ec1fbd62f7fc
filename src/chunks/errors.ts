import { KvmbakError, type KvmbakErrorOptions } from '../errors.js';

export const CHUNK_ERROR_CODES = [
  /** A chunk id is not 64 lowercase hex digits. */
  'KVMBAK_CHUNK_ID',
  /** A chunk the caller asked for is not in the store. */
  'KVMBAK_CHUNK_MISSING',
  /** A chunk file does not decompress, or its content does not hash to its id. */
  'KVMBAK_CHUNK_CORRUPT',
  /** The store folder cannot be created, read or written. */
  'KVMBAK_CHUNK_STORE_IO',
  /** Garbage collection could not judge that it is safe (another host's writer, a damaged presence file). */
  'KVMBAK_CHUNK_STORE_BUSY',
  /** A chunk list file is malformed, truncated or out of bounds. */
  'KVMBAK_CHUNK_LIST',
  /** The disk rebuilt from a chunk list does not match the list (size or sha256). */
  'KVMBAK_CHUNK_DISK_MISMATCH',
  /** thin_delta output that cannot be parsed or does not fit the disk. */
  'KVMBAK_THIN_DELTA',
] as const;
export type ChunkErrorCode = (typeof CHUNK_ERROR_CODES)[number];

export interface ChunkErrorDetails {
  /** The chunk concerned (64 hex digits), when one is. */
  chunkId?: string;
  /** The file or folder concerned. */
  path?: string;
  /** Line number in a chunk list or thin_delta output, 1-based. */
  line?: number;
}

/** A chunk-store problem, with a one-line message saying what is wrong and what to do. */
export class ChunkError extends KvmbakError {
  declare readonly code: ChunkErrorCode;
  readonly chunkId: string | undefined;
  readonly path: string | undefined;
  readonly line: number | undefined;

  constructor(message: string, code: ChunkErrorCode, details: ChunkErrorDetails = {}, options: KvmbakErrorOptions = {}) {
    super(message, code, options);
    this.chunkId = details.chunkId;
    this.path = details.path;
    this.line = details.line;
  }
}
Object.defineProperty(ChunkError.prototype, 'name', { value: 'ChunkError', enumerable: false, configurable: true, writable: true });

export function isChunkError(e: unknown, code?: ChunkErrorCode): e is ChunkError {
  return e instanceof KvmbakError && e.name === 'ChunkError' && (code === undefined || e.code === code);
}
