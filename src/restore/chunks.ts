/**
 * The chunk-level check of kvmbak/2 sets, shared by restore (prove the set before anything is
 * destroyed) and verify: every chunk list read and checked against the manifest (header, count,
 * raw size and sha256), every chunk it names checked in the destination's chunk store, each
 * distinct chunk once however many lists and sets name it.
 *
 * Full check: the chunk file is read, decompressed and its sha256 compared with its id (the
 * store's get()). Quick: the chunk file exists and is not empty.
 *
 * Memory: the ids already checked are kept as 32-byte binary strings in one Set (about 80 bytes
 * each with the Set's own cost: 10^6 distinct chunks, 4 TiB of unique data, take about 80 MiB),
 * plus one list's packed ids at a time (32 bytes per chunk). Nothing indexes the whole store.
 *
 * A problem chunk is reported with every set of the destination that uses it (not only the sets
 * being checked): the destination's other complete sets are read for those ids only, after the
 * check, one list at a time.
 */
import { stat } from 'node:fs/promises';
import { availableParallelism } from 'node:os';
import { dirname, join } from 'node:path';
import { isAbortError, throwIfAborted } from '../errors.js';
import { type ChunkList, ChunkStore, chunkCount, chunkLength, isChunkError, iterateChunkListFile, readChunkList } from '../chunks/index.js';
import { isChunkedMemory, type Manifest, type ManifestChunks } from '../manifest/index.js';
import { listSets, readSetManifest } from '../store/index.js';
import { chunkStorePath } from '../store/chunked.js';

/** One chunk list of one set to check. */
export interface ChunkListRef {
  /** The set folder (absolute). */
  set: string;
  /** Relative path of the list in the set. */
  file: string;
  /** Absolute path of the list. */
  path: string;
  /** What the manifest says the list rebuilds (a disk of current kvmbak records no whole sha256). */
  rawBytes: number;
  rawSha256: string | undefined;
  chunkSize: number;
  chunks: number;
}

export type ChunkProblemKind = 'missing' | 'empty' | 'damaged' | 'unreadable';

/** A chunk that is missing or damaged, with every set of the destination that uses it. */
export interface ChunkProblem {
  /** The chunk id (sha256 of its raw data, 64 hex digits). */
  id: string;
  kind: ChunkProblemKind;
  /** The chunk file. */
  path: string;
  /** The store's own error message (missing, damaged, unreadable). */
  detail: string;
  /** Every set of the destination whose lists name it (absolute set paths, sorted). */
  sets: string[];
  /** The lists among those checked that name it (absolute paths). */
  files: string[];
  /** One line: the chunk, what is wrong, and the sets that use it. */
  message: string;
}

/** A chunk list that cannot be used (malformed, truncated, not matching the manifest, no store). */
export interface ChunkListProblem {
  set: string;
  file: string;
  message: string;
}

export interface ChunkCheckProgress {
  phase: 'chunks';
  /** The list being walked. */
  file: string;
  /** Distinct chunks checked so far. */
  chunksDone: number;
  /** Chunks the lists name in all (an upper bound of the distinct ones). */
  chunksTotal: number;
  /** Raw bytes decompressed and hashed so far (0 with quick). */
  bytesDone: number;
}

export interface ChunkCheckOptions {
  /** Presence and size only (no decompression). */
  quick?: boolean;
  signal?: AbortSignal;
  onProgress?: (p: ChunkCheckProgress) => void;
  /** Chunks checked at once (default: the number of cores, at least 2). */
  concurrency?: number;
}

export interface ChunkCheckResult {
  /** The chunk store folder (DEST/.chunks). */
  store: string;
  quick: boolean;
  lists: number;
  /** Distinct chunks checked. */
  chunksChecked: number;
  /** Raw bytes decompressed and hashed. */
  bytesChecked: number;
  chunkProblems: ChunkProblem[];
  listProblems: ChunkListProblem[];
}

/** The chunk lists a manifest names (disks, then the memory state unless left out). */
export function manifestChunkLists(setPath: string, m: Manifest, options: { memory?: boolean } = {}): ChunkListRef[] {
  const refs: ChunkListRef[] = [];
  const ref = (c: ManifestChunks): ChunkListRef => ({
    set: setPath,
    file: c.file,
    path: join(setPath, c.file),
    rawBytes: c.rawBytes,
    rawSha256: c.rawSha256,
    chunkSize: c.chunkSize,
    chunks: c.chunks,
  });
  for (const d of m.disks) if (d.chunks !== undefined) refs.push(ref(d.chunks));
  if (options.memory !== false && m.memory !== null && isChunkedMemory(m.memory)) refs.push(ref(m.memory.chunks));
  return refs;
}

