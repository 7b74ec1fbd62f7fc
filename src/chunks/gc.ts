/**
 * Garbage collection of a chunk store: remove the chunks no chunk list references.
 *
 * The mechanism (crash-safe, safe against a concurrent backup, no in-memory index):
 *
 * 1. Exclusion. The GC announces itself and withdraws at once if any writer is announced
 *    (presence.ts): it then returns `{status: 'busy'}` and removes nothing. A writer that starts
 *    while the GC runs waits for it before its first put (or reuse/beginWriting). So no chunk is
 *    written, nor found and reused, while a GC sweeps: "a chunk a running backup has written or is
 *    about to reference" always belongs to an announced writer, and the GC does not sweep then. A
 *    backup that takes chunk ids from an earlier set's list (thin_delta) calls beginWriting() before
 *    reading that list.
 * 2. Mark, PBS-style, in the file system rather than in memory: the GC takes a mark time T (its start,
 *    whole seconds) and sets the times of every chunk that a list references to T (utimes, explicit
 *    values, so noatime/relatime mounts do not matter). Lists are streamed one line at a time. The
 *    lists are asked for (`lists()`) only once the GC holds the store, so a set committed just
 *    before is included. Any list that cannot be read or is malformed stops the GC before the sweep:
 *    a damaged list must never turn its chunks into garbage.
 * 3. Sweep: every chunk file whose mtime is before T - graceMs is removed (it was not marked), and
 *    every `.tmp-*` file (a writer killed mid-chunk; no writer is running now).
 *
 * A kill -9 at any point leaves every referenced chunk in place: marking only changes times, and the
 * sweep only removes files the mark did not reach. The GC's presence file is then stale (its pid is
 * gone) and is removed by the next writer or GC that finds it. Running the GC again finishes the job.
 * Two GCs at once are safe too: each marks every referenced chunk before it sweeps, and a chunk
 * marked by the later one is newer than the earlier one's T.
 */
import { opendir, lstat, unlink, utimes } from 'node:fs/promises';
import { join } from 'node:path';
import { ConfigError, throwIfAborted } from '../errors.js';
import { ChunkError } from './errors.js';
import { chunkIdAt, chunkCount, chunkRelativePath, iterateChunkListFile, type ChunkList } from './list.js';
import { enterAsGc, type PresenceEntry } from './presence.js';

export type GcProgress =
  { phase: 'mark'; listsDone: number; chunksMarked: number } | { phase: 'sweep'; foldersDone: number; chunksRemoved: number; bytesFreed: number };

export interface CollectGarbageOptions {
  /**
   * Every list whose chunks must stay: paths of chunk list files, or ChunkList values. Called once
   * the GC holds the store, so sets committed up to that moment are included.
   */
  lists: () => AsyncIterable<string | ChunkList> | Iterable<string | ChunkList>;
  /** Unreferenced chunks used (written or reused) less than this many ms ago stay (default 0). */
  graceMs?: number;
  signal?: AbortSignal;
  onProgress?: (event: GcProgress) => void;
}

export interface MissingChunk {
  id: string;
  /** The list that references it (its path, or `#N` for the N-th ChunkList value given). */
  list: string;
}

export type GcResult =
  | {
      status: 'busy';
      /** The writers (or unreadable presence files) that kept the GC from running. */
      writers: PresenceEntry[];
    }
  | {
      status: 'collected';
      /** The mark time (ms since the epoch): chunks unused since before it and unreferenced are gone. */
      markTime: number;
      listsRead: number;
      /** References marked (a chunk used by many lists counts once per use). */
      referencesMarked: number;
      /** Referenced chunks the store lacks (count, and the first 20). */
      missingCount: number;
      missing: MissingChunk[];
      chunksRemoved: number;
      bytesFreed: number;
      chunksKept: number;
      tempFilesRemoved: number;
    };

const MARK_PARALLEL = 16;
/** Ids remembered as marked: 2^17 (about 15 MiB), enough for the lists of a 512 GiB disk. */
const RECENT_MAX = 1 << 17;
const FOLDER = /^[0-9a-f]{4}$/;
const CHUNK = /^[0-9a-f]{64}$/;

