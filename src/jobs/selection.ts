/**
 * Which domains a run backs up: those named, or with `all` every defined
 * domain whose disks kvmbak can take (LVs, after the exclude rules) — the
 * others are skipped with their reason, which is never a failure of the run.
 */
import { isKvmbakError } from '../errors.js';
import { type Hypervisor } from '../libvirt/index.js';
import { classifyDisks } from '../backup/index.js';

export interface SkippedDomain {
  domain: string;
  reason: string;
}

export interface SelectionOptions {
  /** Domains named (names or UUIDs); ignored with `all`. */
  names?: readonly string[];
  all?: boolean;
  /** Domains left out (names). */
  excludeDomains?: readonly string[];
  /** Disk targets left out of a domain (with `all`, targets a domain does not have are ignored). */
  excludeFor?: (domain: string) => readonly string[];
}

export interface Selection {
  /** Domain names, in order (names as given when they are not defined: their backup says so). */
  domains: string[];
  skipped: SkippedDomain[];
  /** Every defined domain's name. */
  defined: string[];
  /** Disk targets of each selected domain that exists. */
  targets: Record<string, string[]>;
}

/** Chooses the domains of a run on an open connection. */
export async function selectDomains(hv: Hypervisor, options: SelectionOptions): Promise<Selection> {
  const all = await hv.listDomains();
  const defined = all.map((d) => d.name);
  const excluded = new Set(options.excludeDomains ?? []);
  const byKey = new Map<string, string>();
  for (const d of all) {
    byKey.set(d.name, d.name);
    byKey.set(d.uuid.toLowerCase(), d.name);
  }
  const candidates = options.all ? defined : [...new Set((options.names ?? []).map((n) => byKey.get(n) ?? byKey.get(n.toLowerCase()) ?? n))];
  const domains: string[] = [];
  const skipped: SkippedDomain[] = [];
  const targets: Record<string, string[]> = {};
  for (const name of candidates) {
    if (excluded.has(name)) continue;
    if (!defined.includes(name)) {
      domains.push(name);
      continue;
    }
    const dom = await hv.lookupDomain(name);
    try {
      const disks = await dom.disks();
      targets[name] = disks.map((d) => d.target);
      if (options.all) {
        const exclude = (options.excludeFor?.(name) ?? []).filter((t) => targets[name]!.includes(t));
        try {
          classifyDisks(name, disks, exclude);
        } catch (e) {
          if (!isKvmbakError(e)) throw e;
          skipped.push({ domain: name, reason: e.message });
          continue;
        }
      }
      domains.push(name);
    } finally {
      dom.free();
    }
  }
  return { domains, skipped, defined, targets };
}
