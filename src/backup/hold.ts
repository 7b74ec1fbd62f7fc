/**
 * Holding a VM still for its snapshots, and bringing it back: one
 * implementation per way of holding (save, suspend, freeze), shared by the
 * backup window and by recover. Retries, the guest agent's timeout and the
 * checks of the state after a release therefore behave the same whoever
 * holds or releases the VM.
 *
 * Guest-agent calls (freeze, thaw) run with the domain's agent timeout set to
 * `agentTimeoutSeconds` and put back afterwards. libvirt has no getter for
 * that setting; every domain starts with VIR_DOMAIN_AGENT_RESPONSE_TIMEOUT_BLOCK
 * (the QEMU driver's initial value: agent calls wait for as long as it takes),
 * so that is what kvmbak puts back. (DEFAULT would be a change: it means
 * libvirt's 5 s wait.) A value another tool set before kvmbak ran is not
 * known and not restored.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { KvmbakError, isLibvirtError } from '../errors.js';
import type { Domain, Hypervisor } from '../libvirt/index.js';
import type { WindowAction } from '../store/index.js';
import type { BackupMode } from './types.js';

/** The VM could not be brought back after the window; it needs an administrator. */
export class VmNotResumedError extends KvmbakError {
  readonly domain: string;
  constructor(domain: string, message: string, options: { cause?: unknown } = {}) {
    super(message, 'KVMBAK_VM_NOT_RESUMED', options);
    this.domain = domain;
  }
}
Object.defineProperty(VmNotResumedError.prototype, 'name', { value: 'VmNotResumedError', enumerable: false });

/** The guest agent did not freeze the guest's filesystems. */
export class QuiesceError extends KvmbakError {
  constructor(message: string, options: { cause?: unknown } = {}) {
    super(message, 'KVMBAK_QUIESCE', options);
  }
}
Object.defineProperty(QuiesceError.prototype, 'name', { value: 'QuiesceError', enumerable: false });

/** What libvirt's agent timeout is put back to after each agent call (see the module comment). */
export const AGENT_TIMEOUT_AFTER = 'block' as const;

/** A domain to hold or release, and how. */
export interface HoldTarget {
  hv: Hypervisor;
  domain: Domain;
  /** The state before the hold: a domain that was paused comes back paused. */
  stateBefore: string;
  /** save: where the memory state goes (and comes back from). */
  memoryFile: string | null;
  /** Seconds each guest-agent call may take. */
  agentTimeoutSeconds: number;
  /** Pause between the two tries of bringing the VM back. */
  retryDelayMs: number;
  /**
   * Ask libvirt to bypass the page cache for the memory state. Turned off
   * (with a warning) when the driver rejects the flag.
   */
  bypassCache: boolean;
  onPhase?: (phase: 'save' | 'suspend' | 'freeze' | 'resume', message: string) => void;
  onWarning: (message: string) => void;
  /** Progress of the memory save, from the domain's job statistics. */
  onSaveProgress?: (bytesDone: number, bytesTotal: number | undefined) => void;
  /** How often job statistics are read while saving (ms, default 500). */
  saveProgressIntervalMs?: number;
}

/** How `mode` holds a domain that is `stateBefore`. */
export function holdActionFor(mode: BackupMode, stateBefore: string): WindowAction {
  const paused = stateBefore === 'paused';
  if (mode === 'save') return 'save';
  if (mode === 'pause') return paused ? 'none' : 'suspend';
  if (mode === 'quiesce') return paused ? 'none' : 'freeze';
  return 'none';
}

/**
 * Runs `fn`, and once more after a pause if it fails (unless `done()` says
 * the first try worked after all); rethrows the second failure.
 */
async function twice<T>(fn: () => Promise<T>, delayMs: number, done?: () => Promise<boolean>): Promise<T | undefined> {
  try {
    return await fn();
  } catch {
    await sleep(delayMs);
    if (done !== undefined && (await done().catch(() => false))) return undefined;
    return await fn();
  }
}
export { twice as tryTwice };

/** libvirt refused a flag it does not implement (VIR_ERR_INVALID_ARG "unsupported flags"): nothing was done. */
export function isUnsupportedFlags(e: unknown): boolean {
  return isLibvirtError(e, 'INVALID_ARG') && /unsupported flags/.test(e.message);
}

const state = async (t: HoldTarget): Promise<string> => (await t.domain.info()).state;

/** libvirt's save/restore with the bypass-cache flag, once more without it when the driver rejects the flag. */
async function withCacheFlag(t: HoldTarget, fn: (bypass: boolean) => Promise<void>): Promise<void> {
  try {
    await fn(t.bypassCache);
  } catch (e) {
    if (!t.bypassCache || !isUnsupportedFlags(e)) throw e;
    t.bypassCache = false;
    t.onWarning(`libvirt's driver for ${t.hv.uri} does not support bypassing the page cache; using it`);
    await fn(false);
  }
}

const noAgentTimeout = new WeakSet<HoldTarget>();