/** Collects the store at `root` (use ChunkStore.collectGarbage). */
export async function collectGarbage(root: string, options: CollectGarbageOptions): Promise<GcResult> {
  const graceMs = options.graceMs ?? 0;
  if (!Number.isSafeInteger(graceMs) || graceMs < 0)
    throw new ConfigError(`graceMs must be a whole number of milliseconds ≥ 0, got ${String(graceMs)}`, 'graceMs');
  const { signal, onProgress } = options;
  throwIfAborted(signal);
  const entered = await enterAsGc(root);
  if ('busy' in entered) return { status: 'busy', writers: entered.busy };
  try {
    const markSeconds = Math.floor(Date.now() / 1000);
    const markTime = markSeconds * 1000;

    // Mark.
    let listsRead = 0;
    let referencesMarked = 0;
    let missingCount = 0;
    const missing: MissingChunk[] = [];
    const pending = new Set<Promise<unknown>>();
    let markError: unknown;
    const mark = (id: string, list: string): Promise<boolean> => {
      const path = join(root, chunkRelativePath(id));
      return utimes(path, markSeconds, markSeconds).then(
        () => {
          referencesMarked++;
          return true;
        },
        (e: NodeJS.ErrnoException) => {
          if (e.code !== 'ENOENT') {
            markError ??= new ChunkError(`cannot mark chunk ${path}: ${e.message}`, 'KVMBAK_CHUNK_STORE_IO', { chunkId: id, path }, { cause: e });
            return false;
          }
          missingCount++;
          if (missing.length < 20) missing.push({ id, list });
          return false;
        },
      );
    };
    // Sets of one disk share most chunks, in the same order: a bounded memory of the ids marked last
    // spares most repeated utimes calls (the mark is still correct without it).
    const recent = new Set<string>();
    const submit = async (id: string, list: string): Promise<void> => {
      if (markError !== undefined) throw markError;
      if (recent.has(id)) {
        referencesMarked++;
        return;
      }
      const p = mark(id, list)
        .then((marked) => {
          if (!marked) return;
          if (recent.size >= RECENT_MAX) recent.delete(recent.values().next().value as string);
          recent.add(id);
        })
        .finally(() => pending.delete(p));
      pending.add(p);
      if (pending.size >= MARK_PARALLEL) await Promise.race(pending);
    };
    let n = 0;
    try {
      for await (const l of options.lists()) {
        throwIfAborted(signal);
        const name = typeof l === 'string' ? l : `#${n}`;
        n++;
        if (typeof l === 'string') {
          for await (const id of iterateChunkListFile(l, signal)) await submit(id, name);
        } else {
          for (let i = 0; i < chunkCount(l); i++) await submit(chunkIdAt(l, i), name);
        }
        listsRead++;
        onProgress?.({ phase: 'mark', listsDone: listsRead, chunksMarked: referencesMarked });
      }
    } finally {
      await Promise.allSettled(pending);
    }
    if (markError !== undefined) throw markError;

    // Sweep.
    const cutoff = markTime - graceMs;
    let chunksRemoved = 0;
    let bytesFreed = 0;
    let chunksKept = 0;
    let tempFilesRemoved = 0;
    let foldersDone = 0;
    const top = await opendir(root);
    for await (const folder of top) {
      if (!folder.isDirectory() || !FOLDER.test(folder.name)) continue;
      throwIfAborted(signal);
      const dir = join(root, folder.name);
      for await (const entry of await opendir(dir)) {
        const path = join(dir, entry.name);
        if (entry.name.startsWith('.tmp-')) {
          await unlink(path).then(
            () => tempFilesRemoved++,
            () => undefined,
          );
          continue;
        }
        if (!entry.isFile() || !CHUNK.test(entry.name) || !entry.name.startsWith(folder.name)) continue;
        let st;
        try {
          st = await lstat(path);
        } catch {
          continue;
        }
        if (st.mtimeMs < cutoff) {
          try {
            await unlink(path);
            chunksRemoved++;
            bytesFreed += st.size;
          } catch (e) {
            if ((e as NodeJS.ErrnoException).code !== 'ENOENT')
              throw new ChunkError(`cannot remove chunk ${path}: ${(e as Error).message}`, 'KVMBAK_CHUNK_STORE_IO', { path }, { cause: e });
          }
        } else {
          chunksKept++;
        }
      }
      foldersDone++;
      if (foldersDone % 256 === 0) onProgress?.({ phase: 'sweep', foldersDone, chunksRemoved, bytesFreed });
    }
    onProgress?.({ phase: 'sweep', foldersDone, chunksRemoved, bytesFreed });
    return {
      status: 'collected',
      markTime,
      listsRead,
      referencesMarked,
      missingCount,
      missing,
      chunksRemoved,
      bytesFreed,
      chunksKept,
      tempFilesRemoved,
    };
  } finally {
    await entered.presence.release();
  }
}
