/**
 * Finishing or undoing interrupted backups (after a crash, `kill -9` or a
 * power loss): bring a VM left shut off, paused or frozen back to the state
 * it had, release a thin pool's metadata snapshot the run reserved for
 * thin_delta, remove the run's snapshots, delete the partial set. Runs whose
 * process may still be alive are never touched.
 */
import { existsSync } from 'node:fs';
import { hostname } from 'node:os';
import { ConfigError, isLibvirtError, isLvmCommandError, throwIfAborted } from '../errors.js';
import { type Hypervisor, openHypervisor } from '../libvirt/index.js';
import { KVMBAK_BASE_TAG, KVMBAK_TAG, type LogicalVolume, Lvm } from '../lvm/index.js';
import {
  type Journal,
  type JournalAssessment,
  type JournalDocument,
  type JournalRecord,
  acquireLock,
  currentBootId,
  deleteSet,
  isLockError,
  ownerStatus,
  readJournals,
  reopenJournal,
} from '../store/index.js';
import { type HoldTarget, VmNotResumedError, release } from './hold.js';
import { DEFAULT_AGENT_TIMEOUT_SECONDS, checkAgentTimeout } from './options.js';

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
  /** Seconds each guest-agent call (a thaw) may take. Default 10. */
  agentTimeoutSeconds?: number;
  /**
   * Stops recover between two runs (a run being recovered is always
   * finished: a VM is never left half brought back). Rejects with AbortError.
   */
  signal?: AbortSignal;
  onProgress?: (event: RecoverProgress) => void;
}

/** What recover is doing, as it goes. */
export type RecoverProgress = { type: 'phase'; domain: string | null; message: string } | { type: 'warning'; domain: string | null; message: string };

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
  agentTimeoutSeconds?: number;
  retryDelayMs?: number;
  onProgress?: (event: RecoverProgress) => void;
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
  let journal: Journal;
  try {
    journal = own ?? (await reopenJournal(r.path));
  } catch (e) {
    res.skipped = (e as Error).message;
    return res;
  }
  input.onProgress?.({ type: 'phase', domain: r.domain, message: `recovering the interrupted backup ${r.setId} of ${r.domain}` });
  const vmOk = await bringVmBack(r, r.document, r.assessment, input, journal, res);
  const metadataOk = await releaseMetadataSnapshots(r.assessment, input, journal, res);
  const snapsOk = await removeRunSnapshots(r.assessment, input, journal, res);
  await settleSet(r, r.document, r.assessment, input, vmOk, res);
  if (vmOk && metadataOk && snapsOk && res.error === undefined) {
    await journal.remove();
    handedOver.delete(r.path);
  }
  return res;
}

function addError(res: RecoveredRun, message: string): void {
  res.error = `${res.error ? `${res.error}; ` : ''}${message}`;
}

/** The VM first: released from whatever the run held it with (hold.ts, as the window does). */
async function bringVmBack(
  r: JournalRecord,
  doc: JournalDocument,
  a: JournalAssessment,
  input: DomainRecoverInput,
  journal: Journal,
  res: RecoveredRun,
): Promise<boolean> {
  if (a.vm !== 'held' || a.windowAction === null) return true;
  const planned = doc.entries.find((e) => e.step === 'planned');
  const stateBefore = planned?.step === 'planned' ? planned.stateBefore : 'running';
  try {
    const dom = await input.hv.lookupDomain(r.domain);
    try {
      const memoryFile = a.memoryFile !== null && existsSync(a.memoryFile) ? a.memoryFile : null;
      const target: HoldTarget = {
        hv: input.hv,
        domain: dom,
        stateBefore,
        memoryFile,
        agentTimeoutSeconds: input.agentTimeoutSeconds ?? DEFAULT_AGENT_TIMEOUT_SECONDS,
        retryDelayMs: input.retryDelayMs ?? 1000,
        bypassCache: false,
        onWarning: (message) => input.onProgress?.({ type: 'warning', domain: r.domain, message }),
      };
      // A state file that was never completed may be refused: then a cold start.
      res.actions.push(...(await release(a.windowAction, target, { coldStart: !a.memorySaved })));
    } finally {
      dom.free();
    }
    await journal.record({ step: 'resumed' });
    return true;
  } catch (e) {
    const why = e instanceof VmNotResumedError && e.cause instanceof Error ? e.cause.message : (e as Error).message;
    res.error = `could not bring ${r.domain} back: ${why}`;
    return false;
  }
}

/**
 * Thin pools whose metadata snapshot the run reserved for thin_delta and did not record released:
 * released when the pool's status still shows a held metadata root (the run may have been killed
 * before its reserve took effect, or someone released it since). A pool that no longer exists
 * holds nothing.
 */
async function releaseMetadataSnapshots(a: JournalAssessment, input: DomainRecoverInput, journal: Journal, res: RecoveredRun): Promise<boolean> {
  let ok = true;
  for (const { vg, pool } of a.metadataReserved) {
    const where = `thin pool ${vg}/${pool}`;
    try {
      let held: number | null;
      try {
        held = (await input.lvm.thinPoolStatus(vg, pool)).heldMetadataRoot;
      } catch (e) {
        if (!(isLvmCommandError(e) && /Device does not exist/.test(e.stderr))) throw e;
        held = null;
      }
      if (held !== null) {
        await input.lvm.releaseMetadataSnapshot(vg, pool);
        res.actions.push(`released the metadata snapshot of ${where} (held root ${held})`);
      }
      await journal.record({ step: 'metadata-released', vg, pool });
    } catch (e) {
      ok = false;
      addError(res, `could not release the metadata snapshot of ${where}: ${(e as Error).message}`);
    }
  }
  return ok;
}

