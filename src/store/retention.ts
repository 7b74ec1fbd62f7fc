/**
 * Retention: which sets `kvmbak prune` keeps, restic/borg style, per domain.
 *
 * Only complete sets count for the rules:
 *   keepLast N     the N newest sets;
 *   keepDaily N    the newest set of each of the N most recent days that have sets;
 *   keepWeekly N   the same per ISO 8601 week (Monday to Sunday);
 *   keepMonthly N  the same per calendar month.
 * Days, weeks and months are UTC (the same calendar as the set names, so the
 * result does not depend on the machine's time zone). A set kept by any rule
 * survives. Whatever the rules, the newest complete set of a domain is kept,
 * sets with a journal of an interrupted run are kept (recover needs them),
 * unreadable sets (damaged, foreign or newer manifest) are left alone, and
 * incomplete sets are kept while less than a day old (they may be in
 * progress) and removed after.
 *
 * Then, when DEST has a chunk store (DEST/.chunks), prune collects the chunks
 * no remaining set references (store/gc.ts), so their space is free when it
 * returns — every time, also when no set was removed (that finishes a
 * collection that was killed). A backup writing into the store at that moment
 * makes the collection remove nothing ('busy'); the next prune collects.
 */
import { ConfigError, isAbortError, isKvmbakError, throwIfAborted } from '../errors.js';
import type { GcProgress } from '../chunks/index.js';
import { type DestinationGcResult, collectDestinationGarbage, estimateFreed, hasChunkStore } from './gc.js';
import { isLockError, isStoreError } from './errors.js';
import { type SetInfo, type SetStatus, listSets } from './list.js';
import { acquireLock } from './lock.js';
import { compareSetIds } from './naming.js';
import { deleteSet, readSetManifest } from './set.js';
import { chunkStorePath as chunkStoreOf } from './chunked.js';

export interface RetentionRules {
  keepLast?: number;
  keepDaily?: number;
  keepWeekly?: number;
  keepMonthly?: number;
}

/** What retention needs to know about a set (a SetInfo has it all). */
export interface RetentionCandidate {
  domain: string;
  path: string;
  time: Date;
  seq: number;
  status: SetStatus;
  journal?: string;
}

export interface RetentionSelection<T extends RetentionCandidate> {
  /** Sorted by domain, then time. */
  keep: T[];
  remove: T[];
  /** Why each set (by path) is kept or removed. */
  reasons: Record<string, string[]>;
}

/** An incomplete set younger than this may still be written. */
export const INCOMPLETE_GRACE_MS = 24 * 3600 * 1000;

const RULE_NAMES = ['keepLast', 'keepDaily', 'keepWeekly', 'keepMonthly'] as const;

/** Throws ConfigError unless every rule is an integer >= 0 and at least one is >= 1. */
export function assertRetentionRules(rules: RetentionRules): void {
  for (const name of RULE_NAMES) {
    const v = rules[name];
    if (v !== undefined && (!Number.isSafeInteger(v) || v < 0)) {
      throw new ConfigError(`${name} must be a whole number >= 0, got ${String(v)}`, name);
    }
  }
  if (!RULE_NAMES.some((n) => (rules[n] ?? 0) >= 1)) {
    throw new ConfigError('no retention rule: give at least one of keepLast, keepDaily, keepWeekly, keepMonthly (>= 1)', 'keepLast');
  }
}

const pad = (n: number, width = 2): string => String(n).padStart(width, '0');

/** '2026-11-26' (UTC). */
export function utcDayKey(t: Date): string {
  return `${t.getUTCFullYear()}-${pad(t.getUTCMonth() + 1)}-${pad(t.getUTCDate())}`;
}

/** '2026-11' (UTC). */
export function utcMonthKey(t: Date): string {
  return `${t.getUTCFullYear()}-${pad(t.getUTCMonth() + 1)}`;
}

/** ISO 8601 week of the UTC date: '2026-W48'. The week's year is the year of its Thursday. */
export function isoWeekKey(t: Date): string {
  const day = Date.UTC(t.getUTCFullYear(), t.getUTCMonth(), t.getUTCDate());
  const weekday = (new Date(day).getUTCDay() + 6) % 7; // Monday = 0
  const thursday = new Date(day + (3 - weekday) * 86_400_000);
  const year = thursday.getUTCFullYear();
  const week = Math.floor((thursday.getTime() - Date.UTC(year, 0, 1)) / (7 * 86_400_000)) + 1;
  return `${year}-W${pad(week)}`;
}

const BUCKETS = [
  { rule: 'keepDaily', label: 'daily', key: utcDayKey },
  { rule: 'keepWeekly', label: 'weekly', key: isoWeekKey },
  { rule: 'keepMonthly', label: 'monthly', key: utcMonthKey },
] as const;

