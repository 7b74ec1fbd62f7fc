/**
 * Who is using a chunk store right now: one small presence file per writer (STORE/.writers/NONCE)
 * and per garbage collection (STORE/.gc/NONCE). Node has no flock(), and a store may be shared by
 * several processes, so the store-wide "shared by writers, exclusive by GC" lock is built from
 * these files, Dekker-style: each side first announces itself, then looks at the other side.
 *
 * - A writer announces itself, then waits while a live GC is announced (keeping its own file).
 * - A GC announces itself, then looks for writers: if any live writer is announced it withdraws
 *   at once and reports the store busy; it never waits for writers.
 *
 * Whichever of the two looks second sees the other (an announcement is a rename in one folder, so it
 * is visible to the next readdir), so a GC never sweeps while a writer is between its first put and
 * close(), and a writer never puts while a GC sweeps. No deadlock: a GC never waits.
 *
 * Stale files (a process killed with -9) are judged, not trusted: the file names the host, the boot
 * id, the pid and that pid's start time (/proc/PID/stat); on this host a file whose boot id differs,
 * whose pid is gone or whose pid now belongs to another process is stale and is removed by whoever
 * finds it. A file from another host cannot be judged: a GC reports the store busy, naming it.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, readFile, readdir, rename, unlink, writeFile } from 'node:fs/promises';
import { readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { AbortError } from '../errors.js';
import { ChunkError } from './errors.js';

export type PresenceKind = 'writer' | 'gc';

/** What a presence file says. */
export interface PresenceOwner {
  kind: PresenceKind;
  host: string;
  bootId: string | null;
  pid: number;
  /** Start time of the process in clock ticks since boot (field 22 of /proc/PID/stat). */
  pidStart: string | null;
  startedAt: string;
  nonce: string;
}

/** A presence file found in the store, with the verdict on its owner. */
export interface PresenceEntry {
  path: string;
  owner: PresenceOwner | null;
  status: 'alive' | 'stale' | 'foreign' | 'damaged';
}

const FOLDER: Record<PresenceKind, string> = { writer: '.writers', gc: '.gc' };

function readBootId(): string | null {
  try {
    return readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
  } catch {
    return null;
  }
}

function readPidStart(pid: number): string | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The command name (field 2) may hold spaces and parentheses: count from the last ')'.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return fields[19] ?? null;
  } catch {
    return null;
  }
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function parseOwner(text: string): PresenceOwner | null {
  try {
    const o = JSON.parse(text) as Partial<PresenceOwner>;
    if (
      (o.kind === 'writer' || o.kind === 'gc') &&
      typeof o.host === 'string' &&
      typeof o.pid === 'number' &&
      Number.isSafeInteger(o.pid) &&
      typeof o.startedAt === 'string' &&
      typeof o.nonce === 'string'
    ) {
      return {
        kind: o.kind,
        host: o.host,
        bootId: o.bootId ?? null,
        pid: o.pid,
        pidStart: o.pidStart ?? null,
        startedAt: o.startedAt,
        nonce: o.nonce,
      };
    }
  } catch {
    // judged below
  }
  return null;
}

/** The verdict on a presence file's owner, from this host's point of view. */
export function judgeOwner(owner: PresenceOwner): PresenceEntry['status'] {
  if (owner.host !== hostname()) return 'foreign';
  const bootId = readBootId();
  if (owner.bootId !== null && bootId !== null && owner.bootId !== bootId) return 'stale';
  if (!pidAlive(owner.pid)) return 'stale';
  if (owner.pidStart !== null) {
    const now = readPidStart(owner.pid);
    if (now !== null && now !== owner.pidStart) return 'stale';
  }
  return 'alive';
}

/** The presence files of one kind; stale ones are removed (best effort) and reported as such. */
export async function scanPresence(root: string, kind: PresenceKind): Promise<PresenceEntry[]> {
  const dir = join(root, FOLDER[kind]);
  let names: string[];
  try {
    names = await readdir(dir);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw new ChunkError(`cannot read ${dir}: ${(e as Error).message}`, 'KVMBAK_CHUNK_STORE_IO', { path: dir }, { cause: e });
  }
  const found: PresenceEntry[] = [];
  for (const name of names) {
    if (name.startsWith('.')) continue; // being written (tmp), never a presence yet
    const path = join(dir, name);
    let text: string;
    try {
      text = await readFile(path, 'utf8');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') continue; // released meanwhile
      throw new ChunkError(`cannot read ${path}: ${(e as Error).message}`, 'KVMBAK_CHUNK_STORE_IO', { path }, { cause: e });
    }
    const owner = parseOwner(text);
    const status = owner === null ? 'damaged' : judgeOwner(owner);
    if (status === 'stale') await unlink(path).catch(() => undefined);
    found.push({ path, owner, status });
  }
  return found;
}

/** An announced writer or GC. release() is idempotent. */
export interface Presence {
  readonly path: string;
  readonly owner: PresenceOwner;
  release(): Promise<void>;
}

/** Announces this process as a `kind` user of the store (tmp + rename: never seen half-written). */
export async function announce(root: string, kind: PresenceKind): Promise<Presence> {
  const dir = join(root, FOLDER[kind]);
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const nonce = randomBytes(12).toString('hex');
  const owner: PresenceOwner = {
    kind,
    host: hostname(),
    bootId: readBootId(),
    pid: process.pid,
    pidStart: readPidStart(process.pid),
    startedAt: new Date().toISOString(),
    nonce,
  };
  const path = join(dir, nonce);
  const tmp = join(dir, `.${nonce}.tmp`);
  await writeFile(tmp, `${JSON.stringify(owner)}\n`, { mode: 0o600, flag: 'wx' });
  await rename(tmp, path);
  let released = false;
  return {
    path,
    owner,
    async release() {
      if (released) return;
      released = true;
      await unlink(path).catch((e: NodeJS.ErrnoException) => {
        if (e.code !== 'ENOENT') throw e;
      });
    },
  };
}

const POLL_MS = 200;

/**
 * Announces a writer and returns once no live GC is announced. While waiting, `onWait` is called
 * once with the GC presence files it waits for. A GC file from another host is waited for too.
 */
export async function enterAsWriter(root: string, signal?: AbortSignal, onWait?: (gcs: PresenceEntry[]) => void): Promise<Presence> {
  const me = await announce(root, 'writer');
  try {
    let told = false;
    for (;;) {
      const gcs = (await scanPresence(root, 'gc')).filter((g) => g.status === 'alive' || g.status === 'foreign');
      if (gcs.length === 0) return me;
      if (!told) {
        told = true;
        onWait?.(gcs);
      }
      await sleep(POLL_MS, signal);
    }
  } catch (e) {
    await me.release();
    throw e;
  }
}

/** Announces a GC; if any writer is (or may be) active, withdraws and returns the writers found. */
export async function enterAsGc(root: string): Promise<{ presence: Presence } | { busy: PresenceEntry[] }> {
  const me = await announce(root, 'gc');
  try {
    const writers = (await scanPresence(root, 'writer')).filter((w) => w.status !== 'stale');
    if (writers.length === 0) return { presence: me };
    await me.release();
    return { busy: writers };
  } catch (e) {
    await me.release();
    throw e;
  }
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(new AbortError('The operation was aborted', { cause: signal.reason }));
    const t = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    const onAbort = (): void => {
      clearTimeout(t);
      reject(new AbortError('The operation was aborted', { cause: signal?.reason }));
    };
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}