/** The run's snapshots: those the journal names, and any other with the run's tag. */
async function removeRunSnapshots(a: JournalAssessment, input: DomainRecoverInput, journal: Journal, res: RecoveredRun): Promise<boolean> {
  const names = new Map<string, { vg: string; lv: string }>();
  for (const s of a.snapshots) names.set(`${s.vg}/${s.name}`, { vg: s.vg, lv: s.name });
  if (a.runTag !== null) {
    try {
      for (const lv of await input.lvm.list({ tag: a.runTag })) names.set(lv.fullName, { vg: lv.vg, lv: lv.lv });
    } catch (e) {
      addError(res, `could not list snapshots tagged ${a.runTag}: ${(e as Error).message}`);
    }
  }
  let ok = true;
  for (const [full, s] of names) {
    try {
      if (await input.lvm.remove(s, { missingOk: true })) res.actions.push(`removed snapshot ${full}`);
    } catch (e) {
      ok = false;
      addError(res, `could not remove snapshot ${full}: ${(e as Error).message}`);
    }
  }
  if (ok) await journal.record({ step: 'snapshots-removed' });
  return ok;
}

/** The set: a committed one stays; a partial one goes (once the VM no longer needs its state file). */
async function settleSet(
  r: JournalRecord,
  doc: JournalDocument,
  a: JournalAssessment,
  input: DomainRecoverInput,
  vmOk: boolean,
  res: RecoveredRun,
): Promise<void> {
  if (a.committed) {
    res.actions.push(`set ${r.setId} was complete; only its journal was left`);
  } else if (vmOk) {
    if (await deleteSet(doc.setPath, { dest: input.dest }).catch(() => false)) {
      res.actions.push(`deleted the partial set ${doc.setPath}`);
    }
  }
}

/** Removes snapshots tagged `kvmbak` whose creating process is gone (never a base). */
async function sweepOrphans(lvm: Lvm, result: RecoverResult): Promise<void> {
  let lvs: LogicalVolume[];
  try {
    lvs = await lvm.list({ tag: KVMBAK_TAG });
  } catch (e) {
    result.errors.push(`could not list snapshots tagged ${KVMBAK_TAG}: ${(e as Error).message}`);
    return;
  }
  for (const lv of lvs) {
    // A base (kept by a committed run for the next one's thin_delta) has no owner: it stays.
    if (lv.snapshot === null || lv.tags.includes(KVMBAK_BASE_TAG) || !ownerTagDead(lv.tags)) continue;
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
export async function recover(
  options: RecoverOptions = {},
  ctx: { hypervisor?: Hypervisor; lvm?: Lvm; retryDelayMs?: number } = {},
): Promise<RecoverResult> {
  checkRecoverOptions(options);
  throwIfAborted(options.signal);
  const result: RecoverResult = { runs: [], orphanSnapshots: [], errors: [] };
  const lvm = ctx.lvm ?? new Lvm();
  let hv = ctx.hypervisor ?? null;
  const ownHv = hv === null;
  const emit = (e: RecoverProgress): void => {
    try {
      options.onProgress?.(e);
    } catch {
      // A progress consumer must never break a recovery.
    }
  };
  try {
    if (options.dest !== undefined) {
      const records = await readJournals(options.dest, options.domain);
      for (const domain of [...new Set(records.map((r) => r.domain))]) {
        throwIfAborted(options.signal);
        hv ??= await openHypervisor(options.uri);
        result.runs.push(...(await recoverLocked(options.dest, domain, { hv, lvm, options, ctx, emit })));
      }
    }
    throwIfAborted(options.signal);
    emit({ type: 'phase', domain: null, message: `looking for snapshots tagged ${KVMBAK_TAG} whose run is gone` });
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

/** Checks recover's options (ConfigError naming the field). */
export function checkRecoverOptions(o: RecoverOptions): void {
  if (typeof o !== 'object' || o === null) throw new ConfigError('recover takes an options object', 'options');
  for (const key of ['dest', 'domain', 'uri'] as const) {
    if (o[key] !== undefined && (typeof o[key] !== 'string' || o[key] === '')) {
      throw new ConfigError(`${key} must be a non-empty string`, key);
    }
  }
  if (o.domain !== undefined && o.dest === undefined) {
    throw new ConfigError('recovering one domain needs `dest`, where its journals are', 'dest');
  }
  checkAgentTimeout(o.agentTimeoutSeconds);
}

/** One domain's runs, under its lock (a domain whose lock is held is left alone). */
async function recoverLocked(
  dest: string,
  domain: string,
  c: { hv: Hypervisor; lvm: Lvm; options: RecoverOptions; ctx: { retryDelayMs?: number }; emit: (e: RecoverProgress) => void },
): Promise<RecoveredRun[]> {
  let lock;
  try {
    lock = await acquireLock(dest, domain, 'recover');
  } catch (e) {
    if (!isLockError(e)) throw e;
    return [{ domain, setId: '', journal: '', actions: [], skipped: e.message }];
  }
  try {
    return await recoverDomain({
      dest,
      domain,
      hv: c.hv,
      lvm: c.lvm,
      holdsLock: true,
      ...(c.options.agentTimeoutSeconds !== undefined ? { agentTimeoutSeconds: c.options.agentTimeoutSeconds } : {}),
      ...(c.ctx.retryDelayMs !== undefined ? { retryDelayMs: c.ctx.retryDelayMs } : {}),
      onProgress: c.emit,
    });
  } finally {
    await lock.release();
  }
}
