import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { isAbortError } from '../errors.js';
import {
  type BackupMode,
  CHUNK_STORE_DIR,
  type Manifest,
  type ManifestFormat,
  diskRaw,
  isChunkedMemory,
  isManifestError,
} from '../manifest/index.js';
import { errnoCode, isRealDir } from '../util/fs.js';
import { parseJournal, readJournalText } from './journal.js';
import { walkSet } from './layout.js';
import { compareSetIds, journalFileName, parseSetId } from './naming.js';
import { type OwnerStatus, ownerStatus } from './owner.js';
import { assertDest, domainNames, readSetManifest } from './set.js';

/**
 * complete: manifest.json present and valid. incomplete: no manifest (the run
 * did not finish, or is still running). unreadable: a manifest kvmbak cannot
 * use (damaged, foreign, or written by a newer kvmbak) — prune never touches it.
 */
export type SetStatus = 'complete' | 'incomplete' | 'unreadable';

export interface SetInfo {
  domain: string;
  /** Absolute path of the set folder. */
  path: string;
  /** The folder name, e.g. '20261126T031500Z'. */
  id: string;
  /** Start time from the id (UTC, to the second). */
  time: Date;
  /** Collision suffix of the id (0 for none). */
  seq: number;
  status: SetStatus;
  complete: boolean;
  /** From the manifest (complete sets). */
  mode?: BackupMode;
  /** Disk targets, from the manifest (complete sets). */
  disks?: string[];
  /** Bytes of data files the manifest records in the set folder (images, memory state, chunk lists). */
  storedBytes?: number;
  /** The manifest's format (complete sets): kvmbak/2 when a disk or the memory state is in the chunk store. */
  format?: ManifestFormat;
  /** Raw bytes the set stands for: its disks' raw sizes plus the memory state (complete sets). */
  logicalBytes?: number;
  /**
   * Bytes the set added to the destination when it was written: for a part in the chunk store the
   * chunk files its backup wrote (the chunks the store lacked), for a plain file its size.
   */
  addedBytes?: number;
  /** Of logicalBytes, the raw bytes kept in the chunk store (DEST/.chunks). */
  chunkedBytes?: number;
  /** Bytes of all files in the folder as found (any status). */
  bytesOnDisk: number;
  /** Why the set is not complete: the ManifestError's message and code. */
  error?: string;
  errorCode?: string;
  /** The journal of the run that writes (or wrote) this set: while it exists, the run is in progress or was interrupted. */
  journal?: string;
  /**
   * Whether the journal's run can still be going: 'alive' (in progress),
   * 'dead' (interrupted: `kvmbak recover` finishes or undoes it), 'unknown'
   * (another host's run), null when the journal cannot be read.
   */
  journalOwner?: OwnerStatus | null;
}

/** A complete set's sizes (see SetInfo). */
export function setFigures(m: Manifest): Pick<SetInfo, 'format' | 'storedBytes' | 'logicalBytes' | 'addedBytes' | 'chunkedBytes'> {
  let storedBytes = 0;
  let logicalBytes = 0;
  let addedBytes = 0;
  let chunkedBytes = 0;
  for (const d of m.disks) {
    logicalBytes += diskRaw(d).rawBytes;
    if (d.chunks !== undefined) {
      storedBytes += d.chunks.listBytes;
      addedBytes += d.chunks.addedBytes;
      chunkedBytes += d.chunks.rawBytes;
    } else {
      storedBytes += d.image!.storedBytes;
      addedBytes += d.image!.storedBytes;
    }
  }
  if (m.memory) {
    logicalBytes += m.memory.bytes;
    if (isChunkedMemory(m.memory)) {
      storedBytes += m.memory.chunks.listBytes;
      addedBytes += m.memory.chunks.addedBytes;
      chunkedBytes += m.memory.chunks.rawBytes;
    } else {
      storedBytes += m.memory.bytes;
      addedBytes += m.memory.bytes;
    }
  }
  return { format: m.format, storedBytes, logicalBytes, addedBytes, chunkedBytes };
}

/** Ascending by domain (byte order), then by time and collision suffix. */
function compareInfos(a: SetInfo, b: SetInfo): number {
  if (a.domain !== b.domain) return a.domain < b.domain ? -1 : 1;
  return compareSetIds(a, b);
}

/** Whether the process that writes a journal may still run; null when the journal is unreadable. */
async function journalOwnerStatus(path: string): Promise<OwnerStatus | null> {
  try {
    return ownerStatus(parseJournal(await readJournalText(path), path).owner);
  } catch {
    return null;
  }
}

/**
 * One set as found. Never throws for a problem of the set itself (a
 * manifest that is a folder, a FIFO, a link, unreadable files): the set is
 * then 'unreadable' with the reason in `error`, and the listing goes on.
 */
async function describeSet(domain: string, domainDir: string, name: string, names: Set<string>): Promise<SetInfo> {
  const parsed = parseSetId(name)!;
  const path = join(domainDir, name);
  let bytesOnDisk = 0;
  let walkError: unknown = null;
  try {
    bytesOnDisk = (await walkSet(path)).reduce((sum, e) => sum + (e.type === 'file' ? e.size : 0), 0);
  } catch (e) {
    walkError = e;
  }
  const info: SetInfo = {
    domain,
    path,
    id: parsed.id,
    time: parsed.time,
    seq: parsed.seq,
    status: 'incomplete',
    complete: false,
    bytesOnDisk,
  };
  const journal = journalFileName(name);
  if (names.has(journal)) {
    info.journal = join(domainDir, journal);
    info.journalOwner = await journalOwnerStatus(info.journal);
  }
  try {
    if (walkError !== null) throw walkError;
    const m = await readSetManifest(path);
    info.status = 'complete';
    info.complete = true;
    info.mode = m.mode;
    info.disks = m.disks.map((d) => d.target);
    Object.assign(info, setFigures(m));
  } catch (e) {
    if (isAbortError(e)) throw e;
    info.status = isManifestError(e, 'KVMBAK_MANIFEST_MISSING') ? 'incomplete' : 'unreadable';
    info.error = (e as Error).message;
    info.errorCode = errnoCode(e) ?? 'KVMBAK_SET_UNREADABLE';
  }
  return info;
}

/**
 * Lists the backup sets under DEST (or DEST/DOMAIN), sorted by domain, then
 * time. DEST must exist; a domain without a folder has no sets. Folders
 * whose names are not set ids are ignored, and so is DEST/lost+found. A set
 * that cannot be read is listed as 'unreadable' with the reason; the others
 * are listed all the same.
 */
export async function listSets(dest: string, domain?: string): Promise<SetInfo[]> {
  const root = await assertDest(dest);
  const out: SetInfo[] = [];
  for (const d of await domainNames(root, domain)) {
    if (domain === undefined && d === CHUNK_STORE_DIR) continue; // the chunk store, not a domain
    const domainDir = join(root, d);
    if (!(await isRealDir(domainDir))) continue;
    const names = new Set(await readdir(domainDir));
    for (const name of names) {
      if (parseSetId(name) === null || !(await isRealDir(join(domainDir, name)))) continue;
      out.push(await describeSet(d, domainDir, name, names));
    }
  }
  return out.sort(compareInfos);
}
