/**
 * A disk or the memory state of a set stored as chunks: the data goes into the destination's
 * chunk store (DEST/.chunks), the set keeps the ordered chunk list (a file it lists in SHA256SUMS)
 * and the manifest describes both (ManifestChunks).
 */
import type { FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import {
  ChunkStore,
  type ChunkDiskProgress,
  type DiskSource,
  type WriteDiskDeltaOptions,
  type WriteDiskDeltaResult,
  type WriteDiskResult,
  writeChunkList,
  writeDiskDelta,
  writeDiskToStore,
} from '../chunks/index.js';
import { CHUNK_STORE_DIR, MEMORY_CHUNKS_FILE, type ManifestChunks } from '../manifest/index.js';
import type { BackupSet } from './set.js';
import { setFilePath } from './set.js';
import { sha256File } from './verify.js';

/** The chunk store folder of a destination (DEST/.chunks). */
export function chunkStorePath(dest: string): string {
  return join(dest, CHUNK_STORE_DIR);
}

/** Opens (creating it 0700 when missing) the chunk store of a destination. */
export function openChunkStore(dest: string, options: { level?: number } = {}): Promise<ChunkStore> {
  return ChunkStore.open(chunkStorePath(dest), options);
}

export interface StoreChunkedOptions {
  signal?: AbortSignal;
  onProgress?: (event: ChunkDiskProgress) => void;
  /** Chunks in flight at once (default: the number of cores, at least 2). */
  concurrency?: number;
  /** Expected bytes, for progress only. */
  size?: number;
}

/**
 * Reads `source` whole into `store` (writing only the chunks the store lacks), then writes the
 * chunk list as `file` in `set` (atomically, 0600). The chunks are durable before the list exists.
 * Returns the manifest's description and the raw write result.
 *
 * A disk is identified by its chunk list (no whole-disk sha256: that serial hash would cap the
 * run); the memory state (`file` MEMORY_CHUNKS_FILE) keeps its whole sha256, which the manifest
 * records as memory.sha256 and a by-hand restore checks before `virsh restore`.
 */
export async function storeChunked(
  store: ChunkStore,
  source: DiskSource,
  set: BackupSet,
  file: typeof MEMORY_CHUNKS_FILE,
  options?: StoreChunkedOptions,
): Promise<{ chunks: ManifestChunks & { rawSha256: string }; written: WriteDiskResult }>;
export async function storeChunked(
  store: ChunkStore,
  source: DiskSource,
  set: BackupSet,
  file: string,
  options?: StoreChunkedOptions,
): Promise<{ chunks: ManifestChunks; written: WriteDiskResult }>;
export async function storeChunked(
  store: ChunkStore,
  source: DiskSource,
  set: BackupSet,
  file: string,
  options: StoreChunkedOptions = {},
): Promise<{ chunks: ManifestChunks; written: WriteDiskResult }> {
  const written = await writeDiskToStore(source, store, {
    wholeSha256: file === MEMORY_CHUNKS_FILE,
    ...(options.signal !== undefined ? { signal: options.signal } : {}),
    ...(options.onProgress !== undefined ? { onProgress: options.onProgress } : {}),
    ...(options.concurrency !== undefined ? { concurrency: options.concurrency } : {}),
    ...(options.size !== undefined ? { size: options.size } : {}),
  });
  return { written, chunks: await writeList(set, file, written, { read: 'full', chunksRead: written.chunks }, options.signal) };
}

/**
 * Writes a disk's chunk list as `file` in `set` (atomically, 0600; the chunks are durable already)
 * and describes it for the manifest: the list's size and sha256 and the write's figures.
 */
async function writeList(
  set: BackupSet,
  file: string,
  written: WriteDiskResult,
  how: Pick<ManifestChunks, 'read' | 'chunksRead'>,
  signal: AbortSignal | undefined,
): Promise<ManifestChunks> {
  const path = setFilePath(set, file);
  await writeChunkList(path, written.list);
  const listed = await sha256File(path, signal !== undefined ? { signal } : {});
  return {
    file,
    listBytes: listed.bytes,
    listSha256: listed.sha256,
    rawBytes: written.list.rawSize,
    ...(written.rawSha256 !== undefined ? { rawSha256: written.rawSha256 } : {}),
    chunkSize: written.list.chunkSize,
    chunks: written.chunks,
    zeroChunks: written.zeroChunks,
    newChunks: written.chunksNew,
    addedBytes: written.bytesAdded,
    ...how,
  };
}

export interface StoreChunkedDeltaOptions extends StoreChunkedOptions, Pick<WriteDiskDeltaOptions, 'previous' | 'changed'> {
  /** Bytes of the disk (the previous list's size). */
  size: number;
}

/**
 * Like storeChunked, for a disk of which only `changed` chunks differ from the previous list
 * (thin_delta): reads only those chunks from `source`, takes every other id from `previous`
 * (each checked present in the store), and writes the new list as `file` in `set`. The manifest's
 * description has no rawSha256 (the unchanged chunks were not read) and `read: 'thin-delta'`.
 */
export async function storeChunkedDelta(
  store: ChunkStore,
  source: string | FileHandle,
  set: BackupSet,
  file: string,
  options: StoreChunkedDeltaOptions,
): Promise<{ chunks: ManifestChunks; written: WriteDiskDeltaResult }> {
  const written = await writeDiskDelta(source, store, {
    previous: options.previous,
    changed: options.changed,
    size: options.size,
    ...(options.signal !== undefined ? { signal: options.signal } : {}),
    ...(options.onProgress !== undefined ? { onProgress: options.onProgress } : {}),
    ...(options.concurrency !== undefined ? { concurrency: options.concurrency } : {}),
  });
  return { written, chunks: await writeList(set, file, written, { read: 'thin-delta', chunksRead: written.chunksRead }, options.signal) };
}