/** The chunk store of the destination a set lies in: DEST/.chunks for DEST/DOMAIN/ID. */
export function chunkStoreOfSet(setPath: string): string {
  return chunkStorePath(dirname(dirname(setPath)));
}

function checkConcurrency(n: number | undefined): number {
  return n ?? Math.max(2, availableParallelism());
}

/** What a list's header must say, compared with the manifest; null when they agree. */
function headerMismatch(list: ChunkList, ref: ChunkListRef): string | null {
  if (list.rawSize !== ref.rawBytes) return `it describes ${list.rawSize} raw bytes, the manifest says ${ref.rawBytes}`;
  if (list.chunkSize !== ref.chunkSize) return `its chunk size is ${list.chunkSize}, the manifest says ${ref.chunkSize}`;
  if (chunkCount(list) !== ref.chunks) return `it names ${chunkCount(list)} chunks, the manifest says ${ref.chunks}`;
  if (list.rawSha256 !== ref.rawSha256) {
    return ref.rawSha256 === undefined
      ? 'it records a raw sha256, the manifest none'
      : list.rawSha256 === undefined
        ? 'it records no raw sha256, the manifest does'
        : 'its raw sha256 differs from the manifest';
  }
  return null;
}

/** Reads a list and checks it against the manifest: the list, or a problem line. */
export async function readListFor(ref: ChunkListRef, signal?: AbortSignal): Promise<ChunkList | ChunkListProblem> {
  let list: ChunkList;
  try {
    list = await readChunkList(ref.path, signal);
  } catch (e) {
    if (isAbortError(e) || !isChunkError(e)) {
      if (!isAbortError(e) && (e as NodeJS.ErrnoException).code !== undefined) {
        return { set: ref.set, file: ref.file, message: `${ref.file}: cannot read the chunk list: ${(e as Error).message}` };
      }
      throw e;
    }
    return { set: ref.set, file: ref.file, message: `${ref.file}: ${e.message}` };
  }
  const bad = headerMismatch(list, ref);
  if (bad !== null) return { set: ref.set, file: ref.file, message: `${ref.file}: the chunk list does not match the manifest: ${bad}` };
  return list;
}

/**
 * Checks the lists and every distinct chunk they name in `storeRoot`. Problems are reported in
 * the result (never thrown); AbortError when cancelled.
 */
export async function checkChunkLists(storeRoot: string, refs: readonly ChunkListRef[], options: ChunkCheckOptions = {}): Promise<ChunkCheckResult> {
  const quick = options.quick ?? false;
  const { signal, onProgress } = options;
  const result: ChunkCheckResult = {
    store: storeRoot,
    quick,
    lists: refs.length,
    chunksChecked: 0,
    bytesChecked: 0,
    chunkProblems: [],
    listProblems: [],
  };
  if (refs.length === 0) return result;
  throwIfAborted(signal);
  let storeOk = false;
  try {
    // followed like ChunkStore.open does: DEST/.chunks may be a link to a bigger file system
    storeOk = (await stat(storeRoot)).isDirectory();
  } catch {
    storeOk = false;
  }
  if (!storeOk) {
    for (const r of refs) {
      result.listProblems.push({
        set: r.set,
        file: r.file,
        message: `${r.file}: its chunks live in the chunk store ${storeRoot}, which is missing or not a folder; restore another set, or copy the store back`,
      });
    }
    return result;
  }
  const store = await ChunkStore.open(storeRoot);
  const concurrency = checkConcurrency(options.concurrency);
  const seen = new Set<string>();
  const bad = new Map<string, Omit<ChunkProblem, 'sets' | 'files' | 'message'>>();
  const chunksTotal = refs.reduce((n, r) => n + r.chunks, 0);
  const inflight = new Set<Promise<void>>();
  let failure: unknown;
  let lastReport = 0;
  let file = '';
  const report = (force: boolean): void => {
    const now = Date.now();
    if (!onProgress || (!force && now - lastReport < 200)) return;
    lastReport = now;
    try {
      onProgress({ phase: 'chunks', file, chunksDone: result.chunksChecked, chunksTotal, bytesDone: result.bytesChecked });
    } catch {
      // a progress consumer never breaks a check
    }
  };
  const checkOne = async (id: string, maxBytes: number): Promise<void> => {
    const path = store.pathOf(id);
    try {
      if (quick) {
        const size = await store.storedSize(id);
        if (size === undefined) bad.set(id, { id, kind: 'missing', path, detail: `${path} does not exist` });
        else if (size === 0) bad.set(id, { id, kind: 'empty', path, detail: `${path} is empty` });
      } else {
        const raw = await store.get(id, { ...(signal ? { signal } : {}), maxBytes });
        result.bytesChecked += raw.byteLength;
      }
    } catch (e) {
      if (isAbortError(e)) throw e;
      const kind: ChunkProblemKind = isChunkError(e, 'KVMBAK_CHUNK_MISSING')
        ? 'missing'
        : isChunkError(e, 'KVMBAK_CHUNK_CORRUPT')
          ? 'damaged'
          : 'unreadable';
      bad.set(id, { id, kind, path, detail: (e as Error).message });
    }
    result.chunksChecked++;
    report(false);
  };
  try {
    for (const ref of refs) {
      throwIfAborted(signal);
      file = ref.file;
      const list = await readListFor(ref, signal);
      if (!('ids' in list)) {
        result.listProblems.push(list);
        continue;
      }
      const n = chunkCount(list);
      for (let i = 0; i < n; i++) {
        const key = list.ids.toString('latin1', i * 32, i * 32 + 32);
        if (seen.has(key)) continue;
        seen.add(key);
        if (failure !== undefined) throw failure;
        while (inflight.size >= concurrency) await Promise.race(inflight);
        if (failure !== undefined) throw failure;
        throwIfAborted(signal);
        const id = list.ids.toString('hex', i * 32, i * 32 + 32);
        const p: Promise<void> = checkOne(id, Math.max(chunkLength(list, i), 1)).catch((e: unknown) => {
          failure ??= e;
        });
        inflight.add(p);
        void p.finally(() => inflight.delete(p));
      }
    }
    await Promise.all(inflight);
    if (failure !== undefined) throw failure;
  } catch (e) {
    await Promise.allSettled(inflight);
    throw e;
  } finally {
    await store.close();
  }
  report(true);
  if (bad.size > 0) {
    const { sets: users, files: lists } = await setsUsingChunks(dirname(storeRoot), new Set(bad.keys()), refs, signal);
    for (const b of [...bad.values()].sort((x, y) => (x.id < y.id ? -1 : 1))) {
      const sets = [...(users.get(b.id) ?? [])].sort();
      const files = [...(lists.get(b.id) ?? [])];
      result.chunkProblems.push({ ...b, sets, files, message: chunkProblemLine(b, sets) });
    }
  }
  return result;
}