/** Decides which sets to keep (pure: the clock is `now`). See the module comment for the rules. */
export function selectRetention<T extends RetentionCandidate>(sets: readonly T[], options: RetentionRules & { now?: Date }): RetentionSelection<T> {
  assertRetentionRules(options);
  const now = (options.now ?? new Date()).getTime();
  const reasons: Record<string, string[]> = {};
  const keepSet = new Set<T>();
  const why = (s: T, reason: string, keep: boolean): void => {
    (reasons[s.path] ??= []).push(reason);
    if (keep) keepSet.add(s);
  };

  const byDomain = new Map<string, T[]>();
  for (const s of sets) {
    const list = byDomain.get(s.domain) ?? [];
    list.push(s);
    byDomain.set(s.domain, list);
  }

  for (const domainSets of byDomain.values()) {
    const complete = domainSets.filter((s) => s.status === 'complete').sort((a, b) => compareSetIds(b, a));

    const keepLast = options.keepLast ?? 0;
    complete.slice(0, keepLast).forEach((s, i) => why(s, `last ${i + 1} of ${keepLast}`, true));

    for (const b of BUCKETS) {
      const n = options[b.rule] ?? 0;
      let count = 0;
      let lastKey: string | null = null;
      for (const s of complete) {
        if (count >= n) break;
        const key = b.key(s.time);
        if (key === lastKey) continue;
        lastKey = key;
        count++;
        why(s, `${b.label} ${key}`, true);
      }
    }

    if (complete.length > 0) why(complete[0], 'newest complete set', true);

    for (const s of domainSets) {
      if (s.journal !== undefined) {
        why(s, 'has the journal of an interrupted run: run kvmbak recover first', true);
      } else if (s.status === 'unreadable') {
        why(s, 'manifest unreadable (damaged, foreign or newer): prune leaves it alone', true);
      } else if (s.status === 'incomplete') {
        if (now - s.time.getTime() < INCOMPLETE_GRACE_MS) {
          why(s, 'incomplete, less than a day old: may still be in progress', true);
        } else {
          why(s, 'incomplete, more than a day old', false);
        }
      } else if (!keepSet.has(s)) {
        why(s, 'matched no keep rule', false);
      }
    }
  }

  const order = (a: T, b: T): number => (a.domain !== b.domain ? (a.domain < b.domain ? -1 : 1) : compareSetIds(a, b));
  const all = [...sets].sort(order);
  return { keep: all.filter((s) => keepSet.has(s)), remove: all.filter((s) => !keepSet.has(s)), reasons };
}

export interface PruneOptions {
  /** Decide and report, delete nothing (takes no lock). */
  dryRun?: boolean;
  /** The clock for the rules (default: now). */
  now?: Date;
  signal?: AbortSignal;
  /** Told before each set is deleted (deletions of large sets take a while). */
  onProgress?: (event: PruneProgress) => void;
  /** Told as the chunk store is collected (after the deletions). */
  onGcProgress?: (event: GcProgress) => void;
  /** Collect the chunk store after removing sets (default true). */
  collectGarbage?: boolean;
}

/** One set about to be deleted: its place in this run's deletions, and its size. */
export interface PruneProgress {
  type: 'delete';
  domain: string;
  path: string;
  bytes: number;
  /** 1-based position among the sets this run deletes, and their count so far known (for this domain). */
  index: number;
  count: number;
}

export interface PruneDomainResult {
  domain: string;
  keep: SetInfo[];
  remove: SetInfo[];
  reasons: Record<string, string[]>;
  /** Paths actually deleted (none in a dry run). */
  deleted: string[];
  /** bytesOnDisk of the deleted sets (of the sets to remove, in a dry run). */
  freedBytes: number;
  /** Set when the domain was skipped: another kvmbak holds its lock, or its folder is not private. */
  error?: string;
  /**
   * Thin snapshots kept as thin_delta bases (manifest `chunks.base`) that only the deleted sets
   * recorded: no remaining set of the domain uses them (the caller with LVM access removes them).
   */
  orphanBases: OrphanBase[];
}

/** A base LV no remaining set records (see PruneDomainResult.orphanBases). */
export interface OrphanBase {
  vg: string;
  lv: string;
  thinId: number;
}

/** The thin_delta bases a set's manifest records ([] when it has none or cannot be read). */
async function basesOf(setPath: string): Promise<OrphanBase[]> {
  const m = await readSetManifest(setPath).catch(() => null);
  if (m === null) return [];
  return m.disks.flatMap((d) => (d.chunks?.base !== undefined ? [{ vg: d.vg, lv: d.chunks.base.lv, thinId: d.chunks.base.thinId }] : []));
}

/**
 * What became of the chunk store (DEST/.chunks) after the deletions: the collection's figures
 * ('collected'), 'busy' (a backup writes into the store: nothing removed, the next prune collects),
 * 'failed' (a set's chunk list is damaged or unreadable: nothing removed; `error` says which), or
 * 'not-collected' (a dry run, or collectGarbage false: the store was not looked at).
 */
export type PruneGcResult =
  | DestinationGcResult
  | { status: 'failed'; store: string; error: string; errorCode: string }
  | {
      /** A dry run: what removing the sets would free, read-only (see estimateFreed). */
      status: 'estimated';
      store: string;
      /** Chunks only the sets to remove use, and their bytes; the collection also removes any chunk no set used before. */
      chunksRemoved: number;
      bytesFreed: number;
      listsRead: number;
    }
  | { status: 'not-collected'; store: string };

