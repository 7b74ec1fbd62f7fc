/**
 * The window: from the first stop of the VM to it running again, with every
 * snapshot taken inside it. Any failure in it brings the VM back first
 * (retrying once), then removes the snapshots, then reports.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { KvmbakError, isLibvirtError } from '../errors.js';
import type { Domain, Hypervisor } from '../libvirt/index.js';
import type { LogicalVolume, Lvm } from '../lvm/index.js';
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

export interface WindowInput {
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
  bypassCache: boolean;
  agentTimeoutSeconds: number;
  quiesceFallback: 'pause' | 'none';
  /** Milliseconds between the two tries of bringing the VM back. */
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
  snapshots: Map<string, LogicalVolume>;
  memorySaved: boolean;
}

/** Runs `fn`, and once more after a pause if it fails; rethrows the second failure. */
async function twice<T>(fn: () => Promise<T>, delayMs: number): Promise<T> {
  try {
    return await fn();
  } catch {
    await sleep(delayMs);
    return await fn();
  }
}

/** Creates every snapshot; on failure removes those made and rethrows. */
async function createSnapshots(input: WindowInput, made: Map<string, LogicalVolume>): Promise<void> {
  for (const d of input.disks) {
    input.onPhase('snapshot', `snapshot ${d.vg}/${d.snapshotName} of ${d.target}`);
    const snap = await input.lvm.createSnapshot(
      { vg: d.vg, lv: d.lv },
      {
        name: d.snapshotName,
        ...(d.snapshotSize !== null ? { size: d.snapshotSize } : {}),
        tags: [input.runTag, input.ownerTag],
      },
    );
    made.set(d.target, snap);
    await input.journal.record({ step: 'snapshot-created', vg: d.vg, lv: d.lv, name: d.snapshotName });
  }
}

/** Removes the given snapshots, best effort; returns the errors. */
export async function removeSnapshots(lvm: Lvm, snaps: Iterable<{ vg: string; lv: string }>): Promise<Error[]> {
  const errors: Error[] = [];
  for (const s of snaps) {
    try {
      await lvm.remove({ vg: s.vg, lv: s.lv }, { missingOk: true });
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
  const snapshots = new Map<string, LogicalVolume>();
  const paused = input.stateBefore === 'paused';
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

  // 1. Hold the VM still.
  if (action === 'freeze') {
    await domain.setAgentTimeout(input.agentTimeoutSeconds);
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
    await domain.suspend();
  } else if (action === 'save') {
    await journal.record({ step: 'window-start', action: 'save', memoryFile: input.memoryFile });
    input.onPhase('save', `saving the memory of ${domain.name}`);
    stoppedAt = performance.now();
    try {
      await domain.save(input.memoryFile, { bypassCache: input.bypassCache });
    } catch (e) {
      // virDomainSave failed: libvirt leaves the domain as it was. Make sure of it.
      const st = await domain.info().then((i) => i.state, () => 'unknown');
      if (st === 'paused' && !paused) await domain.resume().catch(() => undefined);
      await journal.record({ step: 'resumed' });
      throw e;
    }
    memorySaved = true;
    await journal.record({ step: 'saved', memoryFile: input.memoryFile });
  } else if (action === 'none' && mode !== 'offline') {
    await journal.record({ step: 'window-start', action: 'none', memoryFile: null });
  }

  // 2. Snapshots.
  try {
    if (mode === 'offline') await journal.record({ step: 'window-start', action: 'none', memoryFile: null });
    await createSnapshots(input, snapshots);
    if (mode === 'offline') {
      const st = (await domain.info()).state;
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
    if (action === 'save') {
      input.onPhase('resume', `restoring ${domain.name} from its saved memory`);
      await twice(
        () =>
          input.hv.restoreDomain(input.memoryFile, {
            startMode: paused ? 'paused' : 'running',
            bypassCache: input.bypassCache,
          }),
        delay,
      );
    } else if (action === 'suspend') {
      input.onPhase('resume', `resuming ${domain.name}`);
      await twice(() => domain.resume(), delay);
    } else if (action === 'freeze') {
      input.onPhase('resume', `thawing the filesystems of ${domain.name}`);
      await twice(() => domain.fsThaw(), delay);
    }
    backAt = performance.now();
    await journal.record({ step: 'resumed' });
  } catch (e) {
    // The VM is held: keep everything recover needs (journal, memory state).
    const errors = await removeSnapshots(input.lvm, [...snapshots.values()].map((s) => ({ vg: s.vg, lv: s.lv })));
    const what =
      action === 'save'
        ? `is shut off and could not be restored from ${input.memoryFile} (${(e as Error).message}); ` +
          `run kvmbak recover, or virsh restore ${input.memoryFile}`
        : action === 'suspend'
          ? `is paused and could not be resumed (${(e as Error).message}); run kvmbak recover, or virsh resume ${domain.name}`
          : `has frozen filesystems that could not be thawed (${(e as Error).message}); run kvmbak recover, or virsh domfsthaw ${domain.name}`;
    throw new VmNotResumedError(
      domain.name,
      `domain ${domain.name} ${what}${errors.length > 0 ? `; also failed to remove snapshots: ${errors.map((x) => x.message).join('; ')}` : ''}`,
      { cause: e },
    );
  }

  if (failure !== null) {
    await removeSnapshots(input.lvm, [...snapshots.values()].map((s) => ({ vg: s.vg, lv: s.lv })));
    throw failure;
  }
  const downtimeMs = stoppedAt !== null && backAt !== null && mode !== 'quiesce' ? Math.round(backAt - stoppedAt) : null;
  return {
    mode,
    action,
    downtimeMs: mode === 'quiesce' ? 0 : downtimeMs,
    windowMs: Math.round(performance.now() - started),
    snapshots,
    memorySaved,
  };
}
