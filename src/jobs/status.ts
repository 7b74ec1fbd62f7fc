/**
 * `kvmbak status DEST`: per domain, the newest complete set, its age and the
 * last run's result — what monitoring needs to know whether last night's
 * backup happened.
 */
import { assertDest, listSets, type SetInfo } from '../store/index.js';
import { type LastRun, lastRunDomains, readLastRun } from './last-run.js';

export interface DomainStatus {
  domain: string;
  /** The newest complete set, if any. */
  newest: { id: string; path: string; time: string; mode?: string } | null;
  /** Seconds since the newest complete set was started (null: none). */
  ageSeconds: number | null;
  /** Complete sets of the domain. */
  completeSets: number;
  lastRun: LastRun | null;
  /** The last run recorded failed. */
  failed: boolean;
  /** No complete set, or the newest is older than maxAgeSeconds (only with maxAgeSeconds). */
  stale: boolean;
  /** Neither failed nor stale. */
  ok: boolean;
  /** Why not ok, in words. */
  problems: string[];
}

export interface StatusOptions {
  /** Only this domain. */
  domain?: string;
  /** A newest complete set older than this (seconds) makes the domain stale. */
  maxAgeSeconds?: number;
  now?: Date;
}

export interface StatusResult {
  dest: string;
  ok: boolean;
  domains: DomainStatus[];
}

/** The status of every domain in DEST (or one). */
export async function backupStatus(dest: string, options: StatusOptions = {}): Promise<StatusResult> {
  const root = await assertDest(dest);
  const now = (options.now ?? new Date()).getTime();
  const sets = await listSets(root, options.domain);
  const names =
    options.domain !== undefined ? [options.domain] : [...new Set([...sets.map((s) => s.domain), ...(await lastRunDomains(root))])].sort();
  const domains: DomainStatus[] = [];
  for (const domain of names) {
    const complete = sets.filter((s: SetInfo) => s.domain === domain && s.status === 'complete');
    const lastRun = await readLastRun(root, domain);
    if (complete.length === 0 && lastRun === null && options.domain === undefined) continue;
    const newest = complete.at(-1) ?? null;
    const ageSeconds = newest === null ? null : Math.max(0, (now - newest.time.getTime()) / 1000);
    const failed = lastRun !== null && !lastRun.ok;
    const problems: string[] = [];
    if (failed) problems.push(`last run failed at ${lastRun.finishedAt}: ${lastRun.error?.message ?? 'unknown error'}`);
    let stale = false;
    if (options.maxAgeSeconds !== undefined) {
      if (newest === null) {
        stale = true;
        problems.push('no complete backup set');
      } else if (ageSeconds! > options.maxAgeSeconds) {
        stale = true;
        problems.push(`newest complete set ${newest.id} is older than the maximum age`);
      }
    }
    domains.push({
      domain,
      newest:
        newest === null
          ? null
          : { id: newest.id, path: newest.path, time: newest.time.toISOString(), ...(newest.mode !== undefined ? { mode: newest.mode } : {}) },
      ageSeconds,
      completeSets: complete.length,
      lastRun,
      failed,
      stale,
      ok: !failed && !stale,
      problems,
    });
  }
  return { dest: root, ok: domains.every((d) => d.ok), domains };
}
