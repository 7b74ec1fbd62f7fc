/**
 * The result of each domain's last backup run, kept durably in the
 * destination (DEST/.kvmbak-last-run/DOMAIN.json, 0600 in a 0700 folder,
 * replaced atomically) so that `kvmbak status` and the metrics file can tell
 * a failed night from a good one, whichever process asks and whenever. The
 * records live beside the domain folders, not in them, so a domain folder
 * holds backup sets only.
 */
import { readFile, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { assertDest, assertDomainName } from '../store/index.js';
import { ensurePrivateDir, errnoCode, isRecord, writeFileAtomic } from '../util/fs.js';

/** The folder of the records, in the destination. */
export const LAST_RUN_DIR = '.kvmbak-last-run';
export const LAST_RUN_FORMAT = 'kvmbak-last-run/1';

export interface LastRun {
  format: typeof LAST_RUN_FORMAT;
  domain: string;
  startedAt: string;
  finishedAt: string;
  ok: boolean;
  /** The failure (ok false). */
  error?: { code?: string; message: string };
  mode?: string;
  /** The set written (ok true). */
  setPath?: string;
  durationSeconds: number;
  /** Raw bytes read from the snapshots. */
  bytesRead: number;
  /** Bytes written to the set (images and memory state). */
  bytesWritten: number;
  /** Seconds the VM was stopped or paused (null: not held). */
  downtimeSeconds: number | null;
  /** Raw bytes read per second of archiving. */
  readBytesPerSecond: number | null;
  /** End of the last successful run (kept across failures); null before the first. */
  lastSuccessAt: string | null;
}

/** Domains with a record in the destination. */
export async function lastRunDomains(dest: string): Promise<string[]> {
  try {
    return (await readdir(join(dest, LAST_RUN_DIR)))
      .filter((n) => n.endsWith('.json') && !n.startsWith('.'))
      .map((n) => n.slice(0, -5))
      .sort();
  } catch (e) {
    if (errnoCode(e) === 'ENOENT') return [];
    throw e;
  }
}

/** Reads the domain's record; null when there is none or it is not one kvmbak wrote. */
export async function readLastRun(dest: string, domain: string): Promise<LastRun | null> {
  let text: string;
  try {
    text = await readFile(join(dest, LAST_RUN_DIR, `${domain}.json`), 'utf8');
  } catch (e) {
    if (errnoCode(e) === 'ENOENT' || errnoCode(e) === 'ENOTDIR') return null;
    throw e;
  }
  try {
    const doc: unknown = JSON.parse(text);
    if (isRecord(doc) && doc.format === LAST_RUN_FORMAT && doc.domain === domain && typeof doc.ok === 'boolean') {
      return doc as unknown as LastRun;
    }
  } catch {
    // A damaged record tells nothing: treated as absent.
  }
  return null;
}

/**
 * Records a run's result. `lastSuccessAt` is this run's end when it
 * succeeded, else carried over from the previous record.
 */
export async function writeLastRun(dest: string, run: Omit<LastRun, 'format' | 'lastSuccessAt'>): Promise<LastRun> {
  assertDomainName(run.domain);
  const dir = join(await assertDest(dest), LAST_RUN_DIR);
  await ensurePrivateDir(dir);
  const previous = await readLastRun(dest, run.domain);
  const record: LastRun = {
    format: LAST_RUN_FORMAT,
    ...run,
    lastSuccessAt: run.ok ? run.finishedAt : (previous?.lastSuccessAt ?? null),
  };
  await writeFileAtomic(join(dir, `${run.domain}.json`), `${JSON.stringify(record, null, 2)}\n`);
  return record;
}
