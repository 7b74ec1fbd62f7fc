import { availableParallelism } from 'node:os';
import { ConfigError } from '../errors.js';
import { parseSize } from '../util/size.js';

export const DEFAULT_LEVEL = 3;
export const DEFAULT_CHUNK_SIZE = 4 * 1024 * 1024;
export const MIN_CHUNK_SIZE = 4096;
export const MAX_CHUNK_SIZE = 256 * 1024 * 1024;
/**
 * libdeflate level used for each kvmbak level 1..9 (index 0 unused). Level
 * N keeps its gzip meaning — output no larger than `gzip -N`'s — and 1..5
 * take the fastest libdeflate level that achieves it, measured on the
 * bench's realistic image (ext4 of /usr files, 4 MiB members): libdeflate
 * 1, 2, 3, 5 make 259.4, 247.0, 244.7, 238.4 MB where gzip -1..-6 make
 * 265.3, 259.6, 254.8, 246.8, 242.0, 239.7 MB. libdeflate 5 is already
 * smaller than gzip -6 (and -9's 238.3 MB), so 6..9 use libdeflate 6..9
 * (237.0, 236.1, 235.6, 235.5 MB) to keep each step smaller than the last.
 */
const CODEC_LEVELS = [0, 1, 1, 2, 3, 5, 6, 7, 8, 9] as const;

/** The libdeflate level (0..12) that a kvmbak level (1..9) maps to. */
export function codecLevel(level: number): number {
  return CODEC_LEVELS[checkLevel(level)]!;
}

/**
 * Chunks alive at once (pack: read → hashed → compressed → written; unpack:
 * read → inflated → hashed and written) with `threads` workers: one in each
 * worker plus one being read, one being hashed and one being written.
 * Measured on 2 cores, a deeper window (2 × threads + 2) was no faster and
 * cost 20 MiB more.
 */
export function chunkWindow(threads: number): number {
  return threads + 3;
}

export function checkLevel(level: unknown): number {
  if (typeof level !== 'number' || !Number.isInteger(level) || level < 1 || level > 9) {
    throw new ConfigError(`level must be a whole number from 1 to 9, got ${String(level)}`, 'level');
  }
  return level;
}

export function checkChunkSize(size: unknown): number {
  let n: number;
  if (typeof size === 'number' || typeof size === 'string') n = parseSize(size, 'chunkSize');
  else throw new ConfigError(`chunkSize must be a size such as 4M, got ${String(size)}`, 'chunkSize');
  if (n < MIN_CHUNK_SIZE || n > MAX_CHUNK_SIZE || n % 4096 !== 0) {
    throw new ConfigError(`chunkSize must be a multiple of 4 KiB between 4 KiB and 256 MiB, got ${String(size)} (${n} bytes)`, 'chunkSize');
  }
  return n;
}

export function checkThreads(threads: unknown): number {
  if (threads === undefined) return Math.max(1, availableParallelism());
  if (typeof threads !== 'number' || !Number.isInteger(threads) || threads < 1 || threads > 256) {
    throw new ConfigError(`threads must be a whole number from 1 to 256, got ${String(threads)}`, 'threads');
  }
  return threads;
}

export function checkSha256(hex: unknown, option: string): string {
  if (typeof hex !== 'string' || !/^[0-9a-fA-F]{64}$/.test(hex)) {
    throw new ConfigError(`${option} must be a sha256 (64 hex digits), got ${JSON.stringify(hex)}`, option);
  }
  return hex.toLowerCase();
}

export function checkByteCount(n: unknown, option: string): number {
  if (typeof n !== 'number' || !Number.isSafeInteger(n) || n < 0) {
    throw new ConfigError(`${option} must be a byte count (a whole number ≥ 0), got ${String(n)}`, option);
  }
  return n;
}
