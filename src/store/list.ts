import { lstat, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { isManifestError, readManifest, type BackupMode } from '../manifest/index.js';
import { errnoCode } from '../util/fs.js';
import { walkSet } from './layout.js';
import { compareSetIds, journalFileName, parseSetId } from './naming.js';
import { assertDest, domainNames } from './set.js';

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
  /** Bytes of data files the manifest records (images + memory state). */
  storedBytes?: number;
  /** Bytes of all files in the folder as found (any status). */
  bytesOnDisk: number;
  /** Why the set is not complete: the ManifestError's message and code. */
  error?: string;
  errorCode?: string;
  /** The journal of an interrupted run that wrote this set: `kvmbak recover` must see it first. */
  journal?: string;
}

/** Ascending by domain (byte order), then by time and collision suffix. */
function compareInfos(a: SetInfo, b: SetInfo): number {
  if (a.domain !== b.domain) return a.domain < b.domain ? -1 : 1;
  return compareSetIds(a, b);
}

async function isRealDir(path: string): Promise<boolean> {
  try {
    return (await lstat(path)).isDirectory();
  } catch (e) {
    if (errnoCode(e) === 'ENOENT') return false;
    throw e;
  }
}

async function describeSet(domain: string, domainDir: string, name: string, names: Set<string>): Promise<SetInfo> {
  const parsed = parseSetId(name)!;
  const path = join(domainDir, name);
  const bytesOnDisk = (await walkSet(path)).reduce((sum, e) => sum + (e.type === 'file' ? e.size : 0), 0);
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
  if (names.has(journal)) info.journal = join(domainDir, journal);
  try {
    const m = await readManifest(path);
    info.status = 'complete';
    info.complete = true;
    info.mode = m.mode;
    info.disks = m.disks.map((d) => d.target);
    info.storedBytes = m.disks.reduce((sum, d) => sum + d.image.storedBytes, m.memory?.bytes ?? 0);
  } catch (e) {
    if (!isManifestError(e)) throw e;
    info.status = e.code === 'KVMBAK_MANIFEST_MISSING' ? 'incomplete' : 'unreadable';
    info.error = e.message;
    info.errorCode = e.code;
  }
  return info;
}

/**
 * Lists the backup sets under DEST (or DEST/DOMAIN), sorted by domain, then
 * time. DEST must exist; a domain without a folder has no sets. Folders
 * whose names are not set ids are ignored, and so is DEST/lost+found.
 */
export async function listSets(dest: string, domain?: string): Promise<SetInfo[]> {
  const root = await assertDest(dest);
  const out: SetInfo[] = [];
  for (const d of await domainNames(root, domain)) {
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
