/**
 * Finishing or undoing interrupted backups (after a crash, `kill -9` or a
 * power loss): bring a VM left shut off, paused or frozen back to the state
 * it had, remove the run's snapshots, delete the partial set. Runs whose
 * process may still be alive are never touched.
 */
import { existsSync } from 'node:fs';
import { hostname } from 'node:os';
import { ConfigError, isLibvirtError } from '../errors.js';
import { type Hypervisor, openHypervisor } from '../libvirt/index.js';
import { KVMBAK_TAG, type LogicalVolume, Lvm } from '../lvm/index.js';
import {
  type Journal,
  type JournalRecord,
  acquireLock,
  currentBootId,
  deleteSet,
  isLockError,
  ownerStatus,
  readJournals,
  reopenJournal,
} from '../store/index.js';

export interface RecoveredRun {
  domain: string;
  setId: string;
  journal: string;
  /** What was done, in words. */
  actions: string[];
  /** Set when the run could not be fully undone (the journal is kept). */
  error?: string;
  /** The run's process may still be running: left alone. */
  skipped?: string;
}

export interface RecoverOptions {
  /** Backup destination whose journals are read. Without it, only orphaned snapshots are removed. */
  dest?: string;
  /** Only this domain. */
  domain?: string;
  uri?: string;
}

export interface RecoverResult {
  runs: RecoveredRun[];
  /** Snapshots tagged `kvmbak` whose run is gone, removed. */
  orphanSnapshots: string[];
  errors: string[];
}

/** The first 8 hex digits of a boot id, as owner tags carry it. */
function bootTag(bootId: string): string {
  return bootId.replace(/-/g, '').slice(0, 8);
}

/** Tag naming the process that made a snapshot: kvmbak-owner-PID-START-BOOT. */
export function ownerTag(owner: { pid: number; pidStart: number | null; bootId: string | null }): string {
  return `kvmbak-owner-${owner.pid}-${owner.pidStart ?? 0}-${bootTag(owner.bootId ?? 'nobootid')}`;
}

function parseOwnerTag(tag: string): { pid: number; pidStart: number | null; boot: string } | null {
  const m = /^kvmbak-owner-(\d+)-(\d+)-([0-9a-z]+)$/.exec(tag);
  if (!m) return null;
  return { pid: Number(m[1]), pidStart: Number(m[2]) || null, boot: m[3]! };
}

/** Whether the process named by a snapshot's owner tag is gone (another boot, or no such process now). */
function ownerTagDead(tags: readonly string[]): boolean {
  for (const t of tags) {
    const o = parseOwnerTag(t);
    if (o === null) continue;
    const bootNow = currentBootId();
    if (bootNow !== null && bootTag(bootNow) !== o.boot) return true;
    return ownerStatus({ pid: o.pid, pidStart: o.pidStart, bootId: null, host: hostname() }) === 'dead';
  }
  return false;
}

/**
 * Journals of runs of this process that gave up with something left to undo
 * (a VM that could not be brought back, snapshots that could not be removed).
 * Their owner is this live process, so readJournals reports them 'alive';
 * recover takes them over from here instead (by path).
 */
const handedOver = new Map<string, Journal>();

/** A finished run of this process leaves its journal to recover (see handedOver). */
export function handOverJournal(journal: Journal): void {
  handedOver.set(journal.path, journal);
}

interface DomainRecoverInput {
  dest: string;
  domain: string;
  hv: Hypervisor;
  lvm: Lvm;
  /** The caller holds the domain's lock already. */
  holdsLock: boolean;
}

/** Recovers every dead run of one domain under DEST. */
export async function recoverDomain(input: DomainRecoverInput): Promise<RecoveredRun[]> {
  const records = await readJournals(input.dest, input.domain);
  const out: RecoveredRun[] = [];
  for (const r of records) {
    const own = handedOver.get(r.path);
    if (r.ownerStatus !== 'dead' && r.document !== undefined && own === undefined) {
      out.push({
        domain: r.domain,
        setId: r.setId,
        journal: r.path,
        actions: [],
        skipped: `kvmbak pid ${r.document.owner.pid} on ${r.document.owner.host} may still be running it`,
      });
      continue;
    }
    out.push(await recoverRun(r, input, own));
  }
  return out;
}