export interface PruneResult {
  dryRun: boolean;
  domains: PruneDomainResult[];
  /** The chunk store's collection; null when DEST has no chunk store. */
  gc: PruneGcResult | null;
}

/**
 * Applies the retention rules to DEST's sets (one domain, or all of them),
 * deleting what selectRetention removes while holding each domain's lock.
 * For a named domain a held lock throws LockError; over all domains a locked
 * domain is skipped and reported in its result's `error`.
 */
export async function pruneSets(dest: string, domain: string | undefined, rules: RetentionRules, options: PruneOptions = {}): Promise<PruneResult> {
  assertRetentionRules(rules);
  const dryRun = options.dryRun ?? false;
  const now = options.now ?? new Date();
  const found = await listSets(dest, domain);
  const domains = domain !== undefined ? [domain] : [...new Set(found.map((s) => s.domain))];
  const result: PruneResult = { dryRun, domains: [], gc: null };

  for (const d of domains) {
    throwIfAborted(options.signal);
    const entry: PruneDomainResult = { domain: d, keep: [], remove: [], reasons: {}, deleted: [], freedBytes: 0, orphanBases: [] };
    result.domains.push(entry);
    if (!found.some((s) => s.domain === d)) continue;
    let lock;
    if (!dryRun) {
      try {
        lock = await acquireLock(dest, d, 'prune');
      } catch (e) {
        // over all domains, one that cannot be locked (held, or its folder is not private) is reported and skipped
        if (!(isLockError(e) || isStoreError(e, 'KVMBAK_UNSAFE_DIR')) || domain !== undefined) throw e;
        entry.error = e.message;
        continue;
      }
    }
    try {
      const sel = selectRetention(await listSets(dest, d), { ...rules, now });
      entry.keep = sel.keep;
      entry.remove = sel.remove;
      entry.reasons = sel.reasons;
      for (const [i, s] of sel.remove.entries()) {
        if (dryRun) {
          entry.freedBytes += s.bytesOnDisk;
          continue;
        }
        throwIfAborted(options.signal);
        options.onProgress?.({ type: 'delete', domain: d, path: s.path, bytes: s.bytesOnDisk, index: i + 1, count: sel.remove.length });
        const bases = await basesOf(s.path);
        if (await deleteSet(s.path, { dest })) {
          entry.deleted.push(s.path);
          entry.freedBytes += s.bytesOnDisk;
          entry.orphanBases.push(...bases);
        }
      }
      if (entry.orphanBases.length > 0) {
        const kept = new Set((await Promise.all(sel.keep.map((k) => basesOf(k.path)))).flat().map((b) => `${b.vg}/${b.lv}/${b.thinId}`));
        entry.orphanBases = entry.orphanBases.filter((b) => !kept.has(`${b.vg}/${b.lv}/${b.thinId}`));
      }
    } finally {
      await lock?.release();
    }
  }
  result.gc = dryRun
    ? await estimateAfterPrune(dest, result, options.signal)
    : await collectAfterPrune(dest, options.collectGarbage === false, options);
  return result;
}

/** A dry run's figures for the chunk store (see PruneGcResult). */
async function estimateAfterPrune(dest: string, result: PruneResult, signal?: AbortSignal): Promise<PruneGcResult | null> {
  if (!(await hasChunkStore(dest))) return null;
  const store = chunkStoreOf(dest);
  try {
    const e = await estimateFreed(
      dest,
      result.domains.flatMap((d) => d.remove.map((s) => s.path)),
      signal,
    );
    if (e === null) return { status: 'not-collected', store };
    return { status: 'estimated', store, chunksRemoved: e.chunks, bytesFreed: e.bytes, listsRead: e.listsRead };
  } catch (e) {
    if (isAbortError(e)) throw e;
    return {
      status: 'failed',
      store,
      error: (e as Error).message,
      errorCode: isKvmbakError(e) ? e.code : ((e as NodeJS.ErrnoException).code ?? 'EIO'),
    };
  }
}

/** The chunk store's collection after a prune (see PruneGcResult); null without a store. */
async function collectAfterPrune(dest: string, skip: boolean, options: PruneOptions): Promise<PruneGcResult | null> {
  if (!(await hasChunkStore(dest))) return null;
  if (skip) return { status: 'not-collected', store: chunkStoreOf(dest) };
  throwIfAborted(options.signal);
  try {
    return await collectDestinationGarbage(dest, {
      ...(options.signal !== undefined ? { signal: options.signal } : {}),
      ...(options.onGcProgress !== undefined ? { onProgress: options.onGcProgress } : {}),
    });
  } catch (e) {
    if (isAbortError(e)) throw e;
    // The sets are removed already: the result says so, and why the store was not collected.
    return {
      status: 'failed',
      store: chunkStoreOf(dest),
      error: (e as Error).message,
      errorCode: isKvmbakError(e) ? e.code : ((e as NodeJS.ErrnoException).code ?? 'EIO'),
    };
  }
}