/**
 * Runs one guest-agent call with the domain's agent timeout set to
 * `agentTimeoutSeconds`, putting it back to AGENT_TIMEOUT_AFTER afterwards.
 * A driver without the setting (libvirt < 5.10, the test driver) gets one
 * warning and the call runs with libvirt's own timeout. Any other failure to
 * set it throws when `strict` (the freeze: an unbounded freeze could keep the
 * guest frozen), else is a warning (the thaw matters more).
 */
export async function withAgentTimeout<T>(t: HoldTarget, fn: () => Promise<T>, strict: boolean): Promise<T> {
  let set = false;
  if (!noAgentTimeout.has(t)) {
    try {
      await t.domain.setAgentTimeout(t.agentTimeoutSeconds);
      set = true;
    } catch (e) {
      if (isLibvirtError(e, 'NO_SUPPORT')) {
        noAgentTimeout.add(t);
        t.onWarning(`cannot set the guest agent timeout of ${t.domain.name} (${e.message}); using libvirt's default`);
      } else if (strict) {
        throw e;
      } else {
        t.onWarning(`cannot set the guest agent timeout of ${t.domain.name} (${(e as Error).message}); calling the agent anyway`);
      }
    }
  }
  try {
    return await fn();
  } finally {
    if (set) {
      await t.domain
        .setAgentTimeout(AGENT_TIMEOUT_AFTER)
        .catch((e: unknown) =>
          t.onWarning(`could not put the guest agent timeout of ${t.domain.name} back to libvirt's default: ${(e as Error).message}`),
        );
    }
  }
}

/** Thaws the guest's filesystems through the agent (bounded by the agent timeout); returns how many thawed. */
export function thaw(t: HoldTarget): Promise<number> {
  return withAgentTimeout(t, () => t.domain.fsThaw(), false);
}

/**
 * Polls the domain's job statistics while `work` runs (a save), reporting
 * bytes done; stops at the first failure (VIR_ERR_NO_SUPPORT: the driver
 * keeps none).
 */
async function withSaveProgress(t: HoldTarget, work: Promise<void>): Promise<void> {
  const report = t.onSaveProgress;
  if (report === undefined) return work;
  const interval = t.saveProgressIntervalMs ?? 500;
  let finished = false;
  const stop = new AbortController();
  const poll = (async () => {
    while (!finished) {
      try {
        await sleep(interval, undefined, { signal: stop.signal });
      } catch {
        return;
      }
      if (finished) return;
      let stats;
      try {
        stats = await t.domain.jobStats();
      } catch {
        return;
      }
      if (finished) return;
      const done = stats.dataProcessed ?? stats.memoryProcessed;
      const total = stats.dataTotal ?? stats.memoryTotal;
      if (typeof done === 'number') report(done, typeof total === 'number' && total > 0 ? total : undefined);
    }
  })();
  try {
    await work;
  } finally {
    finished = true;
    stop.abort();
    await poll;
  }
}

/**
 * Holds the domain still. On failure the domain is as it was (made sure of:
 * a save that did happen is restored, a suspend that did happen is resumed)
 * and the error is thrown; a domain that cannot be brought back throws
 * VmNotResumedError. A freeze that fails throws QuiesceError.
 */
export async function hold(action: WindowAction, t: HoldTarget): Promise<void> {
  const name = t.domain.name;
  if (action === 'freeze') {
    t.onPhase?.('freeze', `freezing the filesystems of ${name} (guest agent)`);
    try {
      await withAgentTimeout(t, () => t.domain.fsFreeze(), true);
    } catch (e) {
      // The freeze did not happen (or only partly): thaw whatever may be frozen.
      await thaw(t).catch(() => undefined);
      const why = e instanceof Error ? e.message : String(e);
      throw new QuiesceError(
        `the guest agent of ${name} did not freeze its filesystems (${why}); install and start ` +
          'qemu-guest-agent in the guest, or use `mode` pause (or `quiesceFallback` pause)',
        { cause: e },
      );
    }
  } else if (action === 'suspend') {
    t.onPhase?.('suspend', `pausing ${name}`);
    try {
      await t.domain.suspend();
    } catch (e) {
      // virDomainSuspend failed: the domain should run as before. Make sure of it.
      if ((await state(t).catch(() => 'unknown')) === 'paused') await release('suspend', t);
      throw e;
    }
  } else if (action === 'save') {
    t.onPhase?.('save', `saving the memory of ${name}`);
    const file = t.memoryFile!;
    try {
      await withSaveProgress(
        t,
        withCacheFlag(t, (bypass) => t.domain.save(file, { bypassCache: bypass })),
      );
    } catch (e) {
      // virDomainSave failed: libvirt leaves the domain as it was. Make sure of it: a
      // domain found shut off did save (the error came after) and is restored; one
      // found paused is resumed.
      const st = await state(t).catch(() => 'unknown');
      if (st === 'shutoff' || (st === 'paused' && t.stateBefore !== 'paused')) await release('save', t);
      throw e;
    }
  }
}

export interface ReleaseOptions {
  /**
   * save: when the memory state cannot be restored, start the domain from
   * its disks (its RAM is lost, as after a crash). Only recover does this,
   * and only when the save never completed.
   */
  coldStart?: boolean;
}

