/**
 * Prune with the LVM side: the sets and the chunk store as pruneSets does, then the thin
 * snapshots kept as thin_delta bases that only the deleted sets recorded. A base is removed only
 * while it still is what the set recorded (tagged kvmbak-base, the same thin id), so an LV of the
 * same name made since is never touched. LVM is asked only when there is such a base.
 */
import { isAbortError } from '../errors.js';
import { Lvm } from '../lvm/index.js';
import { removeBaseIfOurs } from './bases.js';
import { type PruneOptions, type PruneResult, type RetentionRules, pruneSets } from '../store/index.js';

export interface PruneBackupsOptions extends PruneOptions {
  /** Reuse an Lvm (tests inject one). */
  lvm?: Lvm;
}

export interface PruneBackupsResult extends PruneResult {
  /** Bases removed (VG/LV), and one line per base that could not be. */
  bases: { removed: string[]; errors: string[] };
}

/** pruneSets, then the removal of the bases no remaining set records (see the module comment). */
export async function pruneBackups(
  dest: string,
  domain: string | undefined,
  rules: RetentionRules,
  options: PruneBackupsOptions = {},
): Promise<PruneBackupsResult> {
  const { lvm: given, ...pruneOptions } = options;
  const result = await pruneSets(dest, domain, rules, pruneOptions);
  const bases = { removed: [] as string[], errors: [] as string[] };
  const orphans = result.domains.flatMap((d) => d.orphanBases);
  if (orphans.length === 0) return { ...result, bases };
  const lvm = given ?? new Lvm();
  for (const b of orphans) {
    const name = `${b.vg}/${b.lv}`;
    try {
      const removed = await removeBaseIfOurs(lvm, b, options.signal !== undefined ? { signal: options.signal } : {});
      if (removed !== null) bases.removed.push(removed);
    } catch (e) {
      if (isAbortError(e)) throw e;
      bases.errors.push(`could not remove the base ${name}, which no remaining set uses (${(e as Error).message}); remove it with lvremove ${name}`);
    }
  }
  return { ...result, bases };
}