function chunkProblemLine(b: Omit<ChunkProblem, 'sets' | 'files' | 'message'>, sets: string[]): string {
  const what =
    b.kind === 'missing'
      ? `is missing (${b.path})`
      : b.kind === 'empty'
        ? `is empty (${b.path})`
        : b.kind === 'damaged'
          ? `is damaged (${b.path}: its data does not decompress to its sha256)`
          : `cannot be read (${b.detail})`;
  return `chunk ${b.id} ${what}; ${sets.length === 1 ? 'the set' : `the ${sets.length} sets`} using it cannot be restored in full: ${sets.join(', ')}`;
}

/**
 * Which sets of the destination name any of `ids` (hex): every complete set's lists are read one
 * at a time, streamed (constant memory). The sets of `known` are included whether or not they
 * are in the destination's listing (a set checked outside its destination's usual layout).
 */
async function setsUsingChunks(
  dest: string,
  ids: ReadonlySet<string>,
  known: readonly ChunkListRef[],
  signal: AbortSignal | undefined,
): Promise<{ sets: Map<string, Set<string>>; files: Map<string, Set<string>> }> {
  const users = new Map<string, Set<string>>();
  const files = new Map<string, Set<string>>();
  const add = (m: Map<string, Set<string>>, id: string, v: string): void => {
    let s = m.get(id);
    if (!s) m.set(id, (s = new Set()));
    s.add(v);
  };
  const scan = async (set: string, path: string, file?: string): Promise<void> => {
    try {
      for await (const id of iterateChunkListFile(path, signal)) {
        if (!ids.has(id)) continue;
        add(users, id, set);
        if (file !== undefined) add(files, id, file);
      }
    } catch (e) {
      if (isAbortError(e)) throw e;
      // a list that cannot be read is reported when its own set is verified
    }
  };
  const scanned = new Set<string>();
  for (const r of known) {
    scanned.add(r.path);
    await scan(r.set, r.path, r.path);
  }
  let sets;
  try {
    sets = await listSets(dest);
  } catch (e) {
    if (isAbortError(e)) throw e;
    return { sets: users, files };
  }
  for (const info of sets) {
    // every set folder, whatever the listing judged: a set whose manifest reads uses its chunks
    if (info.status === 'incomplete') continue;
    throwIfAborted(signal);
    let m: Manifest;
    try {
      m = await readSetManifest(info.path);
    } catch (e) {
      if (isAbortError(e)) throw e;
      continue;
    }
    for (const ref of manifestChunkLists(info.path, m)) {
      if (scanned.has(ref.path)) continue;
      scanned.add(ref.path);
      await scan(ref.set, ref.path);
    }
  }
  return { sets: users, files };
}
