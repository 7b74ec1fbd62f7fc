/**
 * The window: from the first stop of the VM to it running again, with every
 * snapshot taken inside it. Any failure in it brings the VM back first
 * (retrying once), then removes the snapshots, then reports.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { KvmbakError, isLibvirtError } from '../errors.js';
import type { Domain, Hypervisor } from '../libvirt/index.js';
import type { LogicalVolume, LvName, Lvm } from '../lvm/index.js';
import type { Journal, WindowAction } from '../store/index.js';
import type { BackupMode, PlannedDisk } from './types.js';

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

/** A paused domain, restored, could not be paused again (its state unknown or running). */
class NotPausedAgain extends Error {
  constructor(cause: unknown) {
    super((cause as Error).message, { cause });
  }
}

/**
 * Snapshots that may exist, by disk target: an entry is made before its
 * lvcreate runs and goes when the snapshot is removed (or found missing).
 */
export type LiveSnapshots = Map<string, LvName>;

export interface WindowInput {
  /** Each disk's origin LV as planning found it (target → LV): lvcreate needs nothing else. */
  origins: ReadonlyMap<string, LogicalVolume>;
  hv: Hypervisor;
  lvm: Lvm;
  domain: Domain;
  journal: Journal;
  mode: BackupMode;
  stateBefore: string;
  disks: PlannedDisk[];
  runTag: string;
  /** Tag naming this process (see recover.ts ownerTag). */
  ownerTag: string;
  memoryFile: string;
  /**
   * Ask libvirt to bypass the page cache for the memory state. Dropped (with
   * a warning) when the hypervisor driver rejects the flag.
   */
  bypassCache: boolean;
  agentTimeoutSeconds: number;
  quiesceFallback: 'pause' | 'none';
  /** Filled with every snapshot that may exist; the caller owns it (it removes what is left on a later failure). */
  live: LiveSnapshots;
  /** Milliseconds between the two tries of bringing the VM back or removing a snapshot. */
  retryDelayMs?: number;
  onPhase: (phase: 'save' | 'suspend' | 'freeze' | 'snapshot' | 'resume', message: string) => void;
  onWarning: (message: string) => void;
}

