/**
 * The destination's chunk store (DEST/.chunks) seen from the sets: which chunk lists keep chunks
 * alive, collecting the chunks none of them references, and what the store holds.
 *
 * Which lists count (every one that may still be needed, so a chunk is never removed while a set
 * that exists could use it):
 * - every set folder DEST/DOMAIN/SETID, whatever its state: complete, incomplete (a backup that is
 *   running, or was killed and awaits `kvmbak recover` or prune), or unreadable (a damaged or newer
 *   manifest: prune leaves such a set alone, so its chunks stay too);
 * - in a complete set, the lists its manifest names (each must be there and readable), and in any
 *   set every other regular file named `*.chunks` (what a killed backup left, or a newer kvmbak's
 *   layout); hidden names are atomic writes in progress and do not count.
 * A list that cannot be read, or is malformed or truncated, stops the collection before its sweep
 * (nothing is removed) with an error naming the list and the set: a damaged list must never turn
 * its chunks into garbage. A set folder that disappears while it is read (another prune removed it)
 * no longer counts. A backup writing into the store at that moment is an announced writer: the
 * collection then removes nothing and reports the store busy (src/chunks/gc.ts).
 */
import { lstat, opendir } from 'node:fs/promises';
import { join } from 'node:path';
import { AbortError, isAbortError, throwIfAborted } from '../errors.js';
import {
  ChunkError,
  ChunkStore,
  type ChunkList,
  type GcProgress,
  type GcResult,
  type PresenceEntry,
  isChunkError,
  readChunkList,
} from '../chunks/index.js';
import { CHUNK_STORE_DIR, MANIFEST_FORMAT, isChunkedMemory, isManifestError, type Manifest } from '../manifest/index.js';
import { errnoCode, isRealDir } from '../util/fs.js';
import { chunkStorePath } from './chunked.js';
import { walkSet } from './layout.js';
import { type SetInfo, listSets } from './list.js';
import { parseSetId } from './naming.js';
import { assertDest, domainNames, readSetManifest } from './set.js';

/** A chunk list that keeps its chunks in the store. */
export interface SetChunkList {
  /** The set folder (absolute). */
  set: string;
  /** The list's path relative to the set, e.g. 'disks/vda.chunks'. */
  file: string;
  /** Absolute path of the list. */
  path: string;
  /** True when the set's manifest names it (complete sets). */
  named: boolean;
}

/** The chunk list files a manifest names. */
export function manifestChunkListFiles(m: Manifest): string[] {
  const out: string[] = [];
  if (m.memory !== null && isChunkedMemory(m.memory)) out.push(m.memory.chunks.file);
  for (const d of m.disks) if (d.chunks !== undefined) out.push(d.chunks.file);
  return out;
}

function listError(message: string, path: string, cause?: unknown): ChunkError {
  return new ChunkError(message, 'KVMBAK_CHUNK_LIST', { path }, cause === undefined ? {} : { cause });
}

const AFTER =
  'the chunk store was not collected (nothing removed), so no chunk a set may use is lost; repair or delete that set (kvmbak verify tells what is wrong), then prune again';

/**
 * Every chunk list of every set folder under DEST (see the module comment for which count), set
 * by set. Throws ChunkError KVMBAK_CHUNK_LIST when a set's lists cannot be known.
 */