async function recoverRun(r: JournalRecord, input: DomainRecoverInput, own: Journal | undefined): Promise<RecoveredRun> {
  const res: RecoveredRun = { domain: r.domain, setId: r.setId, journal: r.path, actions: [] };
  if (r.document === undefined || r.assessment === undefined) {
    res.error = `journal is unreadable (${r.error}); check the domain, remove snapshots tagged ${KVMBAK_TAG} by hand, then delete ${r.path}`;
    return res;
  }
  const a = r.assessment;
  const planned = r.document.entries.find((e) => e.step === 'planned');
  const stateBefore = planned?.step === 'planned' ? planned.stateBefore : 'running';
  let journal: Journal;
  try {
    journal = own ?? (await reopenJournal(r.path));
  } catch (e) {
    res.skipped = (e as Error).message;
    return res;
  }
  let vmOk = true;
  // 1. The VM first.
  if (a.vm === 'held') {
    try {
      const dom = await input.hv.lookupDomain(r.domain);
      try {
        const state = (await dom.info()).state;
        if (a.windowAction === 'save') {
          if (state === 'shutoff') {
            // The state file, when there is one: also after a crash between the save and its
            // journal entry. Without one (or when an unfinished one is refused) a cold start.
            let restored = false;
            if (a.memoryFile !== null && existsSync(a.memoryFile)) {
              try {
                // No start-mode flag: the image records whether the domain ran or was paused.
                await input.hv.restoreDomain(a.memoryFile);
                restored = true;
                res.actions.push(`restored ${r.domain} from its saved memory ${a.memoryFile}`);
              } catch (e) {
                if (a.memorySaved) throw e;
              }
            }
            if (!restored) {
              await dom.start();
              res.actions.push(`started ${r.domain} (its memory was not saved completely)`);
            }
            if (stateBefore === 'paused' && (await dom.info()).state === 'running') {
              await dom.suspend();
              res.actions.push(`paused ${r.domain} again, as it was`);
            }
          } else if (state === 'paused' && stateBefore !== 'paused') {
            await dom.resume();
            res.actions.push(`resumed ${r.domain}`);
          } else if (state === 'running' && stateBefore === 'paused') {
            await dom.suspend();
            res.actions.push(`paused ${r.domain} again, as it was`);
          }
        } else if (a.windowAction === 'suspend') {
          if (state === 'paused' && stateBefore !== 'paused') {
            await dom.resume();
            res.actions.push(`resumed ${r.domain}`);
          }
        } else if (a.windowAction === 'freeze') {
          if (state === 'running') {
            const n = await dom.fsThaw().catch(() => 0);
            res.actions.push(`thawed the filesystems of ${r.domain} (${n})`);
          }
        }
      } finally {
        dom.free();
      }
      await journal.record({ step: 'resumed' });
    } catch (e) {
      vmOk = false;
      res.error = `could not bring ${r.domain} back: ${(e as Error).message}`;
    }
  }
  // 2. Snapshots: those the journal names, and any other with the run's tag.
  const names = new Map<string, { vg: string; lv: string }>();
  for (const s of a.snapshots) names.set(`${s.vg}/${s.name}`, { vg: s.vg, lv: s.name });
  if (a.runTag !== null) {
    try {
      for (const lv of await input.lvm.list({ tag: a.runTag })) names.set(lv.fullName, { vg: lv.vg, lv: lv.lv });
    } catch (e) {
      res.error = `${res.error ? `${res.error}; ` : ''}could not list snapshots tagged ${a.runTag}: ${(e as Error).message}`;
    }
  }
  let snapsOk = true;
  for (const [full, s] of names) {
    try {
      if (await input.lvm.remove(s, { missingOk: true })) res.actions.push(`removed snapshot ${full}`);
    } catch (e) {
      snapsOk = false;
      res.error = `${res.error ? `${res.error}; ` : ''}could not remove snapshot ${full}: ${(e as Error).message}`;
    }
  }
  if (snapsOk) await journal.record({ step: 'snapshots-removed' });
  // 3. The set: a committed one stays; a partial one goes (once the VM no longer needs its state file).
  if (a.committed) {
    res.actions.push(`set ${r.setId} was complete; only its journal was left`);
  } else if (vmOk) {
    const setPath = r.document.setPath;
    if (await deleteSet(setPath, { dest: input.dest }).catch(() => false)) {
      res.actions.push(`deleted the partial set ${setPath}`);
    }
  }
  if (vmOk && snapsOk && res.error === undefined) {
    await journal.remove();
    handedOver.delete(r.path);
  }
  return res;
}

/** Removes snapshots tagged `kvmbak` whose creating process is gone. */
async function sweepOrphans(lvm: Lvm, result: RecoverResult): Promise<void> {
  let lvs: LogicalVolume[];
  try {
    lvs = await lvm.list({ tag: KVMBAK_TAG });
  } catch (e) {
    result.errors.push(`could not list snapshots tagged ${KVMBAK_TAG}: ${(e as Error).message}`);
    return;
  }
  for (const lv of lvs) {
    if (lv.snapshot === null || !ownerTagDead(lv.tags)) continue;
    try {
      if (await lvm.remove({ vg: lv.vg, lv: lv.lv }, { missingOk: true })) result.orphanSnapshots.push(lv.fullName);
    } catch (e) {
      result.errors.push(`could not remove orphaned snapshot ${lv.fullName}: ${(e as Error).message}`);
    }
  }
}

/**
 * `kvmbak recover [--dest DIR]`: finishes or undoes every interrupted backup
 * under DEST whose process is gone, then removes orphaned kvmbak snapshots.
 */
export async function recover(options: RecoverOptions = {}, ctx: { hypervisor?: Hypervisor; lvm?: Lvm } = {}): Promise<RecoverResult> {
  if (options.domain !== undefined && options.dest === undefined) {
    throw new ConfigError('recovering one domain needs --dest, where its journals are', 'dest');
  }
  const result: RecoverResult = { runs: [], orphanSnapshots: [], errors: [] };
  const lvm = ctx.lvm ?? new Lvm();
  let hv = ctx.hypervisor ?? null;
  const ownHv = hv === null;
  try {
    if (options.dest !== undefined) {
      const records = await readJournals(options.dest, options.domain);
      const domains = [...new Set(records.map((r) => r.domain))];
      for (const domain of domains) {
        hv ??= await openHypervisor(options.uri);
        let lock;
        try {
          lock = await acquireLock(options.dest, domain, 'recover');
        } catch (e) {
          if (!isLockError(e)) throw e;
          result.runs.push({ domain, setId: '', journal: '', actions: [], skipped: e.message });
          continue;
        }
        try {
          result.runs.push(...(await recoverDomain({ dest: options.dest, domain, hv, lvm, holdsLock: true })));
        } finally {
          await lock.release();
        }
      }
    }
    await sweepOrphans(lvm, result);
  } catch (e) {
    if (isLibvirtError(e)) result.errors.push(e.message);
    else throw e;
  } finally {
    if (ownHv && hv !== null) hv.close();
  }
  for (const r of result.runs) if (r.error !== undefined) result.errors.push(`${r.domain} ${r.setId}: ${r.error}`);
  return result;
}