export interface WindowResult {
  /** The mode actually used (quiesce may fall back to pause). */
  mode: BackupMode;
  action: WindowAction;
  downtimeMs: number | null;
  windowMs: number;
  /** The snapshots made, by disk target. */
  snapshots: Map<string, LogicalVolume>;
  memorySaved: boolean;
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

/** libvirt refused a flag it does not implement (VIR_ERR_INVALID_ARG "unsupported flags"): nothing was done. */
export function isUnsupportedFlags(e: unknown): boolean {
  return isLibvirtError(e, 'INVALID_ARG') && /unsupported flags/.test(e.message);
}

/**
 * Creates every snapshot — lvcreate only, nothing else while the VM is held —
 * recording each in `input.live` and the journal.
 */
async function createSnapshots(input: WindowInput): Promise<void> {
  for (const d of input.disks) {
    input.onPhase('snapshot', `snapshot ${d.vg}/${d.snapshotName} of ${d.target}`);
    const origin = input.origins.get(d.target);
    if (origin === undefined) throw new KvmbakError(`no origin LV planned for disk ${d.target}`, 'KVMBAK_INTERNAL');
    // From here the snapshot may exist, even when lvcreate fails.
    input.live.set(d.target, { vg: d.vg, lv: d.snapshotName });
    await input.lvm.lvcreateSnapshot(origin, {
      name: d.snapshotName,
      ...(d.snapshotSize !== null ? { size: d.snapshotSize } : {}),
      tags: [input.runTag, input.ownerTag],
    });
    await input.journal.record({ step: 'snapshot-created', vg: d.vg, lv: d.lv, name: d.snapshotName });
  }
}

/** After the window: every snapshot looked up (thin ones activated) and checked. */
async function checkSnapshots(input: WindowInput, made: Map<string, LogicalVolume>): Promise<void> {
  for (const d of input.disks) {
    made.set(d.target, await input.lvm.checkSnapshot({ vg: d.vg, lv: d.snapshotName }));
  }
}

/**
 * Removes the snapshots in `live` (each tried twice), deleting the entries
 * of those removed; returns the errors of those left.
 */
export async function removeSnapshots(lvm: Lvm, live: LiveSnapshots, retryDelayMs = 1000): Promise<Error[]> {
  const errors: Error[] = [];
  for (const [target, s] of [...live]) {
    try {
      await twice(() => lvm.remove({ vg: s.vg, lv: s.lv }, { missingOk: true }), retryDelayMs);
      live.delete(target);
    } catch (e) {
      errors.push(e as Error);
    }
  }
  return errors;
}

/**
 * Holds the VM still as the mode says, snapshots every disk, brings the VM
 * back to the state it had. On failure the VM is brought back first, then
 * the snapshots made are removed, then the error is thrown.
 */
export async function runWindow(input: WindowInput): Promise<WindowResult> {
  const { domain, journal } = input;
  const delay = input.retryDelayMs ?? 1000;
  const paused = input.stateBefore === 'paused';
  let bypassCache = input.bypassCache;
  let mode = input.mode;
  let action: WindowAction = 'none';
  if (mode === 'save') action = 'save';
  else if (mode === 'pause') action = paused ? 'none' : 'suspend';
  else if (mode === 'quiesce') action = paused ? 'none' : 'freeze';

  const started = performance.now();
  let stoppedAt: number | null = null;
  let backAt: number | null = null;
  let memorySaved = false;
  let failure: unknown = null;
  const made = new Map<string, LogicalVolume>();

  /** libvirt's save/restore with the bypass-cache flag, once more without it when the driver rejects the flag. */
  const withCacheFlag = async (fn: (bypass: boolean) => Promise<void>): Promise<void> => {
    try {
      await fn(bypassCache);
    } catch (e) {
      if (!bypassCache || !isUnsupportedFlags(e)) throw e;
      bypassCache = false;
      input.onWarning(`libvirt's driver for ${input.hv.uri} does not support bypassing the page cache; using it`);
      await fn(false);
    }
  };
  const state = async (): Promise<string> => (await domain.info()).state;
  const restore = (): Promise<void> =>
    // No start-mode flag: the image records whether the domain ran or was paused.
    withCacheFlag((bypass) => input.hv.restoreDomain(input.memoryFile, { bypassCache: bypass }));
  /** Brings the VM back as the action held it; throws when it cannot. */
  const bringBack = async (): Promise<void> => {
    if (action === 'save') {
      input.onPhase('resume', `restoring ${domain.name} from its saved memory`);
      await twice(restore, delay, async () => (await state()) !== 'shutoff');
      // The image should restore the state the domain had; where it did not (libvirt's
      // test driver restores a paused domain running), set it right.
      await twice(async () => {
        const st = await state();
        if (paused && st === 'running') await domain.suspend();
        else if (!paused && st === 'paused') await domain.resume();
      }, delay).catch((e: unknown) => {
        // The restore itself worked. A domain that ran runs again: say what could not be
        // checked. One that was paused may run now: that needs recover.
        if (paused) throw new NotPausedAgain(e);
        input.onWarning(`${domain.name} was restored, but its state could not be checked: ${(e as Error).message}`);
      });
    } else if (action === 'suspend') {
      input.onPhase('resume', `resuming ${domain.name}`);
      await twice(() => domain.resume(), delay, async () => (await state()) === 'running');
    } else if (action === 'freeze') {
      input.onPhase('resume', `thawing the filesystems of ${domain.name}`);
      await twice(() => domain.fsThaw(), delay);
    }
  };
  /** The VM is held: keep everything recover needs (journal, memory state); the snapshots go. */
  const notResumed = async (e: unknown, held: 'paused' | null = null): Promise<never> => {
    const errors = await removeSnapshots(input.lvm, input.live, delay);
    const why = (e as Error).message;
    const what =
      e instanceof NotPausedAgain
        ? `was restored but could not be paused again as it was (${why}); run kvmbak recover, or virsh suspend ${domain.name}`
        : action === 'save' && held === null
          ? `is shut off and could not be restored from ${input.memoryFile} (${why}); ` +
            `run kvmbak recover, or virsh restore ${input.memoryFile}`
          : action === 'suspend' || held === 'paused'
            ? `is paused and could not be resumed (${why}); run kvmbak recover, or virsh resume ${domain.name}`
            : `has frozen filesystems that could not be thawed (${why}); run kvmbak recover, or virsh domfsthaw ${domain.name}`;
    throw new VmNotResumedError(
      domain.name,
      `domain ${domain.name} ${what}${errors.length > 0 ? `; also failed to remove snapshots: ${errors.map((x) => x.message).join('; ')}` : ''}`,
      { cause: e },
    );
  };

  // 1. Hold the VM still.
  if (action === 'freeze') {
    try {
      await domain.setAgentTimeout(input.agentTimeoutSeconds);
    } catch (e) {
      // Drivers without the call (libvirt < 5.10, the test driver): the agent's default timeout applies.
      if (!isLibvirtError(e, 'NO_SUPPORT')) throw e;
      input.onWarning(`cannot set the guest agent timeout of ${domain.name} (${e.message}); using libvirt's default`);
    }
    await journal.record({ step: 'window-start', action: 'freeze', memoryFile: null });
    input.onPhase('freeze', `freezing the filesystems of ${domain.name} (guest agent)`);
    try {
      await domain.fsFreeze();
    } catch (e) {
      // The freeze did not happen (or only partly): thaw whatever may be frozen.
      await domain.fsThaw().catch(() => undefined);
      await journal.record({ step: 'resumed' });
      const why = isLibvirtError(e) ? e.message : String(e);
      if (input.quiesceFallback !== 'pause') {
        throw new QuiesceError(
          `the guest agent of ${domain.name} did not freeze its filesystems (${why}); install and start ` +
            `qemu-guest-agent in the guest, or use --mode pause (or --quiesce-fallback pause)`,
          { cause: e },
        );
      }
      input.onWarning(`guest agent of ${domain.name} did not answer (${why}); falling back to --mode pause`);
      mode = 'pause';
      action = 'suspend';
    }
  }
  if (action === 'suspend') {
    await journal.record({ step: 'window-start', action: 'suspend', memoryFile: null });
    input.onPhase('suspend', `pausing ${domain.name}`);
    stoppedAt = performance.now();
    try {
      await domain.suspend();
    } catch (e) {
      // virDomainSuspend failed: the domain should run as before. Make sure of it.
      if ((await state().catch(() => 'unknown')) === 'paused') await bringBack().catch(notResumed);
      await journal.record({ step: 'resumed' });
      throw e;
    }
  } else if (action === 'save') {
    await journal.record({ step: 'window-start', action: 'save', memoryFile: input.memoryFile });
    input.onPhase('save', `saving the memory of ${domain.name}`);
    stoppedAt = performance.now();
    try {
      await withCacheFlag((bypass) => domain.save(input.memoryFile, { bypassCache: bypass }));
    } catch (e) {
      // virDomainSave failed: libvirt leaves the domain as it was. Make sure of it: a
      // domain found shut off did save (the error came after) and is restored; one
      // found paused is resumed.
      const st = await state().catch(() => 'unknown');
      if (st === 'shutoff') await bringBack().catch(notResumed);
      else if (st === 'paused' && !paused) {
        await twice(() => domain.resume(), delay, async () => (await state()) === 'running').catch((x: unknown) =>
          notResumed(x, 'paused'),
        );
      }
      await journal.record({ step: 'resumed' });
      throw e;
    }
    memorySaved = true;
  } else if (action === 'none') {
    await journal.record({ step: 'window-start', action: 'none', memoryFile: null });
  }

  // 2. Snapshots. From here until the VM is back nothing may throw past step 3.
  try {
    if (memorySaved) await journal.record({ step: 'saved', memoryFile: input.memoryFile });
    await createSnapshots(input);
    if (mode === 'offline') {
      const st = await state();
      if (st !== 'shutoff') {
        throw new KvmbakError(
          `domain ${domain.name} was started while its snapshots were taken (now ${st}); run the backup again`,
          'KVMBAK_BACKUP_STATE',
        );
      }
    }
  } catch (e) {
    failure = e;
  }

  // 3. Bring the VM back, whatever happened.
  try {
    await bringBack();
  } catch (e) {
    await notResumed(e);
  }
  backAt = performance.now();
  try {
    await journal.record({ step: 'resumed' });
  } catch (e) {
    failure ??= e;
  }

  if (failure === null) {
    try {
      await checkSnapshots(input, made);
    } catch (e) {
      failure = e;
    }
  }
  if (failure !== null) {
    await removeSnapshots(input.lvm, input.live, delay);
    throw failure;
  }
  const downtimeMs = mode === 'quiesce' ? 0 : stoppedAt !== null ? Math.round(backAt - stoppedAt) : null;
  return {
    mode,
    action,
    downtimeMs,
    windowMs: Math.round(performance.now() - started),
    snapshots: made,
    memorySaved,
  };
}