export async function* setChunkLists(dest: string, signal?: AbortSignal): AsyncGenerator<SetChunkList> {
  const root = await assertDest(dest);
  for (const domain of await domainNames(root)) {
    if (domain === CHUNK_STORE_DIR) continue;
    const domainDir = join(root, domain);
    if (!(await isRealDir(domainDir))) continue;
    const names: string[] = [];
    try {
      for await (const e of await opendir(domainDir)) if (parseSetId(e.name) !== null) names.push(e.name);
    } catch (e) {
      if (errnoCode(e) === 'ENOENT') continue;
      throw listError(`cannot read the backup folder ${domainDir} (${(e as Error).message}): ${AFTER}`, domainDir, e);
    }
    for (const name of names.sort()) {
      throwIfAborted(signal);
      const setPath = join(domainDir, name);
      if (!(await isRealDir(setPath))) continue;
      let entries;
      try {
        entries = await walkSet(setPath);
      } catch (e) {
        if (errnoCode(e) === 'ENOENT' && !(await isRealDir(setPath))) continue; // removed meanwhile
        throw listError(`cannot read backup set ${setPath} to find its chunk lists (${(e as Error).message}): ${AFTER}`, setPath, e);
      }
      let named: string[] = [];
      try {
        named = manifestChunkListFiles(await readSetManifest(setPath));
      } catch (e) {
        if (isAbortError(e)) throw e;
        // incomplete or unreadable: every *.chunks file it holds counts (below)
        if (!isManifestError(e) && !(await isRealDir(setPath))) continue;
      }
      const files = new Map<string, boolean>(named.map((f) => [f, true]));
      for (const e of entries) {
        const base = e.rel.slice(e.rel.lastIndexOf('/') + 1);
        if (e.type === 'file' && base.endsWith('.chunks') && !base.startsWith('.') && !files.has(e.rel)) files.set(e.rel, false);
      }
      for (const [file, isNamed] of files) yield { set: setPath, file, path: join(setPath, file), named: isNamed };
    }
  }
}

/** Reads a list for the collection; null when its set was removed meanwhile. */
async function readListForGc(l: SetChunkList, signal?: AbortSignal): Promise<ChunkList | null> {
  try {
    return await readChunkList(l.path, signal);
  } catch (e) {
    if (isAbortError(e) || (e instanceof Error && e.name === 'AbortError')) throw e;
    if (!(await isRealDir(l.set))) return null;
    const why = isChunkError(e) ? e.message : `cannot read chunk list ${l.path}: ${(e as Error).message}`;
    throw listError(`backup set ${l.set}: ${why}; ${AFTER}`, l.path, e);
  }
}

/** A store user that kept the collection from running. */
export interface StoreWriter {
  pid: number | null;
  host: string | null;
  startedAt: string | null;
  /** 'alive': a running writer on this host; 'foreign': another host's (cannot be judged); 'damaged': an unreadable presence file. */
  status: PresenceEntry['status'];
  path: string;
}

/** What collecting a destination's chunk store did. */
export interface DestinationGcResult {
  /** 'collected': done; 'busy': a backup writes into the store now, nothing was removed. */
  status: 'collected' | 'busy';
  /** The store folder (DEST/.chunks). */
  store: string;
  /** Chunk lists read (every list of every set, see setChunkLists). */
  listsRead: number;
  chunksRemoved: number;
  bytesFreed: number;
  /** Chunks left in the store. */
  chunksKept: number;
  /** Leftovers of chunk writes that were killed, removed. */
  tempFilesRemoved: number;
  /** Chunks a list references that the store lacks: the sets using them are damaged (count, first 20). */
  missingCount: number;
  missing: { id: string; list: string }[];
  /** Who kept the store busy (status 'busy'). */
  writers: StoreWriter[];
}

export interface CollectDestinationOptions {
  signal?: AbortSignal;
  onProgress?: (event: GcProgress) => void;
  /** Unreferenced chunks used less than this many ms ago stay (default 0: a writer running excludes the collection anyway). */
  graceMs?: number;
}

/** True when DEST has a chunk store folder. */
export async function hasChunkStore(dest: string): Promise<boolean> {
  return isRealDir(chunkStorePath(dest));
}

/**
 * Removes the chunks of DEST/.chunks that no set under DEST references (see the module comment and
 * src/chunks/gc.ts). Returns null when DEST has no chunk store. Crash-safe: a kill at any point
 * leaves every referenced chunk in place; running it again finishes the job. Throws ChunkError
 * KVMBAK_CHUNK_LIST (nothing removed) when a set's chunk list is damaged or unreadable.
 */