/** A paused domain, restored, could not be paused again (its state unknown or running). */
class NotPausedAgain extends Error {
  constructor(cause: unknown) {
    super((cause as Error).message, { cause });
  }
}

/** A domain found paused (not restored) could not be resumed. */
class StillPaused extends Error {
  constructor(cause: unknown) {
    super((cause as Error).message, { cause });
  }
}

/**
 * Brings the domain back from `action` to the state it had, looking at its
 * state now (so it also finishes a hold left by a killed run): restores a
 * saved domain from its memory state, resumes a paused one, thaws a frozen
 * one; each tried twice. Returns what was done, in words. Throws
 * VmNotResumedError when the domain cannot be brought back.
 */
export async function release(action: WindowAction, t: HoldTarget, options: ReleaseOptions = {}): Promise<string[]> {
  try {
    return await releaseOnce(action, t, options);
  } catch (e) {
    throw notResumed(action, t, e);
  }
}

async function releaseOnce(action: WindowAction, t: HoldTarget, options: ReleaseOptions): Promise<string[]> {
  const name = t.domain.name;
  const paused = t.stateBefore === 'paused';
  const done: string[] = [];
  const resume = async (): Promise<void> => {
    await twice(
      () => t.domain.resume(),
      t.retryDelayMs,
      async () => (await state(t)) === 'running',
    );
    done.push(`resumed ${name}`);
  };
  if (action === 'save') {
    const st = await state(t).catch(() => 'unknown');
    let restored = false;
    if (st === 'shutoff' || st === 'unknown') {
      restored = true;
      t.onPhase?.('resume', `restoring ${name} from its saved memory`);
      const restore = (): Promise<void> =>
        // No start-mode flag: the image records whether the domain ran or was paused.
        withCacheFlag(t, (bypass) => t.hv.restoreDomain(t.memoryFile!, { bypassCache: bypass }));
      try {
        if (t.memoryFile === null) throw new KvmbakError(`its memory state file is missing`, 'KVMBAK_NO_MEMORY_STATE');
        await twice(restore, t.retryDelayMs, async () => (await state(t)) !== 'shutoff');
        done.push(`restored ${name} from its saved memory ${t.memoryFile}`);
      } catch (e) {
        if (!options.coldStart) throw e;
        await t.domain.start();
        done.push(`started ${name} (its memory was not saved completely)`);
      }
    }
    // The image should restore the state the domain had; where it did not (libvirt's
    // test driver restores a paused domain running), set it right.
    await twice(async () => {
      const now = await state(t);
      if (paused && now === 'running') {
        await t.domain.suspend();
        done.push(`paused ${name} again, as it was`);
      } else if (!paused && now === 'paused') {
        await t.domain.resume();
        done.push(`resumed ${name}`);
      }
    }, t.retryDelayMs).catch((e: unknown) => {
      // The restore itself worked. A domain that ran runs again: say what could not be
      // checked. One that was paused may run now: that needs recover. One found paused
      // (never shut off) that cannot be resumed is still held.
      if (paused) throw new NotPausedAgain(e);
      if (!restored) throw new StillPaused(e);
      t.onWarning(`${name} was restored, but its state could not be checked: ${(e as Error).message}`);
    });
  } else if (action === 'suspend') {
    const st = await state(t).catch(() => 'unknown');
    if (!paused && (st === 'paused' || st === 'unknown')) {
      t.onPhase?.('resume', `resuming ${name}`);
      await resume();
    }
  } else if (action === 'freeze') {
    // A guest that does not run (shut off, or paused) cannot answer its agent: nothing to thaw.
    const st = await state(t).catch(() => 'unknown');
    if (st === 'running' || st === 'blocked' || st === 'unknown') {
      t.onPhase?.('resume', `thawing the filesystems of ${name}`);
      const n = await twice(() => thaw(t), t.retryDelayMs);
      done.push(`thawed the filesystems of ${name} (${n ?? 0})`);
    }
  }
  return done;
}

/** The error saying why the domain is still held and how to bring it back. */
function notResumed(action: WindowAction, t: HoldTarget, e: unknown): VmNotResumedError {
  if (e instanceof VmNotResumedError) return e;
  const name = t.domain.name;
  const why = (e as Error).message;
  const what =
    e instanceof NotPausedAgain
      ? `was restored but could not be paused again as it was (${why}); run kvmbak recover, or virsh suspend ${name}`
      : action === 'save'
        ? `is shut off and could not be restored from ${t.memoryFile} (${why}); run kvmbak recover, or virsh restore ${t.memoryFile}`
        : action === 'suspend' || e instanceof StillPaused
          ? `is paused and could not be resumed (${why}); run kvmbak recover, or virsh resume ${name}`
          : `has frozen filesystems that could not be thawed (${why}); run kvmbak recover, or virsh domfsthaw ${name}`;
  return new VmNotResumedError(name, `domain ${name} ${what}`, { cause: e instanceof NotPausedAgain || e instanceof StillPaused ? e.cause : e });
}
