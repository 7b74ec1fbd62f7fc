/**
 * The window: from the first stop of the VM to it running again, with every
 * snapshot taken inside it. Any failure in it brings the VM back first
 * (retrying once), then removes the snapshots, then reports. How the VM is
 * held and released lives in hold.ts (shared with recover).
 */
import { KvmbakError } from '../errors.js';
import type { Domain, Hypervisor } from '../libvirt/index.js';
import type { LogicalVolume, LvName, Lvm } from '../lvm/index.js';
import type { Journal, WindowAction } from '../store/index.js';
import { type HoldTarget, QuiesceError, VmNotResumedError, hold, holdActionFor, release, tryTwice } from './hold.js';
import type { BackupMode, PlannedDisk } from './types.js';

export { VmNotResumedError, QuiesceError, isUnsupportedFlags } from './hold.js';

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
  onSaveProgress?: (bytesDone: number, bytesTotal: number | undefined) => void;
  saveProgressIntervalMs?: number;
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
 * Removes the snapshots in `live` (each tried twice), deleting the entries
 * of those removed; returns the errors of those left.
 */
export async function removeSnapshots(lvm: Lvm, live: LiveSnapshots, retryDelayMs = 1000): Promise<Error[]> {
  const errors: Error[] = [];
  for (const [target, s] of [...live]) {
    try {
      await tryTwice(() => lvm.remove({ vg: s.vg, lv: s.lv }, { missingOk: true }), retryDelayMs);
      live.delete(target);
    } catch (e) {
      errors.push(e as Error);
    }
  }
  return errors;
}

function holdTarget(input: WindowInput): HoldTarget {
  return {
    hv: input.hv,
    domain: input.domain,
    stateBefore: input.stateBefore,
    memoryFile: input.memoryFile,
    agentTimeoutSeconds: input.agentTimeoutSeconds,
    retryDelayMs: input.retryDelayMs ?? 1000,
    bypassCache: input.bypassCache,
    onPhase: input.onPhase,
    onWarning: input.onWarning,
    ...(input.onSaveProgress !== undefined ? { onSaveProgress: input.onSaveProgress } : {}),
    ...(input.saveProgressIntervalMs !== undefined ? { saveProgressIntervalMs: input.saveProgressIntervalMs } : {}),
  };
}

interface Held {
  mode: BackupMode;
  action: WindowAction;
  /** performance.now() when the VM stopped (null: it never stops). */
  stoppedAt: number | null;
}

/**
 * Records the window's start, then holds the VM. A freeze the agent refuses
 * falls back to a pause when asked to. On failure the VM is as it was and
 * the journal says so.
 */
async function startHold(input: WindowInput, t: HoldTarget): Promise<Held> {
  let mode = input.mode;
  let action = holdActionFor(mode, input.stateBefore);
  const start = async (a: WindowAction): Promise<number | null> => {
    await input.journal.record({ step: 'window-start', action: a, memoryFile: a === 'save' ? input.memoryFile : null });
    const at = performance.now();
    try {
      await hold(a, t);
    } catch (e) {
      if (!(e instanceof VmNotResumedError)) await input.journal.record({ step: 'resumed' });
      throw e;
    }
    return a === 'save' || a === 'suspend' ? at : null;
  };
  try {
    return { mode, action, stoppedAt: await start(action) };
  } catch (e) {
    if (!(e instanceof QuiesceError) || input.quiesceFallback !== 'pause') throw e;
    input.onWarning(`guest agent of ${input.domain.name} did not answer (${(e.cause as Error).message}); falling back to \`mode\` pause`);
    mode = 'pause';
    action = 'suspend';
    return { mode, action, stoppedAt: await start(action) };
  }
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

/** While the VM is held: every snapshot. Never throws: returns the failure (the VM must come back first). */
async function snapshotWhileHeld(input: WindowInput, held: Held): Promise<unknown> {
  try {
    if (held.action === 'save') await input.journal.record({ step: 'saved', memoryFile: input.memoryFile });
    await createSnapshots(input);
    if (held.mode === 'offline') {
      const st = (await input.domain.info()).state;
      if (st !== 'shutoff') {
        throw new KvmbakError(
          `domain ${input.domain.name} was started while its snapshots were taken (now ${st}); run the backup again`,
          'KVMBAK_BACKUP_STATE',
        );
      }
    }
    return null;
  } catch (e) {
    return e;
  }
}

/**
 * Brings the VM back, whatever happened. When it cannot be, the snapshots
 * go and VmNotResumedError is thrown (the journal keeps the rest for recover).
 */
async function endHold(input: WindowInput, t: HoldTarget, held: Held): Promise<void> {
  try {
    await release(held.action, t);
  } catch (e) {
    const errors = await removeSnapshots(input.lvm, input.live, t.retryDelayMs);
    if (errors.length === 0) throw e;
    const err = e as VmNotResumedError;
    throw new VmNotResumedError(err.domain, `${err.message}; also failed to remove snapshots: ${errors.map((x) => x.message).join('; ')}`, {
      cause: err.cause,
    });
  }
}

/** After the window: every snapshot looked up (thin ones activated) and checked. */
async function checkSnapshots(input: WindowInput): Promise<Map<string, LogicalVolume>> {
  const made = new Map<string, LogicalVolume>();
  for (const d of input.disks) made.set(d.target, await input.lvm.checkSnapshot({ vg: d.vg, lv: d.snapshotName }));
  return made;
}

/**
 * Holds the VM still as the mode says, snapshots every disk, brings the VM
 * back to the state it had. On failure the VM is brought back first, then
 * the snapshots made are removed, then the error is thrown.
 */
export async function runWindow(input: WindowInput): Promise<WindowResult> {
  const started = performance.now();
  const t = holdTarget(input);
  const held = await startHold(input, t);
  let failure = await snapshotWhileHeld(input, held);
  await endHold(input, t, held);
  const backAt = performance.now();
  try {
    await input.journal.record({ step: 'resumed' });
  } catch (e) {
    failure ??= e;
  }
  let snapshots = new Map<string, LogicalVolume>();
  if (failure === null) {
    try {
      snapshots = await checkSnapshots(input);
    } catch (e) {
      failure = e;
    }
  }
  if (failure !== null) {
    await removeSnapshots(input.lvm, input.live, t.retryDelayMs);
    throw failure;
  }
  return {
    mode: held.mode,
    action: held.action,
    downtimeMs: held.mode === 'quiesce' ? 0 : held.stoppedAt !== null ? Math.round(backAt - held.stoppedAt) : null,
    windowMs: Math.round(performance.now() - started),
    snapshots,
    memorySaved: held.action === 'save',
  };
}