export async function collectDestinationGarbage(dest: string, options: CollectDestinationOptions = {}): Promise<DestinationGcResult | null> {
  const root = await assertDest(dest);
  if (!(await hasChunkStore(root))) return null;
  const { signal } = options;
  const store = await ChunkStore.open(chunkStorePath(root));
  const read: string[] = [];
  const lists = async function* (): AsyncGenerator<ChunkList> {
    for await (const l of setChunkLists(root, signal)) {
      const list = await readListForGc(l, signal);
      if (list === null) continue;
      read.push(l.path);
      yield list;
    }
  };
  let r: GcResult;
  try {
    r = await store.collectGarbage({
      lists,
      ...(signal !== undefined ? { signal } : {}),
      ...(options.onProgress !== undefined ? { onProgress: options.onProgress } : {}),
      ...(options.graceMs !== undefined ? { graceMs: options.graceMs } : {}),
    });
  } catch (e) {
    if (signal?.aborted && !isAbortError(e)) throw new AbortError('garbage collection cancelled', { cause: e });
    throw e;
  } finally {
    await store.close();
  }
  const base = { store: store.root, listsRead: 0, chunksRemoved: 0, bytesFreed: 0, chunksKept: 0, tempFilesRemoved: 0, missingCount: 0, missing: [] };
  if (r.status === 'busy') {
    return {
      ...base,
      status: 'busy',
      writers: r.writers.map((w) => ({
        pid: w.owner?.pid ?? null,
        host: w.owner?.host ?? null,
        startedAt: w.owner?.startedAt ?? null,
        status: w.status,
        path: w.path,
      })),
    };
  }
  return {
    ...base,
    status: 'collected',
    listsRead: r.listsRead,
    chunksRemoved: r.chunksRemoved,
    bytesFreed: r.bytesFreed,
    chunksKept: r.chunksKept,
    tempFilesRemoved: r.tempFilesRemoved,
    missingCount: r.missingCount,
    // gc.ts names a ChunkList value given by its position: back to the list's path
    missing: r.missing.map((m) => ({ id: m.id, list: /^#\d+$/.test(m.list) ? (read[Number(m.list.slice(1))] ?? m.list) : m.list })),
    writers: [],
  };
}

/** What a destination's chunk store holds. */
export interface ChunkStoreUsage {
  /** DEST/.chunks */
  path: string;
  chunks: number;
  /** Bytes of the chunk files (each a gzip member). */
  bytes: number;
}

const FOLDER = /^[0-9a-f]{4}$/;
const CHUNK = /^[0-9a-f]{64}$/;

/**
 * Counts the chunks of DEST/.chunks and their bytes, walking its folders as a stream (no list of
 * all chunk names is kept). Null when DEST has no chunk store.
 */
export async function chunkStoreUsage(dest: string, signal?: AbortSignal): Promise<ChunkStoreUsage | null> {
  const root = await assertDest(dest);
  const path = chunkStorePath(root);
  if (!(await isRealDir(path))) return null;
  let chunks = 0;
  let bytes = 0;
  for await (const folder of await opendir(path)) {
    if (!folder.isDirectory() || !FOLDER.test(folder.name)) continue;
    throwIfAborted(signal);
    const dir = join(path, folder.name);
    let entries;
    try {
      entries = await opendir(dir);
    } catch (e) {
      if (errnoCode(e) === 'ENOENT') continue;
      throw e;
    }
    for await (const e of entries) {
      if (!e.isFile() || !CHUNK.test(e.name)) continue;
      try {
        bytes += (await lstat(join(dir, e.name))).size;
        chunks++;
      } catch (err) {
        if (errnoCode(err) !== 'ENOENT') throw err;
      }
    }
  }
  return { path, chunks, bytes };
}

/** The chunk store against the sets that use it: the deduplication figures of `kvmbak list`. */
export interface ChunkStoreSummary extends ChunkStoreUsage {
  /** Raw bytes the complete sets under DEST keep in the store (their chunked disks and memory states). */
  logicalBytes: number;
  /** Complete sets with at least one part in the store. */
  sets: number;
  /** logicalBytes / bytes (how many raw bytes each stored byte stands for); null for an empty store. */
  ratio: number | null;
}

/**
 * DEST/.chunks against every complete set under DEST (all domains: the store is shared), or null
 * when DEST has no chunk store. Walks the store as chunkStoreUsage does. `sets`: what
 * listSets(dest) returned, when the caller has it (all domains).
 */
export async function chunkStoreSummary(
  dest: string,
  options: { sets?: readonly SetInfo[]; signal?: AbortSignal } = {},
): Promise<ChunkStoreSummary | null> {
  const usage = await chunkStoreUsage(dest, options.signal);
  if (usage === null) return null;
  let logicalBytes = 0;
  let sets = 0;
  for (const s of options.sets ?? (await listSets(dest))) {
    // kvmbak/2 exactly when a disk or the memory state is in the store
    if (s.status !== 'complete' || s.format !== MANIFEST_FORMAT || s.chunkedBytes === undefined) continue;
    logicalBytes += s.chunkedBytes;
    sets++;
  }
  return { ...usage, logicalBytes, sets, ratio: usage.bytes > 0 ? logicalBytes / usage.bytes : null };
}

/** What removing some sets would free in the store (a dry run's figures). */
export interface FreedEstimate {
  /** Chunks in the store that the removed sets use and no remaining set does. */
  chunks: number;
  bytes: number;
  /** Lists read (of the removed and of the remaining sets). */
  listsRead: number;
}

/** Most chunk references of the removed sets an estimate holds (32 bytes each: 64 MiB). */
const ESTIMATE_MAX_IDS = 1 << 21;

/**
 * What removing the sets `removed` (set folder paths) would free in DEST/.chunks, read-only: the
 * chunks their lists reference that no other set's list does (the real collection removes those,
 * plus any chunk no set referenced already). Null when DEST has no chunk store, or when the removed
 * sets reference more than 2^21 chunks (the estimate keeps their ids in memory, 32 bytes each).
 * Throws as collectDestinationGarbage does for a damaged list.
 */
export async function estimateFreed(dest: string, removed: readonly string[], signal?: AbortSignal): Promise<FreedEstimate | null> {
  const root = await assertDest(dest);
  if (!(await hasChunkStore(root))) return null;
  const gone = new Set(removed);
  let listsRead = 0;
  // 1. the removed sets' ids, packed
  let ids = Buffer.alloc(32 * 1024);
  let n = 0;
  for await (const l of setChunkLists(root, signal)) {
    if (!gone.has(l.set)) continue;
    const list = await readListForGc(l, signal);
    if (list === null) continue;
    listsRead++;
    const count = list.ids.byteLength / 32;
    if (n + count > ESTIMATE_MAX_IDS) return null;
    if ((n + count) * 32 > ids.byteLength) {
      const bigger = Buffer.alloc(Math.max(ids.byteLength * 2, (n + count) * 32));
      ids.copy(bigger, 0, 0, n * 32);
      ids = bigger;
    }
    list.ids.copy(ids, n * 32);
    n += count;
  }
  // 2. sorted, without repeats
  const at = (i: number): Buffer => ids.subarray(i * 32, i * 32 + 32);
  const order = Array.from({ length: n }, (_, i) => i).sort((a, b) => Buffer.compare(at(a), at(b)));
  const unique: number[] = [];
  for (const i of order) if (unique.length === 0 || !at(unique[unique.length - 1]!).equals(at(i))) unique.push(i);
  const used = new Uint8Array(unique.length);
  const find = (id: Buffer): number => {
    let lo = 0;
    let hi = unique.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      const c = Buffer.compare(at(unique[mid]!), id);
      if (c === 0) return mid;
      if (c < 0) lo = mid + 1;
      else hi = mid - 1;
    }
    return -1;
  };
  // 3. what the remaining sets still use
  if (unique.length > 0) {
    for await (const l of setChunkLists(root, signal)) {
      if (gone.has(l.set)) continue;
      const list = await readListForGc(l, signal);
      if (list === null) continue;
      listsRead++;
      for (let i = 0; i < list.ids.byteLength; i += 32) {
        const k = find(list.ids.subarray(i, i + 32));
        if (k >= 0) used[k] = 1;
      }
    }
  }
  // 4. the rest, as found in the store
  let chunks = 0;
  let bytes = 0;
  const store = chunkStorePath(root);
  for (let k = 0; k < unique.length; k++) {
    if (used[k]) continue;
    throwIfAborted(signal);
    const id = at(unique[k]!).toString('hex');
    try {
      bytes += (await lstat(join(store, id.slice(0, 4), id))).size;
      chunks++;
    } catch (e) {
      if (errnoCode(e) !== 'ENOENT') throw e;
    }
  }
  return { chunks, bytes, listsRead };
}
